// Elementwise ops in plain C++ (OpenMP): relu, dropout, fill, add_, cast, to_layout, synchronize.
// Activations may be f32 or bf16 here (bf16 is read/written through float), in any layout: the loops run over
// storage order (nchw8c has no padding, see tensor.h), which is why dropout's mask is defined in storage order.
#include "../rng.h"
#include "cpu_common.h"

namespace vgg::cpu {

namespace {

template <class T>
void permute4(const T* src, T* dst, const Shape& s, Layout from) {
  const int64_t N = s[0], C = s[1], H = s[2], W = s[3], HW = H * W;
  if (from == Layout::Contiguous) {  // NCHW -> NHWC
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t hw = 0; hw < HW; ++hw)
        for (int64_t c = 0; c < C; ++c) dst[(n * HW + hw) * C + c] = src[(n * C + c) * HW + hw];
  } else {  // NHWC -> NCHW
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t hw = 0; hw < HW; ++hw) dst[(n * C + c) * HW + hw] = src[(n * HW + hw) * C + c];
  }
}

}  // namespace

Tensor CpuBackend::relu_forward(const Tensor& x) {
  check_float_activation(x, "relu_forward: input");
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU, x.layout);
  const int64_t n = x.numel();
  if (x.dtype == DType::F32) {
    const float* a = x.data<float>();
    float* o = y.data<float>();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] > 0.f ? a[i] : 0.f;
  } else {
    const uint16_t* a = x.data<uint16_t>();
    uint16_t* o = y.data<uint16_t>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) o[i] = (a[i] & 0x8000u) ? 0 : a[i];  // negative (incl. -0) -> +0
  }
  return y;
}

Tensor CpuBackend::relu_backward(const Tensor& dy, const Tensor& y) {
  check_float_activation(dy, "relu_backward: dy");
  check_float_activation(y, "relu_backward: y");
  check_shape(y, dy.shape, "relu_backward: y");
  check_same_layout(dy, y, "relu_backward: dy and y");
  Tensor dx = Tensor::empty(dy.shape, dy.dtype, Device::CPU, dy.layout);
  const int64_t n = dy.numel();
  const void* d = dy.raw();
  const void* yy = y.raw();
  void* o = dx.raw();
  const DType dt = dy.dtype, yt = y.dtype;
  if (dt == DType::F32 && yt == DType::F32) {  // the common case, in a loop the compiler vectorises
    const float* df = static_cast<const float*>(d);
    const float* yf = static_cast<const float*>(yy);
    float* of = static_cast<float*>(o);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) of[i] = yf[i] > 0.f ? df[i] : 0.f;
    return dx;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) store(o, dt, i, load(yy, yt, i) > 0.f ? load(d, dt, i) : 0.f);
  return dx;
}

// Element i (in storage order) is kept when uniform01(seed, offset + i) >= float(p), then scaled by 1/(1-p).
// In inference (saved == null) dropout is the identity and returns x itself.
Tensor CpuBackend::dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, Saved* saved) {
  check_float_activation(x, "dropout_forward: input");
  VGG_CHECK(p >= 0 && p <= 1, "dropout_forward: probability must be in [0, 1], got %g", p);
  if (!saved) return x;
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU, x.layout);
  Tensor mask = Tensor::empty(x.shape, DType::U8, Device::CPU, x.layout);
  const int64_t n = x.numel();
  const float pf = float(p), scale = p < 1 ? float(1.0 / (1.0 - p)) : 0.f;
  uint8_t* m = mask.data<uint8_t>();
  const void* a = x.raw();
  void* o = y.raw();
  const DType dt = x.dtype;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = uniform01(seed, offset + uint64_t(i)) >= pf;
    m[i] = keep;
    store(o, dt, i, keep ? load(a, dt, i) * scale : 0.f);
  }
  saved->clear();
  saved->push_back(mask);
  return y;
}

Tensor CpuBackend::dropout_backward(const Tensor& dy, double p, const Saved& saved) {
  check_float_activation(dy, "dropout_backward: dy");
  VGG_CHECK(p >= 0 && p <= 1, "dropout_backward: probability must be in [0, 1], got %g", p);
  VGG_CHECK(saved.size() == 1, "dropout_backward: saved must hold the mask of a training-mode forward (got %zu "
            "tensors)", saved.size());
  const Tensor& mask = saved[0];
  check_cpu(mask, "dropout_backward: mask");
  check_dtype(mask, DType::U8, "dropout_backward: mask");
  check_shape(mask, dy.shape, "dropout_backward: mask");
  Tensor dx = Tensor::empty(dy.shape, dy.dtype, Device::CPU, dy.layout);
  const int64_t n = dy.numel();
  const float scale = p < 1 ? float(1.0 / (1.0 - p)) : 0.f;
  const uint8_t* m = mask.data<uint8_t>();
  const void* d = dy.raw();
  void* o = dx.raw();
  const DType dt = dy.dtype;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) store(o, dt, i, m[i] ? load(d, dt, i) * scale : 0.f);
  return dx;
}

void CpuBackend::fill(Tensor& t, double value) {
  check_cpu(t, "fill: tensor");
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::F32: {
      float* p = t.data<float>();
      const float v = float(value);
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) p[i] = v;
      break;
    }
    case DType::BF16: {
      uint16_t* p = t.data<uint16_t>();
      const uint16_t v = f32_to_bf16(float(value));
      for (int64_t i = 0; i < n; ++i) p[i] = v;
      break;
    }
    case DType::I32: {
      int32_t* p = t.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = int32_t(value);
      break;
    }
    case DType::I64: {
      int64_t* p = t.data<int64_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = int64_t(value);
      break;
    }
    case DType::U8: {
      std::memset(t.raw(), int(uint8_t(value)), size_t(n));
      break;
    }
  }
}

void CpuBackend::add_(Tensor& dst, const Tensor& src, double alpha) {
  check_float_activation(dst, "add_: dst");
  check_float_activation(src, "add_: src");
  check_shape(src, dst.shape, "add_: src");
  check_same_layout(dst, src, "add_: dst and src");
  const int64_t n = dst.numel();
  const float a = float(alpha);
  if (dst.dtype == DType::F32 && src.dtype == DType::F32) {
    float* d = dst.data<float>();
    const float* s = src.data<float>();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] += a * s[i];
  } else {
    void* d = dst.raw();
    const void* s = src.raw();
    const DType dt = dst.dtype, st = src.dtype;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) store(d, dt, i, load(d, dt, i) + a * load(s, st, i));
  }
}

Tensor CpuBackend::cast(const Tensor& x, DType dtype) {
  check_cpu(x, "cast: input");
  Tensor y = Tensor::empty(x.shape, dtype, Device::CPU, x.layout);
  const int64_t n = x.numel();
  if (x.dtype == dtype) {
    std::memcpy(y.raw(), x.raw(), x.nbytes());
  } else if (x.dtype == DType::F32 && dtype == DType::BF16) {
    const float* a = x.data<float>();
    uint16_t* o = y.data<uint16_t>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(a[i]);
  } else if (x.dtype == DType::BF16 && dtype == DType::F32) {
    const uint16_t* a = x.data<uint16_t>();
    float* o = y.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(a[i]);
  } else {
    throw Error(strprintf("cast: %s -> %s is not supported (float32 <-> bfloat16 only)", dtype_name(x.dtype),
                          dtype_name(dtype)));
  }
  return y;
}

Tensor CpuBackend::to_layout(const Tensor& x, Layout layout) {
  check_cpu(x, "to_layout: input");
  if (x.layout == layout) return x;
  VGG_CHECK(x.ndim() == 4, "to_layout: %s needs a 4-D tensor, got %s", layout_name(x.layout == Layout::Contiguous ? layout : x.layout),
            shape_str(x.shape).c_str());
  Tensor y = Tensor::empty(x.shape, x.dtype, Device::CPU, layout);
  if (x.layout == Layout::Blocked8 || layout == Layout::Blocked8) {
    guard("to_layout", [&] { reorder(mem_of(x), mem_of(y)); stream().wait(); });
    return y;
  }
  switch (dtype_size(x.dtype)) {
    case 1: permute4(x.data<uint8_t>(), y.data<uint8_t>(), x.shape, x.layout); break;
    case 2: permute4(x.data<uint16_t>(), y.data<uint16_t>(), x.shape, x.layout); break;
    case 4: permute4(x.data<uint32_t>(), y.data<uint32_t>(), x.shape, x.layout); break;
    case 8: permute4(x.data<uint64_t>(), y.data<uint64_t>(), x.shape, x.layout); break;
    default: throw Error(strprintf("to_layout: unsupported dtype %s", dtype_name(x.dtype)));
  }
  return y;
}

void CpuBackend::synchronize() { stream().wait(); }

}  // namespace vgg::cpu
