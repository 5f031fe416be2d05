// Pooling: max pool on oneDNN (forward_training keeps oneDNN's arg-max workspace in Saved), adaptive average pool
// in plain C++ with PyTorch's windows [floor(i*H/oh), ceil((i+1)*H/oh)).
//   maxpool  x (N,C,H,W) -> y (N,C,P,Q), P = floor((H + 2*pad - k)/stride) + 1 (floor mode: odd sizes drop the tail)
//   adaptive x (N,C,H,W) -> y (N,C,oh,ow), always Contiguous
// uint8 activations (int8 inference, native/cpu/int8.cc): the max pool's forward without a backward.
// bf16 activations: on the native bf16 path (CPUs with bf16 instructions) a max pool whose windows do not overlap,
// in nchw, nhwc or nchw16c, runs oneDNN's bf16 kernels: its forward picks one of the inputs and its backward places each
// dy at one arg-max, so both are exact, as the widened f32 route is, without its two conversion passes over the map
// (vgg16 b8 224² bf16 on an AMD Zen 5: the pools' share of a ~1.2 s step 51 -> 35 ms; fp32's ~24 ms). Otherwise,
// and for the adaptive average pool, the pool computes in float on a widened copy and rounds the result
// (overlapping windows sum gradients, which the f32 route rounds once). The max is exact; the mean is rounded once.
#include <immintrin.h>

#include <algorithm>

#include "backend.h"
#include "kernel_log.h"

namespace vgg::cpu {

using dnnl::memory;

namespace {

struct PoolGeom {
  int64_t N, C, H, W, P, Q;
  memory::dims strides, kernel, pad_l, pad_r;
};

PoolGeom pool_geometry(const Shape& x, const Pool2dParams& p, const char* op) {
  VGG_CHECK(p.kernel >= 1 && p.stride >= 1 && p.pad >= 0, "%s: bad window (kernel %d, stride %d, pad %d)", op,
            p.kernel, p.stride, p.pad);
  VGG_CHECK(2 * p.pad <= p.kernel, "%s: padding %d must be at most half the kernel %d", op, p.pad, p.kernel);
  check_nonzero_dims(x, 1, strprintf("%s: input", op).c_str());
  PoolGeom g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.P = conv_out_size(g.H, p.kernel, p.stride, p.pad, op);
  g.Q = conv_out_size(g.W, p.kernel, p.stride, p.pad, op);
  g.strides = {p.stride, p.stride};
  g.kernel = {p.kernel, p.kernel};
  g.pad_l = {p.pad, p.pad};
  g.pad_r = {(g.P - 1) * p.stride + p.kernel - g.H - p.pad, (g.Q - 1) * p.stride + p.kernel - g.W - p.pad};
  return g;
}

dnnl::pooling_forward::primitive_desc pool_fwd_pd(const PoolGeom& g, Layout layout, DType dt, bool training) {
  auto src = md_plain({g.N, g.C, g.H, g.W}, dt, layout);
  auto dst = md_plain({g.N, g.C, g.P, g.Q}, dt, layout);
  dnnl::pooling_forward::desc d(training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference,
                                dnnl::algorithm::pooling_max, src, dst, g.strides, g.kernel, g.pad_l, g.pad_r);
  return dnnl::pooling_forward::primitive_desc(d, engine());
}

// Whether a bf16 max pool runs widened to f32 (see the top of this file). In 8-channel blocks oneDNN 2.6 has only
// its reference bf16 pooling (`ref:any`), so only nchw, nhwc and nchw16c run natively.
bool maxpool_widens(DType dt, Layout layout, const Pool2dParams& p) {
  const bool jitted = layout == Layout::Contiguous || layout == Layout::ChannelsLast || layout == Layout::Blocked16;
  return dt == DType::BF16 && (bf16_path(dt) != Bf16Path::Native || p.stride < p.kernel || !jitted);
}

}  // namespace

Tensor CpuBackend::maxpool2d_forward(const Tensor& x, const Pool2dParams& p, Saved* saved) {
  const char* op = "maxpool2d_forward";
  check_4d_image(x, "maxpool2d_forward: input");
  if (x.dtype == DType::U8) {
    // int8 inference's activations (native/cpu/int8.cc): oneDNN's u8 max pool, exact (a max keeps the scale).
    VGG_CHECK_TYPE(saved == nullptr, "maxpool2d_forward: a uint8 input (int8 inference) has no backward");
  } else {
    check_float_activation(x, "maxpool2d_forward: input");
  }
  // Forward and backward widen alike (maxpool_widens), so a backward reads the workspace of its own kind.
  if (maxpool_widens(x.dtype, x.layout, p)) return cast(maxpool2d_forward(cast(x, DType::F32), p, saved), DType::BF16);
  PoolGeom g = pool_geometry(x.shape, p, op);
  bool training = saved != nullptr;
  if (g.N == 0) {  // nothing for oneDNN to do; an empty workspace stands in for the backward
    if (training) *saved = {scratch(0)};
    return Tensor::empty({0, g.C, g.P, g.Q}, x.dtype, Device::CPU, x.layout);
  }
  return guard(op, [&] {
    struct Entry {
      dnnl::pooling_forward::primitive_desc pd;
      dnnl::pooling_forward prim;
    };
    auto key = cache_key(op, x.shape, int(x.layout), int(x.dtype), p.kernel, p.stride, p.pad, training);
    auto& e = cached<Entry>(key, [&] {
      auto pd = pool_fwd_pd(g, x.layout, x.dtype, training);
      return new Entry{pd, dnnl::pooling_forward(pd)};
    });
    Tensor y = Tensor::empty({g.N, g.C, g.P, g.Q}, x.dtype, Device::CPU, x.layout);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, mem_of(x)}, {DNNL_ARG_DST, mem_of(y)}};
    Tensor ws;
    if (training) {
      ws = scratch(e.pd.workspace_desc().get_size());
      args.emplace(DNNL_ARG_WORKSPACE, memory(e.pd.workspace_desc(), engine(), ws.raw()));
    }
    {
      KernelTimer t(op, e.pd.impl_info_str());
      e.prim.execute(stream(), args);
      stream().wait();
    }
    if (training) {
      saved->clear();
      saved->push_back(ws);
    }
    return y;
  });
}

Tensor CpuBackend::maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, const Pool2dParams& p,
                                      const Saved& saved) {
  const char* op = "maxpool2d_backward";
  check_4d_image(dy, "maxpool2d_backward: dy");
  check_float_activation(dy, "maxpool2d_backward: dy");
  // x and y give only shapes and the layout here; the arg-max is in the workspace.
  if (maxpool_widens(dy.dtype, dy.layout, p)) return cast(maxpool2d_backward(cast(dy, DType::F32), x, y, p, saved), DType::BF16);
  check_4d_image(x, "maxpool2d_backward: input");
  PoolGeom g = pool_geometry(x.shape, p, op);
  check_shape(dy, {g.N, g.C, g.P, g.Q}, "maxpool2d_backward: dy");
  check_same_layout(dy, x, "maxpool2d_backward: dy and input");
  VGG_CHECK(saved.size() == 1 && saved[0].defined(),
            "maxpool2d_backward: saved must hold the workspace of a training-mode forward (got %zu tensors)",
            saved.size());
  if (g.N == 0) return Tensor::empty(x.shape, dy.dtype, Device::CPU, x.layout);
  return guard(op, [&] {
    struct Entry {
      dnnl::pooling_forward::primitive_desc hint;
      dnnl::pooling_backward::primitive_desc pd;
      dnnl::pooling_backward prim;
    };
    auto key = cache_key(op, x.shape, int(x.layout), int(dy.dtype), p.kernel, p.stride, p.pad);
    auto& e = cached<Entry>(key, [&] {
      auto hint = pool_fwd_pd(g, x.layout, dy.dtype, true);
      dnnl::pooling_backward::desc d(dnnl::algorithm::pooling_max, md_plain(x.shape, dy.dtype, x.layout),
                                     md_plain({g.N, g.C, g.P, g.Q}, dy.dtype, x.layout), g.strides, g.kernel,
                                     g.pad_l, g.pad_r);
      dnnl::pooling_backward::primitive_desc pd(d, engine(), hint);
      return new Entry{hint, pd, dnnl::pooling_backward(pd)};
    });
    VGG_CHECK(saved[0].nbytes() == e.pd.workspace_desc().get_size(),
              "maxpool2d_backward: saved workspace has %zu bytes, expected %zu", saved[0].nbytes(),
              e.pd.workspace_desc().get_size());
    Tensor dx = Tensor::empty(x.shape, dy.dtype, Device::CPU, x.layout);
    KernelTimer t(op, e.pd.impl_info_str());
    e.prim.execute(stream(), {{DNNL_ARG_DIFF_DST, mem_of(dy)},
                              {DNNL_ARG_DIFF_SRC, mem_of(dx)},
                              {DNNL_ARG_WORKSPACE, memory(e.pd.workspace_desc(), engine(), saved[0].raw())}});
    stream().wait();
    return dx;
  });
}

Tensor CpuBackend::adaptive_avgpool2d_forward(const Tensor& x, int oh, int ow) {
  check_4d_image(x, "adaptive_avgpool2d_forward: input");
  check_float_activation(x, "adaptive_avgpool2d_forward: input");
  if (x.dtype == DType::BF16) return cast(adaptive_avgpool2d_forward(cast(x, DType::F32), oh, ow), DType::BF16);
  VGG_CHECK_RANGE(oh >= 1 && ow >= 1, "adaptive_avgpool2d_forward: output size must be >= 1, got (%d,%d)", oh, ow);
  check_nonzero_dims(x.shape, 1, "adaptive_avgpool2d_forward: input");
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = Tensor::empty({N, C, oh, ow}, x.dtype, Device::CPU);
  const Strides4 s = strides4(x.shape, x.layout);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const AdaptiveWindows win(H, W, oh, ow);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      adaptive_pool_plane(xp + n * s.n + s.coff(c), s.h, s.w, yp + (n * C + c) * oh * ow, win);
    }
  return y;
}

Tensor CpuBackend::adaptive_avgpool2d_backward(const Tensor& dy, const Shape& x_shape, Layout x_layout) {
  check_4d_image(dy, "adaptive_avgpool2d_backward: dy");
  check_float_activation(dy, "adaptive_avgpool2d_backward: dy");
  // Overlapping windows add into dx: in f32, rounded once.
  if (dy.dtype == DType::BF16)
    return cast(adaptive_avgpool2d_backward(cast(dy, DType::F32), x_shape, x_layout), DType::BF16);
  VGG_CHECK(x_shape.size() == 4, "adaptive_avgpool2d_backward: input shape must be 4-D, got %s",
            shape_str(x_shape).c_str());
  VGG_CHECK(dy.dim(0) == x_shape[0] && dy.dim(1) == x_shape[1],
            "adaptive_avgpool2d_backward: dy %s does not match input shape %s", shape_str(dy.shape).c_str(),
            shape_str(x_shape).c_str());
  check_nonzero_dims(x_shape, 1, "adaptive_avgpool2d_backward: input shape");
  check_nonzero_dims(dy.shape, 1, "adaptive_avgpool2d_backward: dy");
  const int64_t N = x_shape[0], C = x_shape[1], H = x_shape[2], W = x_shape[3];
  const int64_t oh = dy.dim(2), ow = dy.dim(3);
  Tensor dx = Tensor::zeros(x_shape, dy.dtype, Device::CPU, x_layout);
  const Strides4 s = strides4(x_shape, x_layout);
  const Strides4 sd = strides4(dy.shape, dy.layout);
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  const AdaptiveWindows win(H, W, oh, ow);
  // Each (n,c) plane is independent; windows may overlap (H < oh), so accumulate within one thread.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      float* dxc = dxp + n * s.n + s.coff(c);
      const float* dyc = dyp + n * sd.n + sd.coff(c);
      for (int64_t i = 0; i < oh; ++i) {
        const int64_t h0 = win.h0[size_t(i)], h1 = win.h1[size_t(i)];
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t w0 = win.w0[size_t(j)], w1 = win.w1[size_t(j)];
          const float g = dyc[i * sd.h + j * sd.w] / float((h1 - h0) * (w1 - w0));
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) dxc[h * s.h + w * s.w] += g;
        }
      }
    }
  return dx;
}

namespace {
// out[p, m] = sum_q w[p, q] * pt[m, q] over planes p: each plane's Q pooled inputs to its M map positions.
// Where AVX-512 is missing: the plain loop for one map position, oneDNN's sgemm otherwise.
VGG_VECTOR_CLONES void fold_planes_one(const float* w, float* out, int64_t planes, int64_t Q, const float* pt) {
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = w + p * Q;
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t q = 0; q < Q; ++q) acc += in[q] * pt[q];
    out[p] = acc;
  }
}

// Two shuffles of (a, b) added: 128-bit blocks (f32x4) or lanes within them (ps). The masked forms with a full
// mask, because GCC 12 warns of the plain ones' undefined pass-through operand.
template <int Lo, int Hi>
__attribute__((target("avx512f"))) inline __m512 add_blocks(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_mask_shuffle_f32x4(a, 0xffff, a, b, Lo), _mm512_mask_shuffle_f32x4(a, 0xffff, a, b, Hi));
}
template <int Lo, int Hi>
__attribute__((target("avx512f"))) inline __m512 add_lanes(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_mask_shuffle_ps(a, 0xffff, a, b, Lo), _mm512_mask_shuffle_ps(a, 0xffff, a, b, Hi));
}

// Sixteen vectors to one vector of their sums across lanes (lane i: v[i]'s sum) by a transpose-and-add tree,
// ~3 instructions per sum against ~9 for a reduction each.
__attribute__((target("avx512f"))) inline __m512 sum_lanes16(const __m512* v) {
  // The tree leaves lane i holding the sum of its input 4·(i mod 4) + i/4, a transpose that is its own inverse:
  // feeding it v in that order puts each sum in its own lane.
  static constexpr int kOrder[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
  __m512 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i)
    s1[i] = add_blocks<_MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(v[kOrder[2 * i]], v[kOrder[2 * i + 1]]);
  for (int i = 0; i < 4; ++i)
    s2[i] = add_blocks<_MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(s1[2 * i], s1[2 * i + 1]);
  for (int i = 0; i < 2; ++i)
    s3[i] = add_lanes<_MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(s2[2 * i], s2[2 * i + 1]);
  return add_lanes<_MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(s3[0], s3[1]);
}

// AVX-512, Q ≤ 64: a plane's weights as up to four vectors (the last masked), each output a dot product of those
// with its column of pt (padded to 64 in pt64), sixteen outputs summed across lanes at a time. The (49, 4) matmul
// (2×2 maps) took 3.5× this loop's time (4096×25088: 62 against 17.5 ms, AMD Zen 4, 2 threads); at 1×1 the two
// loops are even.
__attribute__((target("avx512f"))) void fold_planes_avx512(const float* w, float* out, int64_t planes, int64_t Q,
                                                           int64_t M, const float* pt64) {
  const int nv = int((Q + 15) / 16);
  const __mmask16 last = __mmask16((1u << (Q - 16 * (nv - 1))) - 1);
  __m512 acc[16];
  int filled = 0;
  float* o = out;
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = w + p * Q;
    __m512 x[4];
    for (int v = 0; v < nv; ++v) x[v] = _mm512_maskz_loadu_ps(v == nv - 1 ? last : __mmask16(0xffff), in + 16 * v);
    for (int64_t m = 0; m < M; ++m) {
      const float* col = pt64 + m * 64;
      __m512 s = _mm512_mul_ps(x[0], _mm512_loadu_ps(col));
      for (int v = 1; v < nv; ++v) s = _mm512_fmadd_ps(x[v], _mm512_loadu_ps(col + 16 * v), s);
      acc[filled++] = s;
      if (filled == 16) {
        _mm512_storeu_ps(o, sum_lanes16(acc));
        o += 16;
        filled = 0;
      }
    }
  }
  if (filled) {
    for (int i = filled; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    _mm512_mask_storeu_ps(o, __mmask16((1u << filled) - 1), sum_lanes16(acc));
  }
}

// AVX-512, separable plans (FoldPlan::separable): a plane's oh rows loaded as 8-float vectors; map row y's sums
// t_y = sum over the pool rows i covering y of row_i / height(i); t_0..t_3 paired into two vectors, and each output
// (y, x) = sum over the pool columns j covering x of t_y[j] / width(j), the t_y[j] picked by permutes. About a third
// of fold_planes_avx512's instructions at 3×3 (its nine dot products and their sums across lanes).
__attribute__((target("avx512f,avx512vl,avx512dq,fma"))) void fold_planes_separable(const float* w, float* out, int64_t planes,
                                                                      const FoldPlan& f) {
  const int oh = f.oh, ow = f.ow, H = int(f.H);
  const __mmask8 row_mask = __mmask8((1u << ow) - 1);
  const __mmask16 out_mask = __mmask16((1u << f.M) - 1);
  __m512i idx[8];
  __m512 scale[8];
  for (int s = 0; s < f.col_terms; ++s) {
    idx[s] = _mm512_loadu_si512(f.col_idx.data() + s * 16);
    scale[s] = _mm512_loadu_ps(f.col_scale.data() + s * 16);
  }
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = w + p * f.Q;
    __m256 r[8];
    for (int i = 0; i < oh; ++i) r[i] = _mm256_maskz_loadu_ps(row_mask, in + i * ow);
    __m256 t[4];
    for (int y = 0; y < 4; ++y) {
      if (y >= H) {
        t[y] = _mm256_setzero_ps();
        continue;
      }
      const auto& terms = f.rows[y];
      __m256 a = _mm256_mul_ps(r[terms[0].i], _mm256_set1_ps(terms[0].scale));
      for (size_t k = 1; k < terms.size(); ++k) a = _mm256_fmadd_ps(r[terms[k].i], _mm256_set1_ps(terms[k].scale), a);
      t[y] = a;
    }
    const __m512 lo = _mm512_insertf32x8(_mm512_castps256_ps512(t[0]), t[1], 1);
    const __m512 hi = _mm512_insertf32x8(_mm512_castps256_ps512(t[2]), t[3], 1);
    __m512 o = _mm512_mul_ps(_mm512_maskz_permutex2var_ps(f.col_mask[0], lo, idx[0], hi), scale[0]);
    for (int s = 1; s < f.col_terms; ++s)
      o = _mm512_fmadd_ps(_mm512_maskz_permutex2var_ps(f.col_mask[size_t(s)], lo, idx[s], hi), scale[s], o);
    _mm512_mask_storeu_ps(out + p * f.M, out_mask, o);
  }
}
}  // namespace

void FoldPlan::run(const float* w, float* out, int64_t planes) const {
  if (separable) fold_planes_separable(w, out, planes, *this);
  else if (avx512) fold_planes_avx512(w, out, planes, Q, M, pt.data());
  else fold_planes_one(w, out, planes, Q, pt.data());
}

namespace {
FoldPlan make_fold_plan(int64_t C, int64_t H, int64_t W, int oh, int ow) {
  FoldPlan f;
  f.C = C, f.H = H, f.W = W, f.oh = oh, f.ow = ow;
  f.Q = int64_t(oh) * ow, f.M = H * W;
  f.avx512 = cpu_isa_info().avx512 && f.Q <= 64;
  const int64_t row = f.avx512 ? 64 : f.Q;  // pt's rows padded to four vectors for fold_planes_avx512
  // P transposed (M × Q): output q of the pool averages the window of map positions m, each weighing 1/area, as
  // adaptive_avgpool2d_forward computes it.
  f.pt.assign(size_t(f.M * row), 0.f);
  const AdaptiveWindows win(H, W, oh, ow);
  for (int64_t i = 0; i < oh; ++i)
    for (int64_t j = 0; j < ow; ++j) {
      const int64_t h0 = win.h0[size_t(i)], h1 = win.h1[size_t(i)], w0 = win.w0[size_t(j)], w1 = win.w1[size_t(j)];
      const float v = 1.f / float((h1 - h0) * (w1 - w0));
      for (int64_t y = h0; y < h1; ++y)
        for (int64_t x = w0; x < w1; ++x) f.pt[size_t((y * W + x) * row + i * ow + j)] = v;
    }
  // Separable from 3 map rows on: there it took half the time of the dot products (4096×25088 on the Zen 4, 2
  // threads: 3×3 31 -> 16 ms, 4×4 41 -> 16 ms); at 1×1 and 2×2 it was slower (13 -> 22, 17 -> 22 ms).
  f.separable = f.avx512 && H >= 3 && H <= 4 && H <= oh && W <= ow && oh <= 8 && ow <= 8 && f.M <= 16;
  if (f.separable) {
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t y = win.h0[size_t(i)]; y < win.h1[size_t(i)]; ++y)
        f.rows[y].push_back({int(i), 1.f / float(win.h1[size_t(i)] - win.h0[size_t(i)])});
    std::vector<std::vector<int64_t>> cols(static_cast<size_t>(W));  // the pool columns covering each map column, in order
    for (int64_t j = 0; j < ow; ++j)
      for (int64_t x = win.w0[size_t(j)]; x < win.w1[size_t(j)]; ++x) cols[size_t(x)].push_back(j);
    for (const auto& c : cols) f.col_terms = std::max(f.col_terms, int(c.size()));
    f.col_idx.assign(size_t(f.col_terms * 16), 0);
    f.col_mask.assign(size_t(f.col_terms), 0);
    f.col_scale.assign(size_t(f.col_terms * 16), 0.f);
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (size_t s = 0; s < cols[size_t(x)].size(); ++s) {
          const int64_t j = cols[size_t(x)][s], m = y * W + x;
          f.col_idx[s * 16 + size_t(m)] = int32_t(y * 8 + j);
          f.col_mask[s] |= uint16_t(1u << m);
          f.col_scale[s * 16 + size_t(m)] = 1.f / float(win.w1[size_t(j)] - win.w0[size_t(j)]);
        }
  }
  return f;
}

__attribute__((target("avx512f"))) void pool_planes_avx512(const float* in, float* out, int64_t planes,
                                                           const PoolPlan& p) {
  const int nv = int((p.Q + 15) / 16);
  const __mmask16 in_mask = __mmask16((1u << p.M) - 1);
  const __mmask16 last = __mmask16((1u << (p.Q - 16 * (nv - 1))) - 1);
  for (int64_t pl = 0; pl < planes; ++pl) {
    const __m512 x = _mm512_maskz_loadu_ps(in_mask, in + pl * p.M);
    float* o = out + pl * p.Q;
    for (int v = 0; v < nv; ++v) {
      __m512 acc = _mm512_setzero_ps();
      for (int k = 0; k < p.terms[v]; ++k) {
        const __m512i idx = _mm512_loadu_si512(p.idx.data() + (v * 4 + k) * 16);
        acc = _mm512_add_ps(acc, _mm512_maskz_permutexvar_ps(p.mask[size_t(v * 4 + k)], idx, x));
      }
      const __m512 y = _mm512_mul_ps(acc, _mm512_loadu_ps(p.scale.data() + v * 16));
      if (v == nv - 1) _mm512_mask_storeu_ps(o + 16 * v, last, y);
      else _mm512_storeu_ps(o + 16 * v, y);
    }
  }
}

// out = the fold of all `planes` planes of w.
void fold_all(const FoldPlan& f, const float* w, float* out, int64_t planes) {
  if (f.by_planes()) {
    parallel_chunks(planes, [&](int64_t lo, int64_t hi) { f.run(w + lo * f.Q, out + lo * f.M, hi - lo); });
  } else {
    KernelTimer t("adaptive_pool_fold", "sgemm");
    dnnl::sgemm('N', 'T', planes, f.M, f.Q, 1.f, w, f.Q, f.pt.data(), f.Q, 0.f, out, f.M);
  }
}
}  // namespace

PoolPlan make_pool_plan(int64_t H, int64_t W, int oh, int ow) {
  PoolPlan p;
  p.H = H, p.W = W, p.M = H * W, p.Q = int64_t(oh) * ow;
  p.win = AdaptiveWindows(H, W, oh, ow);
  p.avx512 = cpu_isa_info().avx512 && p.M <= 16 && H <= oh && W <= ow && p.Q <= 64;
  if (!p.avx512) return p;
  const int64_t nv = (p.Q + 15) / 16;
  p.idx.assign(size_t(nv * 4 * 16), 0);
  p.mask.assign(size_t(nv * 4), 0);
  p.scale.assign(size_t(nv * 16), 0.f);
  for (int64_t q = 0; q < p.Q; ++q) {
    const int64_t v = q / 16, lane = q % 16, i = q / ow, j = q % ow;
    const int64_t h0 = p.win.h0[size_t(i)], h1 = p.win.h1[size_t(i)], w0 = p.win.w0[size_t(j)], w1 = p.win.w1[size_t(j)];
    int k = 0;  // the window's inputs in adaptive_pool_plane's order
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w, ++k) {
        p.idx[size_t((v * 4 + k) * 16 + lane)] = int32_t(h * W + w);
        p.mask[size_t(v * 4 + k)] |= uint16_t(1u << lane);
      }
    p.terms[v] = std::max(p.terms[v], k);
    p.scale[size_t(v * 16 + lane)] = 1.f / float(k);  // k in {1, 2, 4}: x * (1/k) == x / k exactly
  }
  return p;
}

void PoolPlan::run(const float* in, float* out, int64_t planes) const {
  if (avx512) return pool_planes_avx512(in, out, planes, *this);
  for (int64_t p = 0; p < planes; ++p) adaptive_pool_plane(in + p * M, W, 1, out + p * Q, win);
}

}  // namespace vgg::cpu

namespace vgg {

using namespace cpu;

Tensor cpu_adaptive_pool_fold(const Tensor& w, int64_t C, int64_t H, int64_t W, int oh, int ow) {
  check_cpu(w, "adaptive_pool_fold: weight");
  check_dtype(w, DType::F32, "adaptive_pool_fold: weight");
  check_ndim(w, 2, "adaptive_pool_fold: weight");
  VGG_CHECK_RANGE(C >= 1 && H >= 1 && W >= 1 && oh >= 1 && ow >= 1,
                  "adaptive_pool_fold: channels, map and pool sizes must be >= 1, got %lld, %lldx%lld, %dx%d",
                  (long long)C, (long long)H, (long long)W, oh, ow);
  VGG_CHECK(w.dim(1) == C * int64_t(oh) * ow, "adaptive_pool_fold: weight has %lld inputs, expected %lld·%d·%d",
            (long long)w.dim(1), (long long)C, oh, ow);
  // The fold kept on the weight (common.h, FoldedWeight) while the weight and the fold are unchanged; SGD rewrites it.
  if (auto f = cached_fold(w, C, H, W, oh, ow)) return f->t;
  auto f = std::make_shared<FoldedWeight>();
  f->plan = make_fold_plan(C, H, W, oh, ow);
  f->t = Tensor::empty({w.dim(0), C * f->plan.M}, DType::F32, Device::CPU);
  fold_all(f->plan, w.data<float>(), f->t.data<float>(), w.dim(0) * C);
  f->version = w.version();
  f->t_version = f->t.version();
  store_fold(w, f);
  return f->t;
}

}  // namespace vgg

namespace vgg {

Tensor cpu_deferred_fold(const Tensor& fold_w, const Tensor& fold_b, const Tensor& zw, double p0, double p1,
                         const PooledGrad& g, DType activation) {
  const char* op = "deferred_fold";
  VGG_CHECK(g.on(), "%s: no pool geometry", op);
  VGG_CHECK_TYPE(activation == DType::F32 || activation == DType::BF16,
                 "%s: activations must be float32 or bfloat16, got %s", op, dtype_name(activation));
  for (const Tensor* t : {&fold_w, &fold_b, &zw}) {
    if (t == &fold_b && !fold_b.defined()) continue;
    check_cpu(*t, op);
    check_dtype(*t, DType::F32, op);
    check_ndim(*t, 2, op);
  }
  const int64_t rows = zw.dim(0), M = g.H * g.W;
  VGG_CHECK(zw.dim(1) == g.C * M, "%s: z has %lld columns, expected %lld·%lld·%lld", op, (long long)zw.dim(1),
            (long long)g.C, (long long)g.H, (long long)g.W);
  check_shape(fold_w, zw.shape, "deferred_fold: the anchor's fold");
  if (fold_b.defined()) check_shape(fold_b, zw.shape, "deferred_fold: the anchor momentum's fold");
  // fold(pool(z)) is linear in each plane of z: z·K with K (M × M) = fold(pool(unit planes)), worked out once
  // here; then per block of planes oneDNN's sgemm and the anchors' part added (pooling and folding every plane in
  // cache took 40 ms for VGG16's 4096×512 planes at 2×2 on the Zen 4, this 6.5 ms).
  const FoldPlan f = make_fold_plan(g.C, g.H, g.W, g.oh, g.ow);
  const PoolPlan pool = make_pool_plan(g.H, g.W, g.oh, g.ow);
  std::vector<float> unit(size_t(M * M), 0.f), pooled(size_t(M * pool.Q)), K(size_t(M * M));
  for (int64_t k = 0; k < M; ++k) unit[size_t(k * M + k)] = 1.f;
  pool.run(unit.data(), pooled.data(), M);
  fold_all(f, pooled.data(), K.data(), M);
  // bf16 activations: each block converted as bf16_weights converts (same bits) while it is in cache.
  const Bf16Path path = bf16_path(activation);
  Tensor out = Tensor::empty(zw.shape, path == Bf16Path::Native ? DType::BF16 : DType::F32, Device::CPU);
  const float* z = zw.data<float>();
  const float* fw = fold_w.data<float>();
  const float* fb = fold_b.defined() ? fold_b.data<float>() : nullptr;
  const int64_t planes = rows * g.C;
  constexpr int64_t kBlock = 4096;  // planes: at most 9 × 16 KB of z in cache
  parallel_chunks(planes, [&](int64_t p_lo, int64_t p_hi) {
    std::vector<float> tmp(path == Bf16Path::None ? 0 : size_t(kBlock * M));
    for (int64_t lo = p_lo; lo < p_hi; lo += kBlock) {
      const int64_t n = std::min(p_hi, lo + kBlock) - lo, e0 = lo * M;
      float* o = path == Bf16Path::None ? out.data<float>() + e0 : tmp.data();
      dnnl::sgemm('N', 'N', n, M, M, 1.f, z + e0, M, K.data(), M, 0.f, o, M);
      if (fb) {
        for (int64_t i = 0; i < n * M; ++i) o[i] = float(p0 * fw[e0 + i] + p1 * fb[e0 + i] + double(o[i]));
      } else {
        for (int64_t i = 0; i < n * M; ++i) o[i] = float(p0 * fw[e0 + i] + double(o[i]));
      }
      if (path == Bf16Path::Native) f32_to_bf16_array(o, out.data<uint16_t>() + e0, n * M);
      if (path == Bf16Path::Emulated) round_to_bf16_array(o, out.data<float>() + e0, n * M);
    }
  });
  return out;
}

}  // namespace vgg
