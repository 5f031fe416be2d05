// conv2d on oneDNN: forward (bias, optional fused ReLU), backward data, backward weights + bias.
//   x (N,C,H,W), w (K,C,R,S), b (K) -> y (N,K,P,Q); P = floor((H + 2*pad_h - R)/stride_h) + 1, Q likewise.
// The primitives choose their own layouts (format_tag::any). Activations in the blocked layout they pick (nchw16c
// on AVX-512, nchw8c on AVX2: cpu_isa_info().blocked) go in and out without a reorder; y keeps x's layout unless
// p.cpu_blocked_output asks for the blocked one, so a network pays one reorder at its entry and none between layers.
// Weights are plain (K,C,R,S) and reordered per call (fwd and bwd-data want different blocked forms).
// Output maps of at most 4×4 do not use oneDNN's convolution but one GEMM over the whole batch (see use_small_map).
// bf16 activations (see Bf16Path in cpu_common.h): each entry point turns its operands into compute operands
// (bf16 + bf16 weights on the native path; widened f32 + bf16-rounded f32 weights when emulated), runs the code below
// in the compute dtype `cdt` = the operand's dtype, and returns the result in the activation's dtype. Weight and
// bias gradients are f32 on every path.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backend.h"
#include "kernel_log.h"
#include "winograd.h"

namespace vgg::cpu {

using dnnl::memory;
using tag = memory::format_tag;

// oneDNN wants the right padding that makes (in + pl + pr - k)/s + 1 == out exactly; in floor mode that can be
// less than the left padding (or negative, which oneDNN accepts: the last rows are simply not read).
ConvGeom conv_geometry(const Shape& x, const Shape& w, const Conv2dParams& p, const char* op) {
  VGG_CHECK_RANGE(p.stride_h >= 1 && p.stride_w >= 1, "%s: stride must be >= 1, got (%d,%d)", op, p.stride_h, p.stride_w);
  VGG_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "%s: padding must be >= 0, got (%d,%d)", op, p.pad_h, p.pad_w);
  check_nonzero_dims(x, 1, strprintf("%s: input", op).c_str());
  check_nonzero_dims(w, 0, strprintf("%s: weight", op).c_str());
  ConvGeom g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.K = w[0], g.R = w[2], g.S = w[3];
  VGG_CHECK(w[1] == g.C, "%s: input has %lld channels, weight expects %lld", op, (long long)g.C, (long long)w[1]);
  g.P = conv_out_size(g.H, g.R, p.stride_h, p.pad_h, op);
  g.Q = conv_out_size(g.W, g.S, p.stride_w, p.pad_w, op);
  g.strides = {p.stride_h, p.stride_w};
  g.pad_l = {p.pad_h, p.pad_w};
  g.pad_r = {(g.P - 1) * p.stride_h + g.R - g.H - p.pad_h, (g.Q - 1) * p.stride_w + g.S - g.W - p.pad_w};
  return g;
}

namespace {

memory::desc any_md(const memory::dims& d, DType dt) { return memory::desc(d, dnnl_dtype(dt), tag::any); }

// The layout an activation of C channels gets when `want` is asked for: a blocked layout needs C to be a multiple
// of its block (nchw16c falls back to nchw8c, nchw8c to nchw).
Layout act_layout(Layout want, int64_t C) {
  if (want == Layout::Blocked16 && C % 16 != 0) want = Layout::Blocked8;
  return want == Layout::Blocked8 && C % 8 != 0 ? Layout::Contiguous : want;
}

// oneDNN's Winograd F(4×4, 3×3) kernels (jit_wino_4x3: forward, backward-data and backward-weights, f32 on
// avx512_core and newer) do about a quarter of a direct 3×3 convolution's multiplies, at the price of transforms
// and 4-6x the rounding error (test/cpu_winograd.test.ts measures it against float64). They take 3×3 stride-1
// pad-1 convolutions with both channel counts multiples of 16. Measured against the direct kernels, every VGG layer
// shape of the CPU bench, each direction (scripts/bench_conv_wino.cc, 2 threads, Xeon avx512_core): 1.5-2.3x on
// 16²-224² maps, 1.15-1.6x on 8²-14² with 128-512 channels, but 0.4x on 6² (4×4 tiles mostly padding there), and
// with 16 input channels forward and backward-data lose (0.6-0.7x; 32: mixed). Hence: at least 64 input channels
// and maps of at least kWinoMinMap². A fixed rule of shape and ISA, never a timing, so runs stay reproducible;
// set_cpu_winograd (VGGNET_CPU_WINOGRAD=0) turns it off. AVX2 has ours (use_our_winograd); native bf16 and other
// shapes run the direct kernels.
constexpr int64_t kWinoMinMap = 8;
bool winograd_shape(const ConvGeom& g, DType cdt, int64_t channel_multiple) {
  return cdt == DType::F32 && g.R == 3 && g.S == 3 && g.strides == memory::dims{1, 1} &&
         g.pad_l == memory::dims{1, 1} && g.pad_r == memory::dims{1, 1} && g.C % channel_multiple == 0 &&
         g.K % channel_multiple == 0 && g.C >= 64 && g.P >= kWinoMinMap && g.Q >= kWinoMinMap;
}
bool use_winograd(const ConvGeom& g, DType cdt) {
  static const bool avx512 = cpu_isa_info().avx512;
  return avx512 && cpu_winograd() == CpuWinograd::Auto && winograd_shape(g, cdt, 16);
}

// Our own Winograd F(4×4, 3×3) (winograd.h) where oneDNN has none: on AVX2 CPUs (cpu_winograd() Auto), the same
// shapes as oneDNN's rule but channel counts multiples of 8, and activations in a blocked layout (every VGG layer
// after the first). Measured per layer against oneDNN's direct AVX2 kernels at every such layer shape of the CPU
// bench (2 threads, AMD EPYC avx2, each direction, interleaved): 1.3-2.9× on 16²-224² maps, 1.0-1.7× on 8²-14² maps
// (1.02-1.06× forward at 8² with 256-512 channels, where the weight transform is most of the work).
bool blocked_by_8(Layout l) { return l == Layout::Blocked8 || l == Layout::Blocked16; }
bool use_our_winograd(const ConvGeom& g, DType cdt, Layout in, Layout out) {
  static const bool avx2 = cpu_isa_info().isa.rfind("avx2", 0) == 0;
  const CpuWinograd mode = cpu_winograd();
  const bool on = winograd::cpu_supported() && (mode == CpuWinograd::Ours || (mode == CpuWinograd::Auto && avx2));
  return on && winograd_shape(g, cdt, 8) && blocked_by_8(in) && blocked_by_8(out);
}
winograd::Shape3x3 shape3x3(const ConvGeom& g) { return {g.N, g.C, g.H, g.W, g.K}; }

// cdt: the data type of src, weights and dst (f32, or bf16 on the native bf16 path; bias stays f32).
dnnl::convolution_forward::primitive_desc fwd_pd(const ConvGeom& g, bool bias, bool relu, DType cdt,
                                                 dnnl::algorithm alg) {
  auto src = any_md({g.N, g.C, g.H, g.W}, cdt);
  auto wei = any_md({g.K, g.C, g.R, g.S}, cdt);
  auto dst = any_md({g.N, g.K, g.P, g.Q}, cdt);
  auto prop = dnnl::prop_kind::forward_training;
  auto d = bias ? dnnl::convolution_forward::desc(prop, alg, src, wei,
                                                  memory::desc({g.K}, memory::data_type::f32, tag::a), dst,
                                                  g.strides, g.pad_l, g.pad_r)
                : dnnl::convolution_forward::desc(prop, alg, src, wei, dst, g.strides, g.pad_l, g.pad_r);
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return dnnl::convolution_forward::primitive_desc(d, attr, engine());
}

// Makes a direction's primitive descriptor with Winograd where use_winograd says so, else (or where oneDNN turns
// the Winograd descriptor down: its availability, like the rule, depends only on shape and ISA) with the direct
// algorithm. make(alg) builds the descriptor.
template <class F>
auto with_algorithm(const ConvGeom& g, DType cdt, F&& make) -> decltype(make(dnnl::algorithm::convolution_direct)) {
  if (use_winograd(g, cdt)) {
    try {
      return make(dnnl::algorithm::convolution_winograd);
    } catch (const dnnl::error&) {
    }
  }
  return make(dnnl::algorithm::convolution_direct);
}

// to_desc, timed into the kernel log as (op, "reorder") when it moves data.
memory to_desc_logged(const char* op, const memory& user, const memory::desc& want, std::vector<Tensor>& keep) {
  if (user.get_desc() == want) return user;
  KernelTimer t(op, "reorder");
  return to_desc(user, want, keep);
}

// Reorder with an optional sum post-op: to = from + (accumulate ? to : 0).
void reorder_into(const memory& from, const memory& to, bool accumulate) {
  if (!accumulate) return reorder(from, to);
  std::string key = "reorder_acc";
  const auto& a = from.get_desc().data;
  const auto& b = to.get_desc().data;
  key.append(reinterpret_cast<const char*>(&a), sizeof(a));
  key.append(reinterpret_cast<const char*>(&b), sizeof(b));
  auto& r = cached<dnnl::reorder>(key, [&] {
    dnnl::primitive_attr attr;
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
    return new dnnl::reorder(dnnl::reorder::primitive_desc(from, to, attr));
  });
  r.execute(stream(), const_cast<memory&>(from), const_cast<memory&>(to));
}

// ---- small output maps (P·Q <= 16: the last blocks of a network at 32² and 64²). oneDNN 2.6's direct AVX2 kernels
// run at 70-100 GFLOP/s there and its backward-weights falls back to one small GEMM per image (~30 GFLOP/s); as one
// GEMM over the whole batch on an im2col matrix (rows = N·P·Q, columns = C·R·S, PyTorch's weight order) all three
// directions run at 120-150 GFLOP/s on 2 AVX2 cores (8×8 maps measured no better, so they stay on oneDNN).
constexpr int64_t kSmallMap = 16;                  // P·Q at most this (4×4)
constexpr int64_t kSmallMapColBytes = 64ll << 20;  // and the im2col matrix no larger
bool use_small_map(const ConvGeom& g) {
  return g.P * g.Q <= kSmallMap && g.N * g.P * g.Q * g.C * g.R * g.S * 4 <= kSmallMapColBytes;
}

// Visits row = (n, p, q) of the im2col matrix in parallel: f(row, n, p, q).
template <class F>
void for_rows(const ConvGeom& g, F&& f) {
  const int64_t rows = g.N * g.P * g.Q, PQ = g.P * g.Q;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) f(row, row / PQ, (row % PQ) / g.Q, row % g.Q);
}

// A (rows, C·R·S) = im2col(x), zeros where the window reaches into the padding; T is x's storage type (the
// matrix keeps it: f32, or bf16 on the native path).
template <class T>
void im2col(const ConvGeom& g, const Conv2dParams& p, const Tensor& x, T* A) {
  const T* xp = x.data<T>();
  const Strides4 xs = strides4(x.shape, x.layout);
  const std::vector<int64_t> co = xs.channel_offsets(g.C);
  const int64_t CRS = g.C * g.R * g.S;
  for_rows(g, [&](int64_t row, int64_t n, int64_t pp, int64_t q) {
    T* a = A + row * CRS;
    const int64_t h0 = pp * p.stride_h - p.pad_h, w0 = q * p.stride_w - p.pad_w;
    for (int64_t c = 0; c < g.C; ++c) {
      const int64_t base = n * xs.n + co[size_t(c)];  // the window's element (r, s) is base + h·xs.h + w·xs.w
      for (int64_t r = 0; r < g.R; ++r) {
        const int64_t h = h0 + r;
        if (h < 0 || h >= g.H) {
          for (int64_t s = 0; s < g.S; ++s) *a++ = T(0);
          continue;
        }
        for (int64_t s = 0; s < g.S; ++s) {
          const int64_t w = w0 + s;
          *a++ = w >= 0 && w < g.W ? xp[base + h * xs.h + w * xs.w] : T(0);
        }
      }
    }
  });
}

// B (rows, K) = the activation t (N,K,P,Q) in any layout, one row per output position (T: t's storage type).
template <class T>
void gather_rows(const ConvGeom& g, const Tensor& t, T* B) {
  const T* tp = t.data<T>();
  const Strides4 ts = strides4(t.shape, t.layout);
  const std::vector<int64_t> co = ts.channel_offsets(g.K);
  for_rows(g, [&](int64_t row, int64_t n, int64_t pp, int64_t q) {
    T* b = B + row * g.K;
    const T* tq = tp + n * ts.n + pp * ts.h + q * ts.w;
    for (int64_t k = 0; k < g.K; ++k) b[k] = tq[co[size_t(k)]];
  });
}

// The inverse of gather_rows: t (N,K,P,Q) in its layout (T: its storage type, rounded to) from f32 B (rows, K).
template <class T>
void scatter_rows(const ConvGeom& g, const float* B, Tensor& t) {
  T* tp = t.data<T>();
  const Strides4 ts = strides4(t.shape, t.layout);
  const std::vector<int64_t> co = ts.channel_offsets(g.K);
  for_rows(g, [&](int64_t row, int64_t n, int64_t pp, int64_t q) {
    const float* b = B + row * g.K;
    T* tq = tp + n * ts.n + pp * ts.h + q * ts.w;
    for (int64_t k = 0; k < g.K; ++k) from_f32(tq[co[size_t(k)]], b[k]);
  });
}

// dx (N,C,H,W) in its layout = col2im(D): every window position adds its column back. One image per iteration, so
// the additions into an image never race. dx is f32 (a bf16 result is rounded from it afterwards, once).
void col2im(const ConvGeom& g, const Conv2dParams& p, const float* D, Tensor& dx) {
  float* xp = dx.data<float>();
  const Strides4 xs = strides4(dx.shape, dx.layout);
  const std::vector<int64_t> co = xs.channel_offsets(g.C);
  const int64_t CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
  std::memset(xp, 0, dx.nbytes());
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t pq = 0; pq < PQ; ++pq) {
      const int64_t h0 = (pq / g.Q) * p.stride_h - p.pad_h, w0 = (pq % g.Q) * p.stride_w - p.pad_w;
      const float* d = D + (n * PQ + pq) * CRS;
      for (int64_t c = 0; c < g.C; ++c) {
        float* xc = xp + n * xs.n + co[size_t(c)];
        for (int64_t r = 0; r < g.R; ++r) {
          const int64_t h = h0 + r;
          if (h < 0 || h >= g.H) {
            d += g.S;
            continue;
          }
          for (int64_t s = 0; s < g.S; ++s, ++d) {
            const int64_t w = w0 + s;
            if (w >= 0 && w < g.W) xc[h * xs.h + w * xs.w] += *d;
          }
        }
      }
    }
}

// dst (M, N) = a (M, K) · b (K, N) (+ bias row, relu, or += dst) on raw buffers, plain matrices given by their
// descs (matmul_entry's primitive); dst and bias are f32, a and b f32 or (native bf16 path) bf16.
void gemm(const char* op, const std::string& key, const memory::desc& a, const void* ap, const memory::desc& b, const void* bp,
          const memory::desc& c, void* cp, const float* bias, bool relu, bool accumulate) {
  const memory::desc bias_md({1, c.dims()[1]}, memory::data_type::f32, tag::ab);
  auto& e = matmul_entry(key, a, b, bias ? &bias_md : nullptr, c, relu, accumulate);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(a, engine(), const_cast<void*>(ap))},
                                       {DNNL_ARG_WEIGHTS, memory(b, engine(), const_cast<void*>(bp))},
                                       {DNNL_ARG_DST, memory(c, engine(), cp)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory(bias_md, engine(), const_cast<float*>(bias)));
  KernelTimer t(op, std::string("gemm:") + e.pd.impl_info_str());
  e.prim.execute(stream(), args);
  stream().wait();
}

memory::desc mat(int64_t rows, int64_t cols, tag t, DType dt = DType::F32) {
  return memory::desc({rows, cols}, dnnl_dtype(dt), t);
}

// y (rows, K) = col (rows, CRS) · w^T (CRS, K) [+ b, relu], then into y's layout. x, w and y share one dtype (cdt).
void small_map_forward(const ConvGeom& g, const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b,
                       bool relu, Tensor& y) {
  const DType cdt = x.dtype;
  const int64_t rows = g.N * g.P * g.Q, CRS = g.C * g.R * g.S;
  Tensor col = scratch(size_t(rows * CRS) * dtype_size(cdt)), out = scratch(size_t(rows * g.K) * 4);
  dispatch_float(cdt, [&](auto t) { im2col(g, p, x, static_cast<decltype(t)*>(col.raw())); });
  gemm("conv2d_forward", cache_key("conv2d_forward/im2col", rows, CRS, g.K, b.defined(), relu, int(cdt)), mat(rows, CRS, tag::ab, cdt),
       col.raw(), mat(CRS, g.K, tag::ba, cdt), w.raw(), mat(rows, g.K, tag::ab), out.raw(),
       b.defined() ? b.data<float>() : nullptr, relu, false);
  dispatch_float(cdt, [&](auto t) { scatter_rows<decltype(t)>(g, static_cast<const float*>(out.raw()), y); });
}

// dcol (rows, CRS) = dy (rows, K) · w (K, CRS), then col2im into dx. dy and w share one dtype (cdt); dx is f32
// (the window sums, rounded once by the caller when cdt is bf16).
void small_map_backward_data(const ConvGeom& g, const Conv2dParams& p, const Tensor& dy, const Tensor& w,
                             Tensor& dx) {
  const DType cdt = dy.dtype;
  const int64_t rows = g.N * g.P * g.Q, CRS = g.C * g.R * g.S;
  Tensor dyr = scratch(size_t(rows * g.K) * dtype_size(cdt)), dcol = scratch(size_t(rows * CRS) * 4);
  dispatch_float(cdt, [&](auto t) { gather_rows(g, dy, static_cast<decltype(t)*>(dyr.raw())); });
  gemm("conv2d_backward_data", cache_key("conv2d_backward_data/im2col", rows, g.K, CRS, int(cdt)), mat(rows, g.K, tag::ab, cdt), dyr.raw(),
       mat(g.K, CRS, tag::ab, cdt), w.raw(), mat(rows, CRS, tag::ab), dcol.raw(), nullptr, false, false);
  col2im(g, p, static_cast<const float*>(dcol.raw()), dx);
}

// dW (K, CRS) (+)= dy^T (K, rows) · col (rows, CRS), written straight into dw's plain f32 (K,C,R,S) bytes.
// x and dy share one dtype (cdt).
void small_map_backward_weights(const ConvGeom& g, const Conv2dParams& p, const Tensor& x, const Tensor& dy,
                                Tensor& dw, Tensor& db, bool accumulate) {
  const DType cdt = x.dtype;
  const int64_t rows = g.N * g.P * g.Q, CRS = g.C * g.R * g.S;
  Tensor col = scratch(size_t(rows * CRS) * dtype_size(cdt)), dyr = scratch(size_t(rows * g.K) * dtype_size(cdt));
  dispatch_float(cdt, [&](auto t) {
    using T = decltype(t);
    T* A = static_cast<T*>(col.raw());
    T* B = static_cast<T*>(dyr.raw());
    im2col(g, p, x, A);
    gather_rows(g, dy, B);
    gemm("conv2d_backward_weights", cache_key("conv2d_backward_weights/im2col", g.K, rows, CRS, accumulate, int(cdt)),
         mat(g.K, rows, tag::ba, cdt), B, mat(rows, CRS, tag::ab, cdt), A, mat(g.K, CRS, tag::ab), dw.raw(), nullptr,
         false, accumulate);
    if (db.defined()) {
      float* o = db.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t k = 0; k < g.K; ++k) {
        double sum = 0;
        for (int64_t row = 0; row < rows; ++row) sum += to_f32(B[row * g.K + k]);
        o[k] = accumulate ? float(o[k] + sum) : float(sum);
      }
    }
  });
}

// Where a primitive writes its output: the user's memory when the formats agree, else a scratch (kept in `keep`)
// to reorder into the user's afterwards (wrote_elsewhere).
memory out_mem(const memory::desc& want, const memory& user, std::vector<Tensor>& keep) {
  if (want == user.get_desc()) return user;
  keep.push_back(scratch(want.get_size()));
  return memory(want, engine(), keep.back().raw());
}
bool wrote_elsewhere(const memory& out, const memory& user) {
  return out.get_data_handle() != user.get_data_handle();
}

// The three directions in the compute dtype (x, w, dy and the result share one: f32, or bf16 on the native path).
Tensor forward(const ConvGeom& g, const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b,
               bool relu, Layout y_layout) {
  const char* op = "conv2d_forward";
  const DType cdt = x.dtype;
  if (use_small_map(g) && w.layout == Layout::Contiguous) {
    Tensor y = Tensor::empty({g.N, g.K, g.P, g.Q}, cdt, Device::CPU, y_layout);
    small_map_forward(g, p, x, w, b, relu, y);
    return y;
  }
  if (use_our_winograd(g, cdt, x.layout, y_layout) && w.layout == Layout::Contiguous) {
    Tensor y = Tensor::empty({g.N, g.K, g.P, g.Q}, cdt, Device::CPU, y_layout);
    winograd::forward(shape3x3(g), x, w.data<float>(), b.defined() ? b.data<float>() : nullptr, relu, y);
    return y;
  }
  struct Entry {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
  };
  auto key = cache_key(op, x.shape, int(x.layout), int(y_layout), w.shape, b.defined(), relu, p.stride_h,
                       p.stride_w, p.pad_h, p.pad_w, int(cdt), use_winograd(g, cdt));
  auto& e = cached<Entry>(key, [&] {
    auto pd = with_algorithm(g, cdt, [&](dnnl::algorithm alg) { return fwd_pd(g, b.defined(), relu, cdt, alg); });
    return new Entry{pd, dnnl::convolution_forward(pd)};
  });
  Tensor y = Tensor::empty({g.N, g.K, g.P, g.Q}, cdt, Device::CPU, y_layout);
  std::vector<Tensor> keep;
  memory src = to_desc_logged(op, mem_of(x), e.pd.src_desc(), keep);
  memory wei = to_desc_logged(op, mem_of(w), e.pd.weights_desc(), keep);
  memory y_user = mem_of(y);
  memory dst = out_mem(e.pd.dst_desc(), y_user, keep);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  if (b.defined()) args.emplace(DNNL_ARG_BIAS, mem_of(b));
  {
    KernelTimer t(op, e.pd.impl_info_str());
    e.prim.execute(stream(), args);
    stream().wait();
  }
  if (wrote_elsewhere(dst, y_user)) {
    KernelTimer t(op, "reorder");
    reorder(dst, y_user);
    stream().wait();
  }
  return y;
}

Tensor backward_data(const ConvGeom& g, const Conv2dParams& p, const Tensor& dy, const Tensor& w,
                     const Shape& x_shape) {
  const char* op = "conv2d_backward_data";
  const DType cdt = dy.dtype;
  if (use_small_map(g) && w.layout == Layout::Contiguous) {
    Tensor dx = Tensor::empty(x_shape, DType::F32, Device::CPU, act_layout(dy.layout, g.C));
    small_map_backward_data(g, p, dy, w, dx);
    return cdt == DType::F32 ? dx : cpu_backend().cast(dx, cdt);
  }
  if (use_our_winograd(g, cdt, dy.layout, act_layout(dy.layout, g.C)) && w.layout == Layout::Contiguous) {
    Tensor dx = Tensor::empty(x_shape, cdt, Device::CPU, act_layout(dy.layout, g.C));
    winograd::backward_data(shape3x3(g), dy, w.data<float>(), dx);
    return dx;
  }
  struct Entry {
    dnnl::convolution_backward_data::primitive_desc pd;
    dnnl::convolution_backward_data prim;
  };
  auto key = cache_key(op, x_shape, int(dy.layout), w.shape, p.stride_h, p.stride_w, p.pad_h, p.pad_w, int(cdt),
                       use_winograd(g, cdt));
  auto& e = cached<Entry>(key, [&] {
    auto pd = with_algorithm(g, cdt, [&](dnnl::algorithm alg) {
      auto hint = fwd_pd(g, false, false, cdt, alg);
      dnnl::convolution_backward_data::desc d(alg, any_md({g.N, g.C, g.H, g.W}, cdt),
                                              any_md({g.K, g.C, g.R, g.S}, cdt), any_md({g.N, g.K, g.P, g.Q}, cdt),
                                              g.strides, g.pad_l, g.pad_r);
      return dnnl::convolution_backward_data::primitive_desc(d, engine(), hint);
    });
    return new Entry{pd, dnnl::convolution_backward_data(pd)};
  });
  Tensor dx = Tensor::empty(x_shape, cdt, Device::CPU, act_layout(dy.layout, g.C));
  std::vector<Tensor> keep;
  memory ddst = to_desc_logged(op, mem_of(dy), e.pd.diff_dst_desc(), keep);
  memory wei = to_desc_logged(op, mem_of(w), e.pd.weights_desc(), keep);
  memory dx_user = mem_of(dx);
  memory dsrc = out_mem(e.pd.diff_src_desc(), dx_user, keep);
  {
    KernelTimer t(op, e.pd.impl_info_str());
    e.prim.execute(stream(), {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, dsrc}});
    stream().wait();
  }
  if (wrote_elsewhere(dsrc, dx_user)) {
    KernelTimer t(op, "reorder");
    reorder(dsrc, dx_user);
    stream().wait();
  }
  return dx;
}

// oneDNN 2.6's AVX2 backward-weights kernel on blocked maps of 28² to 56² with at least 128 input channels
// (vgg16's third and fourth blocks at 224²) ran at 66-86 GFLOP/s on 2 cores, its GEMM-based one (im2col + sgemm,
// which it picks for plain nchw) at 105-122 (isolated layers, scripts/bench_conv_bwdw.cc); in a vgg16 b8 224² step
// all backward-weights together went from ~2.9 to ~2.3 s (op profile, VGGNET_PROFILE=1). Those layers hand it nchw
// copies of x and dy (a reorder each, a few ms). Elsewhere (24²-48² in 64²/96² nets) whole steps measured no
// better. AVX2 only: AVX-512 has a faster direct kernel. A fixed rule, not a timing, so runs stay bit-reproducible.
// VGGNET_CPU_BWDW_GEMM=0 turns it off (to compare).
bool bwdw_via_gemm(const ConvGeom& g) {
  static const bool on = [] {
    const char* env = std::getenv("VGGNET_CPU_BWDW_GEMM");
    const std::string isa = cpu_isa_info().isa;
    return !(env && std::string(env) == "0") && (isa == "avx2" || isa == "avx2_vnni");
  }();
  return on && g.C >= 128 && g.H >= 28 && g.H <= 56 && g.W >= 28 && g.W <= 56;
}

void backward_weights(const ConvGeom& g, const Conv2dParams& p, const Tensor& x, const Tensor& dy, Tensor& dw,
                      Tensor& db, bool accumulate) {
  const char* op = "conv2d_backward_weights";
  const DType cdt = x.dtype;
  if (use_small_map(g)) return small_map_backward_weights(g, p, x, dy, dw, db, accumulate);
  if (use_our_winograd(g, cdt, x.layout, dy.layout))
    return winograd::backward_weights(shape3x3(g), x, dy, dw.data<float>(), db.defined() ? db.data<float>() : nullptr,
                                      accumulate);
  struct Entry {
    dnnl::convolution_backward_weights::primitive_desc pd;
    dnnl::convolution_backward_weights prim;
  };
  bool bias = db.defined();
  auto key = cache_key(op, x.shape, int(x.layout), int(dy.layout), dw.shape, bias, p.stride_h, p.stride_w,
                       p.pad_h, p.pad_w, int(cdt), use_winograd(g, cdt));
  auto& e = cached<Entry>(key, [&] {
    auto pd = with_algorithm(g, cdt, [&](dnnl::algorithm alg) {
      auto hint = fwd_pd(g, bias, false, cdt, alg);
      const bool gemm = alg == dnnl::algorithm::convolution_direct && bwdw_via_gemm(g);
      auto act = [&](const memory::dims& d) {
        return gemm ? memory::desc(d, dnnl_dtype(cdt), tag::nchw) : any_md(d, cdt);
      };
      auto src = act({g.N, g.C, g.H, g.W});
      auto dwei = any_md({g.K, g.C, g.R, g.S}, DType::F32);  // f32 weight gradients on every path
      auto ddst = act({g.N, g.K, g.P, g.Q});
      auto d = bias ? dnnl::convolution_backward_weights::desc(alg, src, dwei,
                                                               memory::desc({g.K}, memory::data_type::f32, tag::a),
                                                               ddst, g.strides, g.pad_l, g.pad_r)
                    : dnnl::convolution_backward_weights::desc(alg, src, dwei, ddst, g.strides, g.pad_l, g.pad_r);
      return dnnl::convolution_backward_weights::primitive_desc(d, engine(), hint);
    });
    return new Entry{pd, dnnl::convolution_backward_weights(pd)};
  });
  std::vector<Tensor> keep;
  memory src = to_desc_logged(op, mem_of(x), e.pd.src_desc(), keep);
  memory ddst = to_desc_logged(op, mem_of(dy), e.pd.diff_dst_desc(), keep);
  memory dw_user = mem_of(dw);
  // Write straight into dw when it is plain and we overwrite; otherwise into a temporary, then reorder
  // (with a sum post-op when accumulating).
  bool direct = !accumulate && e.pd.diff_weights_desc() == dw_user.get_desc();
  memory dwei = dw_user;
  if (!direct) {
    keep.push_back(scratch(e.pd.diff_weights_desc().get_size()));
    dwei = memory(e.pd.diff_weights_desc(), engine(), keep.back().raw());
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dwei}};
  Tensor db_tmp;
  if (bias) {
    if (accumulate) {
      db_tmp = Tensor::empty({g.K}, DType::F32, Device::CPU);
      args.emplace(DNNL_ARG_DIFF_BIAS, mem_of(db_tmp));
    } else {
      args.emplace(DNNL_ARG_DIFF_BIAS, mem_of(db));
    }
  }
  {
    KernelTimer t(op, e.pd.impl_info_str());
    e.prim.execute(stream(), args);
    stream().wait();
  }
  if (!direct) {
    KernelTimer t(op, "reorder");
    reorder_into(dwei, dw_user, accumulate);
    stream().wait();
  }
  if (bias && accumulate) {
    float* d = db.data<float>();
    const float* s = db_tmp.data<float>();
    for (int64_t k = 0; k < g.K; ++k) d[k] += s[k];
  }
}

// The path a bf16 convolution takes: bf16_path's, except on avx512_core_bf16 CPUs (no AMX) for the layers
// with at least 256 input and output channels on maps of at least 28² that use_winograd gives oneDNN's f32 Winograd:
// those run emulated (bf16 operands widened, f32 Winograd, output rounded to bf16: a bf16 layer's rounding of inputs,
// weights and output, with f32 products). There bf16 dot products run at twice the fp32 FMA rate and no more, so
// oneDNN's direct bf16 kernels (400-790 GFLOP/s, scripts/bench_conv_bf16.cc) lose to f32 Winograd, which does 2.25-4x
// fewer multiplications, where the layer's work outweighs the widening and rounding passes over its activations.
// Measured layer by layer in a vgg16 b8 224² step (AMD Zen 5, 2 threads, VGGNET_PROFILE=layers, CPU time): such
// layers 1.15-1.34x faster in each direction; 64-128 channels on 112²-224² maps 0.67-0.88x, 512 on 14² 0.89-1.09x,
// so those stay on the bf16 kernels. VGGNET_CPU_BF16=native keeps every layer on them. Our own bf16 Winograd
// (use_bf16_winograd, below) now takes those layers first where it can (nchw16c activations, channels multiples of
// 16, Winograd on); this path is what they take otherwise.
Bf16Path conv_bf16_path(const ConvGeom& g, DType activation) {
  static const bool winograd_layers = cpu_isa_info().bf16_winograd_layers;
  const Bf16Path path = bf16_path(activation);
  const bool wide_and_large = g.C >= 256 && g.K >= 256 && g.H * g.W >= 28 * 28;
  return path == Bf16Path::Native && winograd_layers && wide_and_large && use_winograd(g, DType::F32)
             ? Bf16Path::Emulated
             : path;
}

// Our bf16 Winograd F(2×2, 3×3) (winograd.h, winograd_bf16.cc) for native bf16 layers on avx512_core_bf16 CPUs
// (no AMX): 3×3 stride-1 pad-1 layers of at least 256 input and output channels on maps of 7² to 56², taken before
// conv_bf16_path's choice. There bf16 dot products run at twice the fp32 FMA rate (440 against 225 GFLOP/s measured on
// a Zen 4, 2 threads) and oneDNN's direct bf16 kernels near that peak (forward and backward-data 380-430 GFLOP/s,
// backward-weights 180-400), so only fewer multiplications help: F(2×2) does 2.25× fewer, at oneDNN's bf16 matmul
// rate (~300 GFLOP/s on these shapes), plus transforms. Measured per layer and direction (Zen 4, 2 threads,
// interleaved, medians of 6), against the direct bf16 kernels: backward-weights 1.07-2.2× on 7²-24² maps (0.91× at
// 6²); forward and backward-data 1.1-1.6× where the layer has at least 512² positions × channels (N·P·Q · min(C, K):
// [8,512,14²], [4,256,24²], [4,512,12²], [8,512,8²]), 0.6-0.9× below ([4,512,8²], [4,256,12²], 6²-7² maps: the
// weight transform, per call, outweighs the saving); and on 28²-56² maps against the emulated f32 Winograd F(4×4)
// those layers took before: 1.02-1.26× ([8,256,56²], [8,512,28²], [4,256,48²]). 64-128 channels on 112²-224² maps:
// 0.71-0.96× forward (direct). A fixed rule of shape and ISA, never a timing, so runs stay reproducible;
// VGGNET_CPU_WINOGRAD=0 (setCpuWinograd('off')) turns it off with the other Winograd kernels,
// VGGNET_CPU_BF16_WINOGRAD=0 alone (to compare).
enum class ConvDir { Forward, BackwardData, BackwardWeights };
bool use_bf16_winograd(const ConvGeom& g, DType activation, Layout in, Layout out, ConvDir dir) {
  static const bool on = [] {
    const char* env = std::getenv("VGGNET_CPU_BF16_WINOGRAD");
    return !(env && std::string(env) == "0") && cpu_isa_info().isa == "avx512_core_bf16" && winograd::bf16_supported();
  }();
  const CpuWinograd mode = cpu_winograd();
  const bool can = g.R == 3 && g.S == 3 && g.strides == memory::dims{1, 1} && g.pad_l == memory::dims{1, 1} &&
                   g.pad_r == memory::dims{1, 1} && g.C % 16 == 0 && g.K % 16 == 0;
  // setCpuWinograd('avx2') (CpuWinograd::Ours) puts ours on every layer it can take, whatever its size (tests).
  const bool wide = g.C >= 256 && g.K >= 256 && g.P <= 56 && g.Q <= 56 && g.P >= 7 && g.Q >= 7;
  const bool enough = dir == ConvDir::BackwardWeights || g.N * g.P * g.Q * std::min(g.C, g.K) >= 512 * 512;
  return on && bf16_path(activation) == Bf16Path::Native && can && (mode == CpuWinograd::Ours || (mode == CpuWinograd::Auto && wide && enough)) &&
         in == Layout::Blocked16 && out == Layout::Blocked16;
}

}  // namespace

Tensor CpuBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                  bool relu) {
  const char* op = "conv2d_forward";
  check_4d_image(x, "conv2d_forward: input");
  check_float_activation(x, "conv2d_forward: input");
  check_cpu(w, "conv2d_forward: weight");
  check_dtype(w, DType::F32, "conv2d_forward: weight");
  check_ndim(w, 4, "conv2d_forward: weight");
  ConvGeom g = conv_geometry(x.shape, w.shape, p, op);
  if (b.defined()) check_param(b, {g.K}, "conv2d_forward: bias");
  const Layout y_layout = act_layout(p.cpu_blocked_output ? cpu_activation_layout(x.dtype) : x.layout, g.K);
  if (g.N == 0) return Tensor::empty({0, g.K, g.P, g.Q}, x.dtype, Device::CPU, y_layout);  // oneDNN: SIGFPE on N=0
  if (use_bf16_winograd(g, x.dtype, x.layout, y_layout, ConvDir::Forward) && w.layout == Layout::Contiguous)
    return guard(op, [&] {
      Tensor y = Tensor::empty({g.N, g.K, g.P, g.Q}, x.dtype, Device::CPU, y_layout);
      winograd::forward_bf16(shape3x3(g), x, w.data<float>(), b.defined() ? b.data<float>() : nullptr, relu, y);
      return y;
    });
  const Bf16Path path = conv_bf16_path(g, x.dtype);
  return guard(op, [&] {
    const Tensor xc = bf16_operand(x, path), wc = bf16_weights(w, path);
    return bf16_result(forward(g, p, xc, wc, b, relu, y_layout), path);
  });
}

Tensor CpuBackend::conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                                        const Conv2dParams& p) {
  const char* op = "conv2d_backward_data";
  check_4d_image(dy, "conv2d_backward_data: dy");
  check_float_activation(dy, "conv2d_backward_data: dy");
  check_cpu(w, "conv2d_backward_data: weight");
  check_dtype(w, DType::F32, "conv2d_backward_data: weight");
  check_ndim(w, 4, "conv2d_backward_data: weight");
  VGG_CHECK(x_shape.size() == 4, "conv2d_backward_data: input shape must be 4-D, got %s", shape_str(x_shape).c_str());
  ConvGeom g = conv_geometry(x_shape, w.shape, p, op);
  check_shape(dy, {g.N, g.K, g.P, g.Q}, "conv2d_backward_data: dy");
  if (g.N == 0) return Tensor::empty(x_shape, dy.dtype, Device::CPU, act_layout(dy.layout, g.C));
  const Layout dx_layout = act_layout(dy.layout, g.C);
  if (use_bf16_winograd(g, dy.dtype, dy.layout, dx_layout, ConvDir::BackwardData) && w.layout == Layout::Contiguous)
    return guard(op, [&] {
      Tensor dx = Tensor::empty(x_shape, dy.dtype, Device::CPU, dx_layout);
      winograd::backward_data_bf16(shape3x3(g), dy, w.data<float>(), dx);
      return dx;
    });
  const Bf16Path path = conv_bf16_path(g, dy.dtype);
  return guard(op, [&] {
    const Tensor dyc = bf16_operand(dy, path), wc = bf16_weights(w, path);
    return bf16_result(backward_data(g, p, dyc, wc, x_shape), path);
  });
}

void CpuBackend::conv2d_backward_weights(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                         Tensor& db, bool accumulate) {
  const char* op = "conv2d_backward_weights";
  check_4d_image(x, "conv2d_backward_weights: input");
  check_float_activation(x, "conv2d_backward_weights: input");
  check_4d_image(dy, "conv2d_backward_weights: dy");
  check_float_activation(dy, "conv2d_backward_weights: dy");
  check_same_dtype(x, dy, "conv2d_backward_weights: input and dy");
  check_cpu(dw, "conv2d_backward_weights: dw");
  check_dtype(dw, DType::F32, "conv2d_backward_weights: dw");
  check_ndim(dw, 4, "conv2d_backward_weights: dw");
  ConvGeom g = conv_geometry(x.shape, dw.shape, p, op);
  check_shape(dy, {g.N, g.K, g.P, g.Q}, "conv2d_backward_weights: dy");
  if (db.defined()) check_param(db, {g.K}, "conv2d_backward_weights: db");
  VGG_CHECK(dw.layout == Layout::Contiguous, "conv2d_backward_weights: dw must be plain (K,C,R,S), got %s",
            layout_name(dw.layout));
  if (g.N == 0) return zero_grads_of_empty_batch(*this, dw, db, accumulate);
  if (use_bf16_winograd(g, x.dtype, x.layout, dy.layout, ConvDir::BackwardWeights))
    return guard(op, [&] {
      winograd::backward_weights_bf16(shape3x3(g), x, dy, dw.data<float>(), db.defined() ? db.data<float>() : nullptr,
                                      accumulate);
    });
  const Bf16Path path = conv_bf16_path(g, x.dtype);
  guard(op, [&] { backward_weights(g, p, bf16_operand(x, path), bf16_operand(dy, path), dw, db, accumulate); });
}

}  // namespace vgg::cpu

namespace vgg {
namespace {
std::atomic<int>& winograd_mode() {
  static std::atomic<int> mode{[] {
    const char* env = std::getenv("VGGNET_CPU_WINOGRAD");
    const std::string v = env ? env : "";
    return int(v == "0" ? CpuWinograd::Off : v == "avx2" ? CpuWinograd::Ours : CpuWinograd::Auto);
  }()};
  return mode;
}
}  // namespace
void set_cpu_winograd(CpuWinograd mode) { winograd_mode().store(int(mode)); }
CpuWinograd cpu_winograd() { return CpuWinograd(winograd_mode().load()); }
}  // namespace vgg
