// Winograd F(2×2, 3×3) for native bf16 convolutions on avx512_core_bf16 CPUs (see winograd.h). The transforms
// (points 0, ±1, ∞; Lavin & Gray 2015):
//   Y  = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A            forward, per 4×4 input tile d and 3×3 kernel g
//   dg = Gᵀ [ Σ_tiles (Bᵀ d B) ⊙ (A dY Aᵀ) ] G      weight gradient, dY the tile's 2×2 output gradient
// Transforms run in f32 on 16-channel vectors (nchw16c: a group's 16 channels are contiguous); the transformed
// inputs, output gradients and weights are rounded to bf16 once, so the 16 GEMMs per chunk of tiles (one batched
// oneDNN matmul) run on bf16 dot products with f32 sums; outputs and weight gradients are transformed back in f32.
// F(2×2) rather than winograd.cc's F(4×4): its transforms add and subtract only (Bᵀ, Aᵀ) or halve (G), so rounding
// their results to bf16 adds about one bf16 rounding of the operands, where F(4×4)'s points (±5/8, ±3/2) amplified it
// to ~4× a direct bf16 convolution's error (simulated in float64 on VGG-like layers: F(2×2) 0.36 % of the largest
// output against 0.35 % for a direct bf16 layer's own input rounding; F(4×4) 1.3 %).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernel_log.h"
#include "winograd.h"

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the merge source of their unmasked forms, which
// -Wmaybe-uninitialized reports once they are inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace vgg::cpu::winograd {

using dnnl::memory;

#define VGG_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define VGG_BF16_NOINLINE __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"), noinline))

bool bf16_supported() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return ok;
}

namespace {

constexpr int64_t kE = 16;  // a transformed tile: 4×4
constexpr const char* kImplBf16 = "wino_2x3_bf16:avx512_core_bf16 (vggnet)";
// The 16 elements of a transformed tile are stored apart, one matrix each; a distance that is a multiple of 4 KiB
// (128 tiles × 512 channels × 2 bytes) would put all 16 in the same cache sets, so one line more each.
int64_t elem_stride(int64_t elems, int64_t bytes) { return elems + 64 / bytes; }

using bf16 = uint16_t;

VGG_BF16 inline __m512 load16(const bf16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
// Round to nearest even, as f32_to_bf16 (common.h) and oneDNN round.
VGG_BF16 inline void store16(bf16* p, __m512 v) {
  _mm256_storeu_si256((__m256i*)p, (__m256i)_mm512_cvtneps_pbh(v));
}

// ---- one-dimensional transforms on 16-channel vectors; `is`/`os` are the element strides of input and output.
// Bᵀ (4 -> 4): the input tile.
VGG_BF16 inline void bt(const __m512* d, int is, __m512* t, int os) {
  t[0] = _mm512_sub_ps(d[0], d[2 * is]);
  t[os] = _mm512_add_ps(d[is], d[2 * is]);
  t[2 * os] = _mm512_sub_ps(d[2 * is], d[is]);
  t[3 * os] = _mm512_sub_ps(d[is], d[3 * is]);
}
// Aᵀ (4 -> 2): back from the transformed domain.
VGG_BF16 inline void at(const __m512* m, int is, __m512* o, int os) {
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[is]), m[2 * is]);
  o[os] = _mm512_sub_ps(_mm512_sub_ps(m[is], m[2 * is]), m[3 * is]);
}
// A (2 -> 4): an output-gradient tile into the transformed domain.
VGG_BF16 inline void a(const __m512* y, int is, __m512* z, int os) {
  z[0] = y[0];
  z[os] = _mm512_add_ps(y[0], y[is]);
  z[2 * os] = _mm512_sub_ps(y[0], y[is]);
  z[3 * os] = _mm512_sub_ps(_mm512_setzero_ps(), y[is]);
}
// G (3 -> 4)
VGG_BF16 inline void g3(const __m512* k, int is, __m512* u, int os) {
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 s = _mm512_add_ps(k[0], k[2 * is]);
  u[0] = k[0];
  u[os] = _mm512_mul_ps(_mm512_add_ps(s, k[is]), half);
  u[2 * os] = _mm512_mul_ps(_mm512_sub_ps(s, k[is]), half);
  u[3 * os] = k[2 * is];
}
// Gᵀ (4 -> 3)
VGG_BF16 inline void gt4(const __m512* u, int is, __m512* k, int os) {
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 s = _mm512_mul_ps(_mm512_add_ps(u[is], u[2 * is]), half);
  k[0] = _mm512_add_ps(u[0], s);
  k[os] = _mm512_mul_ps(_mm512_sub_ps(u[is], u[2 * is]), half);
  k[2 * os] = _mm512_add_ps(s, u[3 * is]);
}

struct Map {
  int64_t sh, sw, rows, cols;
};

// V[e] (stride `es` between elements) = Bᵀ d B of the 4×4 patch at (r0, c0), zeros outside the map.
VGG_BF16_NOINLINE void input_tile(const bf16* g, const Map& m, int64_t r0, int64_t c0, bf16* v, int64_t es) {
  __m512 d[kE], t[kE];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      const int64_t h = r0 + r, w = c0 + c;
      d[r * 4 + c] =
          h >= 0 && h < m.rows && w >= 0 && w < m.cols ? load16(g + h * m.sh + w * m.sw) : _mm512_setzero_ps();
    }
  for (int c = 0; c < 4; ++c) bt(d + c, 4, t + c, 4);
  for (int r = 0; r < 4; ++r) bt(t + r * 4, 1, d + r * 4, 1);
  for (int e = 0; e < kE; ++e) store16(v + e * es, d[e]);
}

// The 2×2 outputs Aᵀ M A (+ bias, ReLU) of one tile into the map at (r0, c0), clipped to the map.
VGG_BF16_NOINLINE void output_tile(const float* mt, int64_t es, const float* bias, bool relu, bf16* g, const Map& m,
                                   int64_t r0, int64_t c0) {
  __m512 x[kE], t[8], o[4];
  for (int e = 0; e < kE; ++e) x[e] = _mm512_loadu_ps(mt + e * es);
  for (int c = 0; c < 4; ++c) at(x + c, 4, t + c, 4);
  for (int r = 0; r < 2; ++r) at(t + r * 4, 1, o + r * 2, 1);
  const __m512 b = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  for (int r = 0; r < 2 && r0 + r < m.rows; ++r)
    for (int c = 0; c < 2 && c0 + c < m.cols; ++c) {
      __m512 v = _mm512_add_ps(o[r * 2 + c], b);
      if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
      store16(g + (r0 + r) * m.sh + (c0 + c) * m.sw, v);
    }
}

// Z[e] = A dY Aᵀ of the 2×2 output-gradient tile at (r0, c0), zeros outside the map.
VGG_BF16_NOINLINE void grad_tile(const bf16* g, const Map& m, int64_t r0, int64_t c0, bf16* z, int64_t es) {
  __m512 d[4], t[8], u[kE];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) {
      const int64_t h = r0 + r, w = c0 + c;
      d[r * 2 + c] = h < m.rows && w < m.cols ? load16(g + h * m.sh + w * m.sw) : _mm512_setzero_ps();
    }
  for (int c = 0; c < 2; ++c) a(d + c, 2, t + c, 2);  // columns: t (4×2)
  for (int r = 0; r < 4; ++r) a(t + r * 2, 1, u + r * 4, 1);
  for (int e = 0; e < kE; ++e) store16(z + e * es, u[e]);
}

// U[e][k][c..c+15] = (G w[k][c] Gᵀ)[e] for 16 consecutive input channels (their kernels 9 floats apart at `src`, so
// the gathers stay within nine cache lines), rotated by 180° (backward-data's transposed convolution) when `flip`.
VGG_BF16_NOINLINE void weight_tile(const float* src, bool flip, bf16* u, int64_t es) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(9));
  __m512 k[9], t[12], v[kE];
  for (int j = 0; j < 9; ++j) k[j] = _mm512_i32gather_ps(idx, src + (flip ? 8 - j : j), 4);
  for (int c = 0; c < 3; ++c) g3(k + c, 3, t + c, 3);  // columns: t (4×3)
  for (int r = 0; r < 4; ++r) g3(t + r * 3, 1, v + r * 4, 1);
  for (int e = 0; e < kE; ++e) store16(u + e * es, v[e]);
}

// dw[k..k+15, `step` floats apart][c] (+)= Gᵀ dU G for dU[e][c][k..k+15] at u + e·es.
VGG_BF16_NOINLINE void weight_grad_tile(const float* u, int64_t es, float* dst, int64_t step, bool accumulate) {
  __m512 x[kE], t[12], k[9];
  for (int e = 0; e < kE; ++e) x[e] = _mm512_loadu_ps(u + e * es);
  for (int r = 0; r < 4; ++r) gt4(x + r * 4, 1, t + r * 3, 1);  // rows: t (4×3)
  for (int c = 0; c < 3; ++c) gt4(t + c, 3, k + c, 3);
  alignas(64) float out[9][16];
  for (int j = 0; j < 9; ++j) _mm512_store_ps(out[j], k[j]);
  for (int l = 0; l < 16; ++l)
    for (int j = 0; j < 9; ++j) dst[l * step + j] = accumulate ? dst[l * step + j] + out[j][l] : out[j][l];
}

// U[e] (K, C) (element stride es) = (G w[k][c] Gᵀ)[e] for the layer's kernels w (K,C,3,3), rotated by 180° for
// backward-data. Forward multiplies by U[e]ᵀ (C in, K out), backward-data by U[e] (K in, C out): one layout for both.
void transform_weights(const float* w, int64_t K, int64_t C, bool flip, bf16* U, int64_t es) {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; c += 16) weight_tile(w + (k * C + c) * 9, flip, U + k * C + c, es);
}

struct Tiles {
  int64_t rows, cols, per_image, total;  // 2×2 tiles over an H×W output map, N images
  Tiles(int64_t N, int64_t H, int64_t W)
      : rows((H + 1) / 2), cols((W + 1) / 2), per_image(rows * cols), total(N * per_image) {}
};

// Tiles per chunk: the chunk's transformed operands and products at most ~12 MB, which stays in the last-level cache
// between the transforms and the matmul; chunks of equal size, since a GEMM of 256 rows ran at half the rate of one
// of 576 (oneDNN's bf16 matmul, 256×256 channels).
int64_t chunk_tiles(int64_t bytes_per_tile, int64_t total) {
  const int64_t most = std::max<int64_t>(256, (int64_t(12) << 20) / bytes_per_tile);
  const int64_t chunks = (total + most - 1) / most;
  return (total + chunks - 1) / chunks;
}

void batched_gemm(const std::string& key, const memory::desc& a, const void* ap, const memory::desc& b, const void* bp,
                  const memory::desc& c, float* cp, bool accumulate) {
  auto& e = matmul_entry(key, a, b, nullptr, c, false, accumulate);
  e.prim.execute(stream(), {{DNNL_ARG_SRC, memory(a, engine(), const_cast<void*>(ap))},
                            {DNNL_ARG_WEIGHTS, memory(b, engine(), const_cast<void*>(bp))},
                            {DNNL_ARG_DST, memory(c, engine(), cp)}});
  stream().wait();
}

struct Act {
  bf16* base;
  Strides4 s;
  Map map;
  Act(const Tensor& t)
      : base(static_cast<bf16*>(const_cast<void*>(t.raw()))), s(strides4(t.shape, t.layout)),
        map{s.h, s.w, t.shape[2], t.shape[3]} {}
  bf16* group(int64_t n, int64_t c0) const { return base + n * s.n + s.coff(c0); }
};

constexpr auto kBf16 = memory::data_type::bf16;
constexpr auto kF32 = memory::data_type::f32;

// out = conv3x3(in, U) (+ bias, ReLU) for transformed weights U [16][Cin][Cout] (stored [16][Cout][Cin] when
// `transposed`); in and out share H×W.
void convolve(const Tensor& in, int64_t Cin, const bf16* U, bool transposed, int64_t Cout, const float* bias, bool relu,
              Tensor& out) {
  const int64_t esU = elem_stride(Cin * Cout, 2);
  const Act x(in), y(out);
  const Tiles tl(in.shape[0], in.shape[2], in.shape[3]);
  const int64_t Tb = chunk_tiles(kE * (2 * Cin + 4 * Cout), tl.total);
  const int64_t esV = elem_stride(Tb * Cin, 2), esM = elem_stride(Tb * Cout, 4);
  Tensor vbuf = scratch(size_t(kE * esV) * 2), mbuf = scratch(size_t(kE * esM) * 4);
  bf16* V = static_cast<bf16*>(vbuf.raw());
  float* M = static_cast<float*>(mbuf.raw());
  const memory::desc ad({kE, Tb, Cin}, kBf16, memory::dims{esV, Cin, 1});
  const memory::desc bd({kE, Cin, Cout}, kBf16, transposed ? memory::dims{esU, 1, Cin} : memory::dims{esU, Cout, 1});
  const memory::desc cd({kE, Tb, Cout}, kF32, memory::dims{esM, Cout, 1});
  const std::string key = cache_key("winograd_bf16/conv", Tb, Cin, Cout, transposed);
  const int64_t gin = Cin / 16, gout = Cout / 16;
  for (int64_t t0 = 0; t0 < tl.total; t0 += Tb) {
    const int64_t rows = std::min(Tb, tl.total - t0);
    if (rows < Tb)  // the last chunk's unused rows: defined values, their products are never read
      for (int64_t e = 0; e < kE; ++e) std::memset(V + e * esV + rows * Cin, 0, size_t((Tb - rows) * Cin) * 2);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * gin; ++i) {
      const int64_t t = t0 + i / gin, cg = i % gin, n = t / tl.per_image, r = (t % tl.per_image) / tl.cols,
                    q = t % tl.cols;
      input_tile(x.group(n, cg * 16), x.map, 2 * r - 1, 2 * q - 1, V + (i / gin) * Cin + cg * 16, esV);
    }
    batched_gemm(key, ad, V, bd, U, cd, M, false);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * gout; ++i) {
      const int64_t t = t0 + i / gout, kg = i % gout, n = t / tl.per_image, r = (t % tl.per_image) / tl.cols,
                    q = t % tl.cols;
      output_tile(M + (i / gout) * Cout + kg * 16, esM, bias ? bias + kg * 16 : nullptr, relu, y.group(n, kg * 16),
                  y.map, 2 * r, 2 * q);
    }
  }
}

Tensor transformed_weights(const Shape3x3& s, const float* w, bool backward_data) {
  const int64_t es = elem_stride(s.C * s.K, 2);
  Tensor u = scratch(size_t(kE * es) * 2);
  transform_weights(w, s.K, s.C, backward_data, static_cast<bf16*>(u.raw()), es);
  return u;
}

}  // namespace

void forward_bf16(const Shape3x3& s, const Tensor& x, const float* w, const float* b, bool relu, Tensor& y) {
  KernelTimer timer("conv2d_forward", kImplBf16);
  const Tensor u = transformed_weights(s, w, false);
  convolve(x, s.C, static_cast<const bf16*>(u.raw()), true, s.K, b, relu, y);
}

void backward_data_bf16(const Shape3x3& s, const Tensor& dy, const float* w, Tensor& dx) {
  KernelTimer timer("conv2d_backward_data", kImplBf16);
  const Tensor u = transformed_weights(s, w, true);
  convolve(dy, s.K, static_cast<const bf16*>(u.raw()), false, s.C, nullptr, false, dx);
}

void backward_weights_bf16(const Shape3x3& s, const Tensor& x, const Tensor& dy, float* dw, float* db,
                           bool accumulate) {
  KernelTimer timer("conv2d_backward_weights", kImplBf16);
  const Act xa(x), ga(dy);
  const Tiles tl(s.N, s.H, s.W);
  const int64_t C = s.C, K = s.K, Tb = chunk_tiles(kE * 2 * (C + K), tl.total);
  const int64_t esV = elem_stride(Tb * C, 2), esZ = elem_stride(Tb * K, 2), esU = elem_stride(C * K, 4);
  Tensor vbuf = scratch(size_t(kE * esV) * 2), zbuf = scratch(size_t(kE * esZ) * 2),
         ubuf = scratch(size_t(kE * esU) * 4);
  bf16* V = static_cast<bf16*>(vbuf.raw());
  bf16* Z = static_cast<bf16*>(zbuf.raw());
  float* dU = static_cast<float*>(ubuf.raw());
  // dU[e] (C, K) += V[e]ᵀ (C, Tb) · Z[e] (Tb, K): V read transposed through its strides
  const memory::desc ad({kE, C, Tb}, kBf16, memory::dims{esV, 1, C});
  const memory::desc bd({kE, Tb, K}, kBf16, memory::dims{esZ, K, 1});
  const memory::desc cd({kE, C, K}, kF32, memory::dims{esU, K, 1});
  const int64_t gc = C / 16, gk = K / 16;
  for (int64_t t0 = 0; t0 < tl.total; t0 += Tb) {
    const int64_t rows = std::min(Tb, tl.total - t0);
    if (rows < Tb)  // unused rows of both factors are zero: they add nothing to the sums
      for (int64_t e = 0; e < kE; ++e) {
        std::memset(V + e * esV + rows * C, 0, size_t((Tb - rows) * C) * 2);
        std::memset(Z + e * esZ + rows * K, 0, size_t((Tb - rows) * K) * 2);
      }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * (gc + gk); ++i) {
      const int64_t j = i / (gc + gk), grp = i % (gc + gk), t = t0 + j, n = t / tl.per_image,
                    r = (t % tl.per_image) / tl.cols, q = t % tl.cols;
      if (grp < gc)
        input_tile(xa.group(n, grp * 16), xa.map, 2 * r - 1, 2 * q - 1, V + j * C + grp * 16, esV);
      else
        grad_tile(ga.group(n, (grp - gc) * 16), ga.map, 2 * r, 2 * q, Z + j * K + (grp - gc) * 16, esZ);
    }
    batched_gemm(cache_key("winograd_bf16/bwd_weights", Tb, C, K, t0 > 0), ad, V, bd, Z, cd, dU, t0 > 0);
  }
#pragma omp parallel for schedule(static)
  for (int64_t ci = 0; ci < C; ++ci)
    for (int64_t k = 0; k < K; k += 16)
      weight_grad_tile(dU + ci * K + k, esU, dw + (k * C + ci) * 9, C * 9, accumulate);
  if (db) {
    // Σ dy per channel, in double
#pragma omp parallel for schedule(static)
    for (int64_t kg = 0; kg < gk; ++kg) {
      double sum[16] = {};
      for (int64_t n = 0; n < s.N; ++n) {
        const bf16* g = ga.group(n, kg * 16);
        for (int64_t h = 0; h < s.H; ++h)
          for (int64_t w = 0; w < s.W; ++w)
            for (int l = 0; l < 16; ++l) sum[l] += bf16_to_f32(g[h * ga.map.sh + w * ga.map.sw + l]);
      }
      for (int l = 0; l < 16; ++l) db[kg * 16 + l] = accumulate ? float(db[kg * 16 + l] + sum[l]) : float(sum[l]);
    }
  }
}

}  // namespace vgg::cpu::winograd
