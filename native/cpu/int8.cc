// int8 inference (ops.h, "int8 inference on the CPU"): quantize/dequantize, per-channel weight quantization, and
// the u8 × s8 and s8 × s8 convolutions on oneDNN (s8 input: the first conv's signed pixels; oneDNN adds the
// compensation for it, which the weights' reorder into its format computes). Max pools of u8 maps are pool.cc's.
#include <cmath>
#include <cstring>

#include "backend.h"
#include "kernel_log.h"

namespace vgg::cpu {

using dnnl::memory;
using tag = memory::format_tag;

namespace {

// A scaled reorder (common.h) of `from` into `to`, waited for and noted in the kernel log under op.
void scaled_reorder(const char* op, const memory& from, const memory& to, float scale) {
  KernelTimer t(op, "reorder");
  reorder(from, to, scale);
  stream().wait();
}

// Prepared weights (Int8ConvWeights::prepared): the oneDNN memory descriptor they were reordered for, zero-padded to
// kPreparedHeader bytes (a multiple of 64, so the data stays aligned), then the weights in that format. A forward uses
// them only when its primitive wants exactly that descriptor.
constexpr size_t kPreparedHeader = (sizeof(dnnl_memory_desc_t) + 63) / 64 * 64;
bool prepared_for(const Tensor& p, const memory::desc& want) {
  if (!p.defined() || p.device() != Device::CPU || p.dtype != DType::I8 || p.ndim() != 1 ||
      size_t(p.numel()) != kPreparedHeader + want.get_size())
    return false;
  // Bytes, not memory::desc's ==, so that a header that is not a descriptor is never interpreted.
  return std::memcmp(p.raw(), &want.data, sizeof(want.data)) == 0;
}

void check_scale(double s, const char* what) {
  VGG_CHECK_RANGE(std::isfinite(s) && s > 0 && float(s) > 0 && std::isfinite(1.0f / float(s)),
                  "%s: expected a finite scale > 0, got %g", what, s);
}

// The checks every int8 layer makes of its weights (int8, K rows, per-row scales finite and > 0), bias and scales.
void check_int8_layer(const char* op, const Int8ConvWeights& w, const Tensor& b, double x_scale, double y_scale) {
  check_cpu(w.q, strprintf("%s: weight", op).c_str());
  VGG_CHECK_TYPE(w.q.dtype == DType::I8, "%s: weight must be int8 (quantize_conv_weights), got %s", op,
                 dtype_name(w.q.dtype));
  VGG_CHECK(w.q.ndim() >= 2, "%s: weight must have output rows, got %s", op, shape_str(w.q.shape).c_str());
  const int64_t K = w.q.dim(0);
  check_param(w.scales, {K}, strprintf("%s: weight scales", op).c_str());
  for (int64_t k = 0; k < K; ++k) {
    const float s = w.scales.data<float>()[k];
    VGG_CHECK_RANGE(std::isfinite(s) && s > 0, "%s: weight scale %lld must be finite and > 0, got %g", op,
                    (long long)k, double(s));
  }
  if (b.defined()) check_param(b, {K}, strprintf("%s: bias", op).c_str());
  check_scale(x_scale, strprintf("%s: input scale", op).c_str());
  VGG_CHECK_RANGE(y_scale == 0 || (std::isfinite(y_scale) && y_scale > 0 && float(y_scale) > 0),
                  "%s: output scale must be > 0, or 0 for a float32 output; got %g", op, y_scale);
}

// The bias in the int32 accumulator's units, and the per-row output scales that take those units to y's (y_scale,
// or float32 values when y_scale == 0). oneDNN 2.6's CPU convolutions and inner products take no output scales given
// at execution (DNNL_RUNTIME_F32_VAL), so the scales are part of each primitive and of its cache key: one primitive
// per (layer, batch shape, scales), as a quantized model has.
struct Requant {
  Tensor bias;
  std::vector<float> scales;
};
Requant requant(const Int8ConvWeights& w, const Tensor& b, double x_scale, double y_scale) {
  const int64_t K = w.q.dim(0);
  Requant r{Tensor::empty({K}, DType::F32, Device::CPU), std::vector<float>(size_t(K))};
  const float* ws = w.scales.data<float>();
  const float* bf = b.defined() ? b.data<float>() : nullptr;
  for (int64_t k = 0; k < K; ++k) {
    const double acc_unit = x_scale * double(ws[k]);
    r.bias.data<float>()[k] = bf ? float(double(bf[k]) / acc_unit) : 0.0f;
    r.scales[size_t(k)] = float(y_scale > 0 ? acc_unit / y_scale : acc_unit);
  }
  return r;
}

dnnl::primitive_attr int8_attr(const std::vector<float>& scales, bool relu) {
  dnnl::primitive_attr attr;
  attr.set_output_scales(1 << 1, scales);  // per output channel
  if (relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return attr;
}

// Runs an int8 layer's primitive, noted in the kernel log under op.
void run_int8(const char* op, const std::string& impl, const dnnl::primitive& prim, const memory& src,
              const memory& wei, const memory& bias, const memory& dst) {
  KernelTimer t(op, impl);
  prim.execute(stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
  stream().wait();
}

// The weights in the primitive's format `want`: w.prepared when it was made for it, else w.q (plain, `plain`)
// reordered into a new prepared tensor, handed out through prepared_out and kept alive by `keep`.
memory int8_weights(const Int8ConvWeights& w, const memory::desc& plain, const memory::desc& want,
                    Tensor* prepared_out, std::vector<Tensor>& keep) {
  if (prepared_for(w.prepared, want)) return memory(want, engine(), static_cast<char*>(w.prepared.raw()) + kPreparedHeader);
  Tensor p = Tensor::empty({int64_t(kPreparedHeader + want.get_size())}, DType::I8, Device::CPU);
  std::memset(p.raw(), 0, kPreparedHeader);
  std::memcpy(p.raw(), &want.data, sizeof(want.data));
  memory m(want, engine(), static_cast<char*>(p.raw()) + kPreparedHeader);
  reorder(memory(plain, engine(), w.q.raw()), m);
  if (prepared_out) *prepared_out = p;
  keep.push_back(p);
  return m;
}

}  // namespace
}  // namespace vgg::cpu

namespace vgg {

using namespace cpu;

int cpu_int8_weight_max() {
  static const int m = [] {
    const std::string isa = cpu_isa_info().isa;
    const bool vnni = isa == "avx2_vnni" || isa == "avx512_core_vnni" || isa == "avx512_core_bf16" ||
                      isa == "avx512_core_amx";
    return vnni ? 127 : 63;
  }();
  return m;
}

Tensor cpu_quantize(const Tensor& x, double scale, DType dtype) {
  const char* op = "quantize";
  check_4d_image(x, "quantize: input");
  check_float_activation(x, "quantize: input");
  VGG_CHECK_TYPE(dtype == DType::U8 || dtype == DType::I8, "quantize: the result is uint8 or int8, not %s",
                 dtype_name(dtype));
  check_scale(scale, op);
  Tensor q = Tensor::empty(x.shape, dtype, Device::CPU, Layout::ChannelsLast);
  if (x.numel() == 0) return q;
  guard(op, [&] { scaled_reorder(op, mem_of(x), mem_of(q), float(1.0 / scale)); });
  return q;
}

Tensor cpu_dequantize_u8(const Tensor& q, double scale) {
  const char* op = "dequantize_u8";
  check_4d_image(q, "dequantize_u8: input");
  VGG_CHECK_TYPE(q.dtype == DType::U8, "dequantize_u8: input must be uint8, got %s", dtype_name(q.dtype));
  check_scale(scale, op);
  Tensor y = Tensor::empty(q.shape, DType::F32, Device::CPU, Layout::Contiguous);
  if (q.numel() == 0) return y;
  guard(op, [&] { scaled_reorder(op, mem_of(q), mem_of(y), float(scale)); });
  return y;
}

Int8ConvWeights cpu_quantize_conv_weights(const Tensor& w) {
  check_param(w, w.shape, "quantize_conv_weights: weight");
  VGG_CHECK(w.ndim() == 4, "quantize_conv_weights: weight must be (K, C, R, S), got %s", shape_str(w.shape).c_str());
  const int64_t K = w.dim(0), per = K ? w.numel() / K : 0;
  const float qmax = float(cpu_int8_weight_max());
  Int8ConvWeights r{Tensor::empty(w.shape, DType::I8, Device::CPU), Tensor::empty({K}, DType::F32, Device::CPU),
                    Tensor()};
  const float* src = w.data<float>();
  int8_t* q = r.q.data<int8_t>();
  float* sc = r.scales.data<float>();
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = src + k * per;
    float m = 0;
    for (int64_t i = 0; i < per; ++i) {
      finite = finite && std::isfinite(wk[i]);
      m = std::max(m, std::fabs(wk[i]));
    }
    const float s = m > 0 ? m / qmax : 1.0f;
    sc[k] = s;
    for (int64_t i = 0; i < per; ++i) {
      const float v = std::nearbyint(wk[i] / s);
      q[k * per + i] = int8_t(std::max(-qmax, std::min(qmax, std::isfinite(v) ? v : 0.0f)));
    }
  }
  VGG_CHECK(finite, "quantize_conv_weights: the weight holds a NaN or an infinity");
  return r;
}

Tensor cpu_int8_conv2d_forward(const Tensor& x, double x_scale, const Int8ConvWeights& w, const Tensor& b,
                               const Conv2dParams& p, double y_scale, bool relu, Tensor* prepared_out) {
  const char* op = "int8_conv2d_forward";
  check_4d_image(x, "int8_conv2d_forward: input");
  VGG_CHECK_TYPE(x.dtype == DType::U8 || x.dtype == DType::I8,
                 "int8_conv2d_forward: input must be uint8 or int8 (quantize), got %s", dtype_name(x.dtype));
  check_int8_layer(op, w, b, x_scale, y_scale);
  VGG_CHECK(w.q.ndim() == 4, "int8_conv2d_forward: weight must be (K, C, R, S), got %s", shape_str(w.q.shape).c_str());
  const ConvGeom g = conv_geometry(x.shape, w.q.shape, p, op);
  const DType ydt = y_scale > 0 ? DType::U8 : DType::F32;
  Tensor y = Tensor::empty({g.N, g.K, g.P, g.Q}, ydt, Device::CPU, Layout::ChannelsLast);
  if (g.N == 0) return y;
  return guard(op, [&] {
    const Requant rq = requant(w, b, x_scale, y_scale);
    struct Entry {
      dnnl::convolution_forward::primitive_desc pd;
      dnnl::convolution_forward prim;
    };
    const auto src_md = md_plain(x.shape, x.dtype, Layout::ChannelsLast);
    const auto dst_md = md_plain(y.shape, ydt, Layout::ChannelsLast);
    const auto bias_md = memory::desc({g.K}, memory::data_type::f32, tag::a);
    std::string key =
        cache_key(op, x.shape, int(x.dtype), w.q.shape, p.stride_h, p.stride_w, p.pad_h, p.pad_w, relu, int(ydt));
    key.append(reinterpret_cast<const char*>(rq.scales.data()), rq.scales.size() * sizeof(float));
    auto& e = cached<Entry>(key, [&] {
      const auto wei_md = memory::desc({g.K, g.C, g.R, g.S}, memory::data_type::s8, tag::any);
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                        src_md, wei_md, bias_md, dst_md, g.strides, g.pad_l, g.pad_r);
      dnnl::convolution_forward::primitive_desc pd(d, int8_attr(rq.scales, relu), engine());
      return new Entry{pd, dnnl::convolution_forward(pd)};
    });
    std::vector<Tensor> keep;
    const memory wq = int8_weights(w, memory::desc({g.K, g.C, g.R, g.S}, memory::data_type::s8, tag::oihw),
                                   e.pd.weights_desc(), prepared_out, keep);
    run_int8(op, e.pd.impl_info_str(), e.prim, to_desc(mem_of(x), src_md, keep), wq, mem_of(rq.bias, bias_md),
             mem_of(y, dst_md));
    return y;
  });
}

Tensor cpu_int8_linear_forward(const Tensor& x, double x_scale, const Int8ConvWeights& w, const Tensor& b,
                               double y_scale, bool relu, Tensor* prepared_out) {
  const char* op = "int8_linear_forward";
  check_cpu(x, "int8_linear_forward: input");
  VGG_CHECK_TYPE(x.dtype == DType::U8, "int8_linear_forward: input must be uint8, got %s", dtype_name(x.dtype));
  // (N, K), or a flattened map (N, K, 1, 1), whose bytes are the same in any layout
  const bool flat4 = x.ndim() == 4 && x.dim(2) == 1 && x.dim(3) == 1;
  VGG_CHECK(x.ndim() == 2 || flat4, "int8_linear_forward: input must be (N, K) or (N, K, 1, 1), got %s",
            shape_str(x.shape).c_str());
  check_int8_layer(op, w, b, x_scale, y_scale);
  const bool wflat4 = w.q.ndim() == 4 && w.q.dim(2) == 1 && w.q.dim(3) == 1;
  VGG_CHECK(w.q.ndim() == 2 || wflat4, "int8_linear_forward: weight must be (M, K) or (M, K, 1, 1), got %s",
            shape_str(w.q.shape).c_str());
  const int64_t N = x.dim(0), K = x.dim(1), M = w.q.dim(0);
  VGG_CHECK(w.q.dim(1) == K, "int8_linear_forward: input has %lld features, weight expects %lld", (long long)K,
            (long long)w.q.dim(1));
  check_nonzero_dims(x.shape, 1, "int8_linear_forward: input");
  const DType ydt = y_scale > 0 ? DType::U8 : DType::F32;
  Tensor y = Tensor::empty({N, M}, ydt, Device::CPU);
  if (N == 0) return y;
  return guard(op, [&] {
    const Requant rq = requant(w, b, x_scale, y_scale);
    struct Entry {
      dnnl::inner_product_forward::primitive_desc pd;
      dnnl::inner_product_forward prim;
    };
    const auto src_md = memory::desc({N, K}, memory::data_type::u8, tag::nc);
    const auto dst_md = memory::desc({N, M}, dnnl_dtype(ydt), tag::nc);
    const auto bias_md = memory::desc({M}, memory::data_type::f32, tag::a);
    std::string key = cache_key(op, N, K, M, relu, int(ydt));
    key.append(reinterpret_cast<const char*>(rq.scales.data()), rq.scales.size() * sizeof(float));
    auto& e = cached<Entry>(key, [&] {
      const auto wei_md = memory::desc({M, K}, memory::data_type::s8, tag::any);
      dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src_md, wei_md, bias_md, dst_md);
      dnnl::inner_product_forward::primitive_desc pd(d, int8_attr(rq.scales, relu), engine());
      return new Entry{pd, dnnl::inner_product_forward(pd)};
    });
    std::vector<Tensor> keep;
    const memory wq = int8_weights(w, memory::desc({M, K}, memory::data_type::s8, tag::oi), e.pd.weights_desc(),
                                   prepared_out, keep);
    run_int8(op, e.pd.impl_info_str(), e.prim, memory(src_md, engine(), x.raw()), wq, mem_of(rq.bias, bias_md),
             mem_of(y, dst_md));
    return y;
  });
}

Tensor cpu_int8_flatten(const Tensor& q) {
  check_4d_image(q, "int8_flatten: input");
  VGG_CHECK_TYPE(q.dtype == DType::U8 || q.dtype == DType::I8, "int8_flatten: input must be uint8 or int8, got %s",
                 dtype_name(q.dtype));
  VGG_CHECK(q.layout == Layout::ChannelsLast, "int8_flatten: input must be nhwc, got %s", layout_name(q.layout));
  Tensor t = q;
  t.shape = {q.dim(0), q.dim(1) * q.dim(2) * q.dim(3), 1, 1};
  return t;
}

double cpu_abs_max(const Tensor& x) {
  check_cpu(x, "absMax: input");
  check_float_activation(x, "absMax: input");
  const int64_t n = x.numel();
  float m = 0;
  bool nan = false;
  if (x.dtype == DType::F32) {
    const float* p = x.data<float>();
#pragma omp parallel for schedule(static) reduction(max : m) reduction(|| : nan)
    for (int64_t i = 0; i < n; ++i) {
      nan = nan || std::isnan(p[i]);
      m = std::max(m, std::fabs(p[i]));
    }
  } else {
    const uint16_t* p = x.data<uint16_t>();
#pragma omp parallel for schedule(static) reduction(max : m) reduction(|| : nan)
    for (int64_t i = 0; i < n; ++i) {
      const float v = bf16_to_f32(p[i]);
      nan = nan || std::isnan(v);
      m = std::max(m, std::fabs(v));
    }
  }
  return nan ? std::nan("") : double(m);
}

}  // namespace vgg
