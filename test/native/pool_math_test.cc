// Host test of the max-pool kernels' per-element bodies (native/cuda/pool_math.h), run without a GPU by
// test/cuda/host.test.ts: forward, the gather backward and the tiling backward, in int32 and int64 index math and
// both layouts, against plain loops over logical (n, c, h, w) coordinates written here. Prints "ok (0 failed checks)".
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace vgg::cuk {
inline float ld(const float* p, int64_t i) { return p[i]; }
inline void st(float* p, int64_t i, float v) { p[i] = v; }
}  // namespace vgg::cuk
#include "cuda/pool_math.h"

using vgg::cuk::PoolShape;

static int failed = 0, checks = 0;
static void check(bool ok, const char* what, const PoolShape& ps, int64_t N, int64_t at) {
  ++checks;
  if (ok) return;
  if (++failed <= 10)
    std::printf("FAIL %s: N=%lld C=%lld H=%lld W=%lld k=%d s=%d pad=%d cl=%d at %lld\n", what, (long long)N,
                (long long)ps.C, (long long)ps.H, (long long)ps.W, ps.k, ps.s, ps.pad, int(ps.cl), (long long)at);
}

static int64_t phys(int64_t n, int64_t c, int64_t h, int64_t w, int64_t C, int64_t H, int64_t W, bool cl) {
  return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}
static bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

template <class I>
static void run_case(std::mt19937& rng, int64_t N, const PoolShape& ps) {
  const int64_t C = ps.C, H = ps.H, W = ps.W, P = ps.P, Q = ps.Q;
  const int k = ps.k;
  std::vector<float> x(N * C * H * W), dy(N * C * P * Q);
  std::uniform_int_distribution<int> small(-3, 3);  // few distinct values: ties, and the first-max rule matters
  for (auto& v : x) v = (rng() % 50 == 0) ? NAN : float(small(rng));
  for (auto& v : dy) v = float(small(rng)) + 0.25f;
  // reference forward and backward (a scatter of dy to each window's arg-max)
  std::vector<float> y_ref(dy.size()), dx_ref(x.size(), 0.f);
  std::vector<uint8_t> idx_ref(dy.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          float best = -INFINITY;
          int bi = -1;
          for (int kh = 0; kh < k; ++kh)
            for (int kw = 0; kw < k; ++kw) {
              const int64_t h = p * ps.s - ps.pad + kh, w = q * ps.s - ps.pad + kw;
              if (h < 0 || h >= H || w < 0 || w >= W) continue;
              const float v = x[phys(n, c, h, w, C, H, W, ps.cl)];
              if (bi < 0 || v > best || std::isnan(v)) {  // the first valid position, a larger value, or NaN
                best = v;
                bi = kh * k + kw;
              }
            }
          const int64_t o = phys(n, c, p, q, C, P, Q, ps.cl);
          y_ref[o] = bi < 0 ? -INFINITY : best;
          idx_ref[o] = uint8_t(bi < 0 ? 0 : bi);
          if (bi >= 0) {
            const int64_t h = p * ps.s - ps.pad + bi / k, w = q * ps.s - ps.pad + bi % k;
            dx_ref[phys(n, c, h, w, C, H, W, ps.cl)] += dy[o];
          }
        }
  std::vector<float> y(dy.size()), dx(x.size(), 12345.f), dx_tile(x.size(), 12345.f);
  std::vector<uint8_t> idx(dy.size());
  for (I o = 0; o < I(dy.size()); ++o) vgg::cuk::maxpool_forward_at<I>(o, y.data(), idx.data(), x.data(), ps);
  for (size_t o = 0; o < dy.size(); ++o) {
    check(same(y[o], y_ref[o]), "forward value", ps, N, int64_t(o));
    check(idx[o] == idx_ref[o], "forward arg-max", ps, N, int64_t(o));
  }
  for (I i = 0; i < I(x.size()); ++i) vgg::cuk::maxpool_backward_gather_at<I>(i, dx.data(), dy.data(), idx.data(), ps);
  for (size_t i = 0; i < x.size(); ++i) check(std::fabs(dx[i] - dx_ref[i]) <= 1e-6f, "gather backward", ps, N, int64_t(i));
  if (vgg::cuk::windows_tile(ps)) {
    for (I o = 0; o < I(dy.size()); ++o)
      vgg::cuk::maxpool_backward_tile_at<I>(o, dx_tile.data(), dy.data(), idx.data(), ps);
    for (size_t i = 0; i < x.size(); ++i) check(dx_tile[i] == dx[i], "tiling backward = gather", ps, N, int64_t(i));
  }
}

int main() {
  std::mt19937 rng(7);
  int tiled = 0;
  for (int t = 0; t < 400; ++t) {
    const int k = 1 + int(rng() % 3), s = 1 + int(rng() % 3), pad = int(rng() % 2) && k > 1 ? int(rng() % (k / 2 + 1)) : 0;
    const bool tile = rng() % 2 == 0;
    const int64_t N = 1 + rng() % 3, C = 1 + rng() % 5;
    int64_t H, W, P, Q;
    PoolShape ps{};
    if (tile) {  // the VGG case: stride == kernel, no padding, sizes a multiple of the kernel
      P = 1 + rng() % 5; Q = 1 + rng() % 5;
      ps = PoolShape{C, P * k, Q * k, P, Q, k, k, 0, rng() % 2 == 0};
    } else {
      H = k + rng() % 9; W = k + rng() % 9;
      P = (H + 2 * pad - k) / s + 1; Q = (W + 2 * pad - k) / s + 1;
      ps = PoolShape{C, H, W, P, Q, k, s, pad, rng() % 2 == 0};
    }
    tiled += vgg::cuk::windows_tile(ps);
    if (t % 2) run_case<int32_t>(rng, N, ps);
    else run_case<int64_t>(rng, N, ps);
  }
  if (tiled < 100) { std::printf("FAIL: only %d tiling cases\n", tiled); return 1; }
  std::printf("%d checks, %d tiling cases; %s (%d failed checks)\n", checks, tiled, failed ? "FAILED" : "ok", failed);
  return failed ? 1 : 0;
}
