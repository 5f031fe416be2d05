// The per-element bodies of the max-pool kernels (pool.cu), shared with a host test (test/native/pool_math_test.cc)
// that checks them against plain loops without a GPU. Before including this header, declare in vgg::cuk
// `float ld(const T*, int64_t)` and `void st(T*, int64_t, float)` for the element types used (common.cuh does for
// the device).
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VGG_POOL_FN __device__ __forceinline__
#else
#define VGG_POOL_FN inline
#endif

namespace vgg::cuk {

// Index math runs in I: int32_t where every index fits (integer division is several times cheaper than in int64,
// and these kernels are division-bound), else int64_t. kMaxInt32Elements leaves room for a grid-stride step.
constexpr int64_t kMaxInt32Elements = int64_t(1) << 30;

// Logical (n, c, h, w) of physical element i of an (N,C,H,W) tensor in layout cl.
template <class I>
VGG_POOL_FN void unravel(I i, I C, I H, I W, bool cl, I& n, I& c, I& h, I& w) {
  if (cl) {
    c = i % C; i /= C; w = i % W; i /= W; h = i % H; n = i / H;
  } else {
    w = i % W; i /= W; h = i % H; i /= H; c = i % C; n = i / C;
  }
}
template <class I>
VGG_POOL_FN I ravel(I n, I c, I h, I w, I C, I H, I W, bool cl) {
  return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

// A max pool of x (N,C,H,W) into y (N,C,P,Q): kernel k, stride s, padding pad, layout cl (channels-last) for both.
struct PoolShape {
  int64_t C, H, W, P, Q;
  int k, s, pad;
  bool cl;
};

// Windows that tile the input exactly (stride == kernel, no padding, H == P*k, W == Q*k; every VGG pool on an even
// size): each input element is in exactly one window.
inline bool windows_tile(const PoolShape& ps) {
  return ps.s == ps.k && ps.pad == 0 && ps.H == ps.P * ps.k && ps.W == ps.Q * ps.k;
}

// y[o] and idx[o] (the arg-max's kh*k + kw) of output element o. PyTorch's rule: start at -inf with the first valid
// position; take v when v > best or v is NaN.
template <class I, class T>
VGG_POOL_FN void maxpool_forward_at(I o, T* y, uint8_t* idx, const T* x, const PoolShape& ps) {
  const I C = I(ps.C), H = I(ps.H), W = I(ps.W), P = I(ps.P), Q = I(ps.Q);
  const int k = ps.k;
  I n, c, p, q;
  unravel<I>(o, C, P, Q, ps.cl, n, c, p, q);
  const I h0 = p * I(ps.s) - I(ps.pad), w0 = q * I(ps.s) - I(ps.pad);
  float best = -INFINITY;
  int bi = -1;
  for (int kh = 0; kh < k; ++kh) {
    const I h = h0 + kh;
    if (h < 0 || h >= H) continue;
    for (int kw = 0; kw < k; ++kw) {
      const I w = w0 + kw;
      if (w < 0 || w >= W) continue;
      const float v = ld(x, ravel<I>(n, c, h, w, C, H, W, ps.cl));
      if (bi < 0) bi = kh * k + kw;
      if (v > best || v != v) { best = v; bi = kh * k + kw; }
    }
  }
  if (bi < 0) bi = 0;
  st(y, o, best);
  idx[o] = uint8_t(bi);
}

// dx[i] of input element i, any stride and padding: the sum of dy over the windows that hold i and whose arg-max is
// i (a gather: deterministic, no atomics).
template <class I, class T>
VGG_POOL_FN void maxpool_backward_gather_at(I i, T* dx, const T* dy, const uint8_t* idx, const PoolShape& ps) {
  const I C = I(ps.C), H = I(ps.H), W = I(ps.W), P = I(ps.P), Q = I(ps.Q), k = I(ps.k), s = I(ps.s), pad = I(ps.pad);
  I n, c, h, w;
  unravel<I>(i, C, H, W, ps.cl, n, c, h, w);
  // Windows p with p*s - pad <= h <= p*s - pad + k - 1.
  const I hp = h + pad, wp = w + pad;
  I p_lo = hp - k + 1 <= 0 ? 0 : (hp - k + 1 + s - 1) / s, p_hi = hp / s;
  I q_lo = wp - k + 1 <= 0 ? 0 : (wp - k + 1 + s - 1) / s, q_hi = wp / s;
  if (p_hi > P - 1) p_hi = P - 1;
  if (q_hi > Q - 1) q_hi = Q - 1;
  float g = 0.f;
  for (I p = p_lo; p <= p_hi; ++p)
    for (I q = q_lo; q <= q_hi; ++q) {
      const I o = ravel<I>(n, c, p, q, C, P, Q, ps.cl);
      const I at = I(idx[o]);
      if (p * s - pad + at / k == h && q * s - pad + at % k == w) g += ld(dy, o);
    }
  st(dx, i, g);
}

// windows_tile(ps) only: output element o writes its whole window of dx, dy[o] at the arg-max and 0 elsewhere, so
// every dx element is written once with no search per input element. The same values as the gather.
template <class I, class T>
VGG_POOL_FN void maxpool_backward_tile_at(I o, T* dx, const T* dy, const uint8_t* idx, const PoolShape& ps) {
  const I C = I(ps.C), H = I(ps.H), W = I(ps.W), P = I(ps.P), Q = I(ps.Q);
  const int k = ps.k;
  I n, c, p, q;
  unravel<I>(o, C, P, Q, ps.cl, n, c, p, q);
  const float g = ld(dy, o);
  const int at = int(idx[o]);
  for (int kh = 0; kh < k; ++kh)
    for (int kw = 0; kw < k; ++kw)
      st(dx, ravel<I>(n, c, p * I(k) + kh, q * I(k) + kw, C, H, W, ps.cl), kh * k + kw == at ? g : 0.f);
}

}  // namespace vgg::cuk
