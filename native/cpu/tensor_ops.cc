// Tensor-wide ops in plain C++ (OpenMP): fill, add_, cast, to_layout, and the seeded random fill of
// initialisation. Activations may be f32 or bf16, in any layout; the loops run over storage order.
#include <cmath>

#include "../rng.h"
#include "backend.h"

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
    case DType::I8: {
      std::memset(t.raw(), int(int8_t(value)), size_t(n));
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
    f32_to_bf16_array(x.data<float>(), y.data<uint16_t>(), n);
  } else if (x.dtype == DType::BF16 && dtype == DType::F32) {
    bf16_to_f32_array(x.data<uint16_t>(), y.data<float>(), n);
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
  if (layout_block(x.layout) || layout_block(layout)) {
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

// Element i depends only on (seed, i): the same values for any thread count, and on any device (the CUDA backend
// fills on the host through this function and copies).
void CpuBackend::fill_random(Tensor& t, RandomKind kind, double a, double b, uint64_t seed) {
  check_cpu(t, "fill_random: tensor");
  check_dtype(t, DType::F32, "fill_random: tensor");
  Tensor h = t.layout == Layout::Contiguous ? t : Tensor::empty(t.shape, DType::F32, Device::CPU);
  float* p = h.data<float>();
  const int64_t n = h.numel();
  if (kind == RandomKind::Uniform) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = float(a + (b - a) * double(uniform01(seed, uint64_t(i))));
  } else {
    // Box–Muller over pairs: counter k gives elements 2k and 2k+1 from the two 32-bit halves of one draw.
    const uint64_t s = mix64(seed);
    const float fa = float(a), fb = float(b);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < (n + 1) / 2; k++) {
      uint64_t r64 = mix64(s ^ uint64_t(k));
      float u1 = (float(uint32_t(r64 >> 40)) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1]
      float u2 = float(uint32_t(r64 >> 8) & 0xFFFFFF) * (1.0f / 16777216.0f);  // [0, 1)
      float r = std::sqrt(-2.0f * std::log(u1)), sn, cs;
      sincosf(6.2831853071795865f * u2, &sn, &cs);
      p[2 * k] = fa + fb * r * cs;
      if (2 * k + 1 < n) p[2 * k + 1] = fa + fb * r * sn;
    }
  }
  if (h.raw() != t.raw()) {
    Tensor l = to_layout(h, t.layout);
    std::memcpy(t.raw(), l.raw(), t.nbytes());
  }
}

}  // namespace vgg::cpu
