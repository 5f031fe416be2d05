// ReLU and dropout in plain C++ (OpenMP). Activations may be f32 or bf16 (bf16 is read/written through float), in any
// layout: the loops run over storage order (nchw8c has no padding, see tensor.h), which is why dropout's mask is
// defined in storage order.
#include "../rng.h"
#include "backend.h"

namespace vgg::cpu {

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
    // Both loads unconditional, so that the select vectorises (a conditional load of df kept it scalar: 3 GB/s).
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float g = df[i];
      of[i] = yf[i] > 0.f ? g : 0.f;
    }
    return dx;
  }
  if (dt == DType::BF16 && yt == DType::BF16) {  // bf16 training: on the bits, so that it vectorises too
    const uint16_t* db = static_cast<const uint16_t*>(d);
    const uint16_t* yb = static_cast<const uint16_t*>(yy);
    uint16_t* ob = static_cast<uint16_t*>(o);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t g = db[i], v = yb[i];
      // y > 0 as a float compare has it: sign clear, not ±0, not NaN (magnitude above +inf's 0x7f80)
      const bool pos = !(v & 0x8000u) && v != 0 && v <= 0x7f80u;
      ob[i] = pos ? g : uint16_t(0);
    }
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
  VGG_CHECK_RANGE(p >= 0 && p <= 1, "dropout_forward: probability must be in [0, 1], got %g", p);
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
  VGG_CHECK_RANGE(p >= 0 && p <= 1, "dropout_backward: probability must be in [0, 1], got %g", p);
  VGG_CHECK(saved.size() == 1, "dropout_backward: saved must hold the mask of a training-mode forward (got %zu "
            "tensors)", saved.size());
  const Tensor& mask = saved[0];
  check_cpu(mask, "dropout_backward: mask");
  check_dtype(mask, DType::U8, "dropout_backward: mask");
  check_shape(mask, dy.shape, "dropout_backward: mask");
  check_same_layout(mask, dy, "dropout_backward: mask and dy");
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

}  // namespace vgg::cpu
