// Seeded parameter initialisation: normal / uniform fills from the counter-based generator of rng.h, computed on
// the host in parallel and copied to the tensor's device. Element i depends only on (seed, i), so the result is
// the same for any thread count and device.
#include <napi.h>

#include <cmath>

#include "js_tensor.h"
#include "ops.h"
#include "rng.h"

namespace vgg::js {

namespace {
// fillRandom(tensor, 'normal'|'uniform', a, b, seed): normal(mean=a, std=b) or uniform[a, b).
Napi::Value FillRandom(const Napi::CallbackInfo& info) {
  const char* op = "fillRandom";
  Tensor& t = unwrap(arg(info, 0), "fillRandom: tensor");
  std::string kind = get_string(arg(info, 1), op);
  double a = get_number(arg(info, 2), op), b = get_number(arg(info, 3), op);
  uint64_t seed = uint64_t(get_int(arg(info, 4), op));
  check_dtype(t, DType::F32, "fillRandom: tensor");
  VGG_CHECK(kind == "normal" || kind == "uniform", "%s: kind must be 'normal' or 'uniform', got '%s'", op, kind.c_str());
  Tensor h = t.device() == Device::CPU && t.layout == Layout::Contiguous ? t : Tensor::empty(t.shape, DType::F32, Device::CPU);
  float* p = h.data<float>();
  const int64_t n = h.numel();
  if (kind == "uniform") {
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
    if (t.layout != Layout::Contiguous) h = cpu_backend().to_layout(h, t.layout);
    copy_bytes(t.raw(), t.device(), h.raw(), Device::CPU, t.nbytes());
  }
  return info.Env().Undefined();
}
}  // namespace

void init_random(Napi::Env env, Napi::Object exports) {
  exports.Set("fillRandom", Napi::Function::New(env, FillRandom, "fillRandom"));
}

}  // namespace vgg::js
