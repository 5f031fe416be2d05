// The CPU's measured fp32 FMA peak, the yardstick `npm run bench -- cpu` holds the convolutions against: every
// thread runs independent chains of fused multiply-adds in registers at the widest vector oneDNN uses here.
#include <chrono>

#include "common.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace vgg {

namespace {

// 12 independent accumulator chains hide the FMA latency (4 cycles × 2 ports needs 8 in flight) without spilling
// (AVX2 has 16 vector registers). Returns a value derived from the chains so the loop is not optimised away.
template <int W>
struct Lanes {
  typedef float type __attribute__((vector_size(W * 4)));
};

#define VGG_FMA_LOOP(W)                                                  \
  using V = typename Lanes<W>::type;                                     \
  V a[12];                                                               \
  const V m = V{} + 0.999f, b = V{} + 1e-3f;                             \
  for (int i = 0; i < 12; ++i) a[i] = V{} + float(i);                    \
  for (int64_t it = 0; it < iters; ++it) {                               \
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) a[i] = a[i] * m + b; \
  }                                                                      \
  V s = a[0];                                                            \
  for (int i = 1; i < 12; ++i) s += a[i];                                \
  return s[0];

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters) { VGG_FMA_LOOP(16) }
__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) { VGG_FMA_LOOP(8) }
float fma_loop_sse(int64_t iters) { VGG_FMA_LOOP(4) }
#undef VGG_FMA_LOOP

}  // namespace

CpuPeak cpu_peak_gflops(int threads, double seconds) {
  VGG_CHECK_RANGE(threads >= 1 && threads <= 4096, "cpuPeakGflops: expected 1..4096 threads, got %d", threads);
  VGG_CHECK(seconds > 0 && seconds <= 10, "cpuPeakGflops: expected 0 < seconds <= 10, got %g", seconds);
  const std::string isa = cpu_isa_info().isa;
  CpuPeak r;
  int lanes;
  float (*loop)(int64_t);
  if (isa.rfind("avx512", 0) == 0) {
    loop = fma_loop_avx512, lanes = 16, r.vector = "avx512 fma";
  } else if (isa.rfind("avx2", 0) == 0) {
    loop = fma_loop_avx2, lanes = 8, r.vector = "avx2 fma";
  } else {
    loop = fma_loop_sse, lanes = 4, r.vector = "sse mul+add";
  }
  const double flop_per_iter = 12.0 * lanes * 2;
  auto run = [&](int64_t iters) {
    volatile float sink = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { sink = sink + loop(iters); }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // Calibrate on a short run, then time one run of about `seconds`; the best of three absorbs a stray interrupt.
  int64_t iters = 1 << 16;
  double t = run(iters);
  while (t < 0.02) t = run(iters *= 4);
  iters = std::max<int64_t>(1, int64_t(iters * (seconds / 3) / t));
  double best = 1e30;
  for (int i = 0; i < 3; ++i) best = std::min(best, run(iters));
  r.gflops = flop_per_iter * double(iters) * threads / best / 1e9;
  r.threads = threads;
  return r;
}

}  // namespace vgg
