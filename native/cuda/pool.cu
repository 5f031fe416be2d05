// Max pooling (with the arg-max kept for backward) and adaptive average pooling, NCHW or NHWC.
// Backward kernels gather (one thread per input element), so they are deterministic and need no atomics.
#include <type_traits>

#include "common.cuh"

namespace vgg::cuk {

// Logical (n, c, h, w) of physical element i of an (N,C,H,W) tensor in layout cl.
__device__ __forceinline__ void unravel(int64_t i, int64_t C, int64_t H, int64_t W, bool cl, int64_t& n, int64_t& c,
                                        int64_t& h, int64_t& w) {
  if (cl) {
    c = i % C; i /= C; w = i % W; i /= W; h = i % H; n = i / H;
  } else {
    w = i % W; i /= W; h = i % H; i /= H; c = i % C; n = i / C;
  }
}
__device__ __forceinline__ int64_t ravel(int64_t n, int64_t c, int64_t h, int64_t w, int64_t C, int64_t H, int64_t W,
                                         bool cl) {
  return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

// ---------------------------------------------------------------- max pool
template <class T>
__global__ void maxpool_k(T* y, uint8_t* idx, const T* x, int64_t C, int64_t H, int64_t W, int64_t P, int64_t Q,
                          int k, int s, int pad, bool cl, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, p, q;
    unravel(i, C, P, Q, cl, n, c, p, q);
    const int64_t h0 = p * s - pad, w0 = q * s - pad;
    // PyTorch's rule: start at -inf with the first valid position; take v when v > best or v is NaN.
    float best = -INFINITY;
    int bi = -1;
    for (int kh = 0; kh < k; ++kh) {
      const int64_t h = h0 + kh;
      if (h < 0 || h >= H) continue;
      for (int kw = 0; kw < k; ++kw) {
        const int64_t w = w0 + kw;
        if (w < 0 || w >= W) continue;
        const float v = ld(x, ravel(n, c, h, w, C, H, W, cl));
        if (bi < 0) bi = kh * k + kw;
        if (v > best || isnan(v)) { best = v; bi = kh * k + kw; }
      }
    }
    if (bi < 0) bi = 0;
    st(y, i, best);
    idx[i] = uint8_t(bi);
  }
}

template <class T>
__global__ void maxpool_bwd_k(T* dx, const T* dy, const uint8_t* idx, int64_t C, int64_t H, int64_t W, int64_t P,
                              int64_t Q, int k, int s, int pad, bool cl, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    unravel(i, C, H, W, cl, n, c, h, w);
    // Windows p with p*s - pad <= h <= p*s - pad + k - 1.
    const int64_t hp = h + pad, wp = w + pad;
    int64_t p_lo = hp - k + 1 <= 0 ? 0 : (hp - k + 1 + s - 1) / s, p_hi = hp / s;
    int64_t q_lo = wp - k + 1 <= 0 ? 0 : (wp - k + 1 + s - 1) / s, q_hi = wp / s;
    if (p_hi > P - 1) p_hi = P - 1;
    if (q_hi > Q - 1) q_hi = Q - 1;
    float g = 0.f;
    for (int64_t p = p_lo; p <= p_hi; ++p)
      for (int64_t q = q_lo; q <= q_hi; ++q) {
        const int64_t o = ravel(n, c, p, q, C, P, Q, cl);
        const int at = int(idx[o]);
        if (p * s - pad + at / k == h && q * s - pad + at % k == w) g += ld(dy, o);
      }
    st(dx, i, g);
  }
}

void maxpool_forward(void* y, uint8_t* idx, const void* x, DType dt, int64_t N, int64_t C, int64_t H, int64_t W,
                     int64_t P, int64_t Q, int k, int stride, int pad, bool cl) {
  const int64_t total = N * C * P * Q;
  if (total <= 0) return;
  if (k * k > 256) throw Error(strprintf("maxpool2d_forward: kernel %d too large for the CUDA backend", k));
  dispatch_float(dt, "maxpool2d_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    maxpool_k<T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)y, idx, (const T*)x, C, H, W, P, Q, k, stride, pad, cl, total);
  });
  check_launch("maxpool2d_forward");
}

void maxpool_backward(void* dx, const void* dy, const uint8_t* idx, DType dt, int64_t N, int64_t C, int64_t H,
                      int64_t W, int64_t P, int64_t Q, int k, int stride, int pad, bool cl) {
  const int64_t total = N * C * H * W;
  if (total <= 0) return;
  dispatch_float(dt, "maxpool2d_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    maxpool_bwd_k<T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, idx, C, H, W, P, Q, k, stride, pad, cl,
                                                     total);
  });
  check_launch("maxpool2d_backward");
}

// ---------------------------------------------------------------- adaptive average pool
// PyTorch's windows: rows [floor(i*H/OH), ceil((i+1)*H/OH)).
__device__ __forceinline__ int64_t win_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
__device__ __forceinline__ int64_t win_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

template <class T>
__global__ void avgpool_k(T* y, const T* x, int64_t C, int64_t H, int64_t W, int OH, int OW, bool cl, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, oh, ow;
    unravel(i, C, OH, OW, false, n, c, oh, ow);  // y is NCHW
    const int64_t h0 = win_start(oh, H, OH), h1 = win_end(oh, H, OH);
    const int64_t w0 = win_start(ow, W, OW), w1 = win_end(ow, W, OW);
    float s = 0.f;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) s += ld(x, ravel(n, c, h, w, C, H, W, cl));
    st(y, i, s / float((h1 - h0) * (w1 - w0)));
  }
}

template <class T>
__global__ void avgpool_bwd_k(T* dx, const T* dy, int64_t C, int64_t H, int64_t W, int OH, int OW, bool cl,
                              int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    unravel(i, C, H, W, cl, n, c, h, w);
    float g = 0.f;
    for (int oh = 0; oh < OH; ++oh) {
      const int64_t h0 = win_start(oh, H, OH), h1 = win_end(oh, H, OH);
      if (h < h0 || h >= h1) continue;
      for (int ow = 0; ow < OW; ++ow) {
        const int64_t w0 = win_start(ow, W, OW), w1 = win_end(ow, W, OW);
        if (w < w0 || w >= w1) continue;
        g += ld(dy, ((n * C + c) * OH + oh) * OW + ow) / float((h1 - h0) * (w1 - w0));
      }
    }
    st(dx, i, g);
  }
}

void adaptive_avgpool_forward(void* y, const void* x, DType dt, int64_t N, int64_t C, int64_t H, int64_t W, int OH,
                              int OW, bool cl) {
  const int64_t total = N * C * OH * OW;
  if (total <= 0) return;
  dispatch_float(dt, "adaptive_avgpool2d_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    avgpool_k<T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)y, (const T*)x, C, H, W, OH, OW, cl, total);
  });
  check_launch("adaptive_avgpool2d_forward");
}

void adaptive_avgpool_backward(void* dx, const void* dy, DType dt, int64_t N, int64_t C, int64_t H, int64_t W,
                               int OH, int OW, bool cl) {
  const int64_t total = N * C * H * W;
  if (total <= 0) return;
  dispatch_float(dt, "adaptive_avgpool2d_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    avgpool_bwd_k<T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, C, H, W, OH, OW, cl, total);
  });
  check_launch("adaptive_avgpool2d_backward");
}

}  // namespace vgg::cuk
