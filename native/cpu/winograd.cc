// Winograd F(4×4, 3×3) on AVX2 (see winograd.h). The transforms (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2015, on the interpolation points 0, ±5/8, ±3/2, ∞ below):
//   Y  = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A            forward, per 6×6 input tile d and 3×3 kernel g
//   dg = Gᵀ [ Σ_tiles (Bᵀ d B) ⊙ (A dY Aᵀ) ] G      weight gradient, dY the tile's 4×4 output gradient
// Every tile transform works on 8 channels at once (one AVX2 register per tile element): in nchw8c and nchw16c an
// element's 8 channels of a group are contiguous. The products over channels are one batched oneDNN matmul per
// chunk of tiles (36 GEMMs: element e of every tile), the chunk small enough that its transformed tiles stay in
// cache between the transforms and the matmul.
#include "winograd.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernel_log.h"

namespace vgg::cpu::winograd {

using dnnl::memory;
using tag = memory::format_tag;

#define VGG_AVX2 __attribute__((target("avx2,fma")))
#define VGG_AVX2_NOINLINE __attribute__((target("avx2,fma"), noinline))

bool cpu_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

namespace {

constexpr int64_t kElems = 36;  // a transformed tile: 6×6
// The 36 elements of a transformed tile are stored apart, one matrix each. When that distance is a multiple of
// 4 KiB (it often is: 128 tiles × 512 channels × 4 bytes) all 36 land in the same cache sets and evict each other
// between a tile's stores; one extra cache line per matrix spreads them.
int64_t elem_stride(int64_t floats) { return floats + 16; }
constexpr const char* kImpl = "wino_4x3:avx2 (vggnet)";

// ---- one-dimensional transforms on 8-channel vectors; `is`/`os` are the element strides of input and output.
// Toom-Cook on the interpolation points 0, ±PA, ±PB and ∞: with M(x) = x (x² - a²)(x² - b²), Bᵀ's rows are the
// coefficients of M(x)/(x - p) for each finite point p and of M(x) itself; G's rows are (1, p, p²) / Π_{q≠p} (p - q)
// and (0, 0, 1); Aᵀ's columns are (1, p, p², p³) and (0, 0, 0, 1). Lavin & Gray's points a = 1, b = 2 gave 3-4× the
// rounding error of a = 5/8, b = 3/2 (the points oneDNN's jit_wino_4x3 uses; measured against oneDNN's direct
// kernels on the shapes of test/ops/cpu_winograd.test.ts: forward 3.6-7.6e-6 against 1.1-1.9e-6 of the max-abs;
// a = 1/2, b = 2 and a = 3/4, b = 3/2 fell between). Every power of these is exact in float32.
constexpr double PA = 0.625, PB = 1.5;
constexpr double A2 = PA * PA, B2 = PB * PB, FA = 2 * A2 * (A2 - B2), FB = 2 * B2 * (B2 - A2);
// Bᵀ (6 -> 6): the input tile.
VGG_AVX2 inline void bt(const __m256* d, int is, __m256* t, int os) {
  const __m256 a = _mm256_set1_ps(float(PA)), b = _mm256_set1_ps(float(PB)), a2 = _mm256_set1_ps(float(A2)),
               b2 = _mm256_set1_ps(float(B2)), a2b2 = _mm256_set1_ps(float(A2 * B2)), s2 = _mm256_set1_ps(float(A2 + B2));
  const __m256 d0 = d[0], d1 = d[is], d2 = d[2 * is], d3 = d[3 * is], d4 = d[4 * is], d5 = d[5 * is];
  t[0] = _mm256_fmadd_ps(a2b2, d0, _mm256_fnmadd_ps(s2, d2, d4));
  t[os] = _mm256_fnmadd_ps(b2, _mm256_fmadd_ps(a, d1, d2), _mm256_fmadd_ps(a, d3, d4));
  t[2 * os] = _mm256_fmadd_ps(b2, _mm256_fmsub_ps(a, d1, d2), _mm256_fnmadd_ps(a, d3, d4));
  t[3 * os] = _mm256_fnmadd_ps(a2, _mm256_fmadd_ps(b, d1, d2), _mm256_fmadd_ps(b, d3, d4));
  t[4 * os] = _mm256_fmadd_ps(a2, _mm256_fmsub_ps(b, d1, d2), _mm256_fnmadd_ps(b, d3, d4));
  t[5 * os] = _mm256_fmadd_ps(a2b2, d1, _mm256_fnmadd_ps(s2, d3, d5));
}
// Aᵀ (6 -> 4): back from the transformed domain.
VGG_AVX2 inline void at(const __m256* m, int is, __m256* o, int os) {
  const __m256 a = _mm256_set1_ps(float(PA)), b = _mm256_set1_ps(float(PB)), a2 = _mm256_set1_ps(float(A2)),
               b2 = _mm256_set1_ps(float(B2)), a3 = _mm256_set1_ps(float(A2 * PA)), b3 = _mm256_set1_ps(float(B2 * PB));
  const __m256 s12 = _mm256_add_ps(m[is], m[2 * is]), d12 = _mm256_sub_ps(m[is], m[2 * is]);
  const __m256 s34 = _mm256_add_ps(m[3 * is], m[4 * is]), d34 = _mm256_sub_ps(m[3 * is], m[4 * is]);
  o[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
  o[os] = _mm256_fmadd_ps(b, d34, _mm256_mul_ps(a, d12));
  o[2 * os] = _mm256_fmadd_ps(b2, s34, _mm256_mul_ps(a2, s12));
  o[3 * os] = _mm256_add_ps(_mm256_fmadd_ps(b3, d34, _mm256_mul_ps(a3, d12)), m[5 * is]);
}
// A (4 -> 6): an output-gradient tile into the transformed domain.
VGG_AVX2 inline void a(const __m256* y, int is, __m256* z, int os) {
  const __m256 pa = _mm256_set1_ps(float(PA)), pb = _mm256_set1_ps(float(PB)), a2 = _mm256_set1_ps(float(A2)),
               b2 = _mm256_set1_ps(float(B2));
  const __m256 y0 = y[0], y1 = y[is], y2 = y[2 * is], y3 = y[3 * is];
  const __m256 ea = _mm256_fmadd_ps(a2, y2, y0), fa = _mm256_mul_ps(pa, _mm256_fmadd_ps(a2, y3, y1));
  const __m256 eb = _mm256_fmadd_ps(b2, y2, y0), fb = _mm256_mul_ps(pb, _mm256_fmadd_ps(b2, y3, y1));
  z[0] = y0;
  z[os] = _mm256_add_ps(ea, fa);
  z[2 * os] = _mm256_sub_ps(ea, fa);
  z[3 * os] = _mm256_add_ps(eb, fb);
  z[4 * os] = _mm256_sub_ps(eb, fb);
  z[5 * os] = y3;
}

// One 8-channel group of one tile. `g` points at the group's (0,0) element of one image; sh/sw are the element
// strides of rows and columns; (r0, c0) is the tile's top-left in that map, which may lie in the padding.
struct Map {
  int64_t sh, sw, rows, cols;
};

// V[e] (stride `es` between elements) = Bᵀ d B of the 6×6 patch at (r0, c0), zeros outside the map.
VGG_AVX2_NOINLINE void input_tile(const float* g, const Map& m, int64_t r0, int64_t c0, float* v, int64_t es) {
  __m256 d[kElems], t[kElems];
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 6; ++c) {
      const int64_t h = r0 + r, w = c0 + c;
      d[r * 6 + c] = h >= 0 && h < m.rows && w >= 0 && w < m.cols ? _mm256_loadu_ps(g + h * m.sh + w * m.sw)
                                                                  : _mm256_setzero_ps();
    }
  for (int c = 0; c < 6; ++c) bt(d + c, 6, t + c, 6);
  for (int r = 0; r < 6; ++r) bt(t + r * 6, 1, d + r * 6, 1);
  for (int e = 0; e < kElems; ++e) _mm256_storeu_ps(v + e * es, d[e]);
}

// The 4×4 outputs Aᵀ M A (+ bias, ReLU) of one tile into the map at (r0, c0), clipped to the map.
VGG_AVX2_NOINLINE void output_tile(const float* mt, int64_t es, const float* bias, bool relu, float* g, const Map& m,
                                   int64_t r0, int64_t c0) {
  __m256 x[kElems], t[24], o[16];
  for (int e = 0; e < kElems; ++e) x[e] = _mm256_loadu_ps(mt + e * es);
  for (int c = 0; c < 6; ++c) at(x + c, 6, t + c, 6);
  for (int r = 0; r < 4; ++r) at(t + r * 6, 1, o + r * 4, 1);
  const __m256 b = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  for (int r = 0; r < 4 && r0 + r < m.rows; ++r)
    for (int c = 0; c < 4 && c0 + c < m.cols; ++c) {
      __m256 v = _mm256_add_ps(o[r * 4 + c], b);
      if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      _mm256_storeu_ps(g + (r0 + r) * m.sh + (c0 + c) * m.sw, v);
    }
}

// Z[e] = A dY Aᵀ of the 4×4 output-gradient tile at (r0, c0), zeros outside the map.
VGG_AVX2_NOINLINE void grad_tile(const float* g, const Map& m, int64_t r0, int64_t c0, float* z, int64_t es) {
  __m256 d[16], t[24], u[kElems];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      const int64_t h = r0 + r, w = c0 + c;
      d[r * 4 + c] = h < m.rows && w < m.cols ? _mm256_loadu_ps(g + h * m.sh + w * m.sw) : _mm256_setzero_ps();
    }
  for (int c = 0; c < 4; ++c) a(d + c, 4, t + c, 4);
  for (int r = 0; r < 6; ++r) a(t + r * 4, 1, u + r * 6, 1);
  for (int e = 0; e < kElems; ++e) _mm256_storeu_ps(z + e * es, u[e]);
}

// ---- weights: 8 output channels at a time, in registers like the maps.
// G (3 -> 6)
VGG_AVX2 inline void g3(const __m256* k, int is, __m256* u, int os) {
  const __m256 pa = _mm256_set1_ps(float(PA)), pb = _mm256_set1_ps(float(PB)), a2 = _mm256_set1_ps(float(A2)),
               b2 = _mm256_set1_ps(float(B2)), r0 = _mm256_set1_ps(float(1 / (A2 * B2))),
               ra = _mm256_set1_ps(float(1 / FA)), rb = _mm256_set1_ps(float(1 / FB));
  const __m256 k0 = k[0], k1 = k[is], k2 = k[2 * is];
  const __m256 ea = _mm256_fmadd_ps(a2, k2, k0), fa = _mm256_mul_ps(pa, k1);
  const __m256 eb = _mm256_fmadd_ps(b2, k2, k0), fb = _mm256_mul_ps(pb, k1);
  u[0] = _mm256_mul_ps(k0, r0);
  u[os] = _mm256_mul_ps(_mm256_add_ps(ea, fa), ra);
  u[2 * os] = _mm256_mul_ps(_mm256_sub_ps(ea, fa), ra);
  u[3 * os] = _mm256_mul_ps(_mm256_add_ps(eb, fb), rb);
  u[4 * os] = _mm256_mul_ps(_mm256_sub_ps(eb, fb), rb);
  u[5 * os] = k2;
}
// Gᵀ (6 -> 3)
VGG_AVX2 inline void gt6(const __m256* u, int is, __m256* k, int os) {
  const __m256 pa = _mm256_set1_ps(float(PA)), pb = _mm256_set1_ps(float(PB)), a2 = _mm256_set1_ps(float(A2)),
               b2 = _mm256_set1_ps(float(B2)), r0 = _mm256_set1_ps(float(1 / (A2 * B2))),
               ra = _mm256_set1_ps(float(1 / FA)), rb = _mm256_set1_ps(float(1 / FB));
  const __m256 sa = _mm256_mul_ps(_mm256_add_ps(u[is], u[2 * is]), ra), da = _mm256_mul_ps(_mm256_sub_ps(u[is], u[2 * is]), ra);
  const __m256 sb = _mm256_mul_ps(_mm256_add_ps(u[3 * is], u[4 * is]), rb), db = _mm256_mul_ps(_mm256_sub_ps(u[3 * is], u[4 * is]), rb);
  k[0] = _mm256_fmadd_ps(u[0], r0, _mm256_add_ps(sa, sb));
  k[os] = _mm256_fmadd_ps(pa, da, _mm256_mul_ps(pb, db));
  k[2 * os] = _mm256_add_ps(_mm256_fmadd_ps(a2, sa, _mm256_mul_ps(b2, sb)), u[5 * is]);
}

// U[e][i][o..o+7] = (G k Gᵀ)[e] for kernels k 9 floats apart at `src`, `step` floats between consecutive o, reversed
// (the 180° rotation of backward-data) when `flip`.
VGG_AVX2_NOINLINE void weight_tile(const float* src, int64_t step, bool flip, float* u, int64_t es) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(step)));
  __m256 k[9], t[18], v[kElems];
  for (int j = 0; j < 9; ++j) k[j] = _mm256_i32gather_ps(src + (flip ? 8 - j : j), idx, 4);
  for (int c = 0; c < 3; ++c) g3(k + c, 3, t + c, 3);  // columns: t (6×3)
  for (int r = 0; r < 6; ++r) g3(t + r * 3, 1, v + r * 6, 1);
  for (int e = 0; e < kElems; ++e) _mm256_storeu_ps(u + e * es, v[e]);
}

// dw[k..k+7, `step` floats apart][c] (+)= Gᵀ dU G for dU[e][c][k..k+7] at u + e·es.
VGG_AVX2_NOINLINE void weight_grad_tile(const float* u, int64_t es, float* dst, int64_t step, bool accumulate) {
  __m256 x[kElems], t[18], k[9];
  for (int e = 0; e < kElems; ++e) x[e] = _mm256_loadu_ps(u + e * es);
  for (int r = 0; r < 6; ++r) gt6(x + r * 6, 1, t + r * 3, 1);  // rows: t (6×3)
  for (int c = 0; c < 3; ++c) gt6(t + c, 3, k + c, 3);
  alignas(32) float out[9][8];
  for (int j = 0; j < 9; ++j) _mm256_store_ps(out[j], k[j]);
  for (int l = 0; l < 8; ++l)
    for (int j = 0; j < 9; ++j) dst[l * step + j] = accumulate ? dst[l * step + j] + out[j][l] : out[j][l];
}

// U[e][i][o] (element stride es) = (G k Gᵀ)[e] for the layer's kernels w (K,C,3,3): forward takes i = c, o = k and
// k = w[k][c]; backward-data takes i = k, o = c and k = w[k][c] rotated by 180°, the transposed convolution.
void transform_weights(const float* w, int64_t K, int64_t C, bool backward_data, float* U, int64_t es) {
  const int64_t Cin = backward_data ? K : C, Cout = backward_data ? C : K;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < Cin; ++i)
    for (int64_t o = 0; o < Cout; o += 8)
      weight_tile(backward_data ? w + (i * C + o) * 9 : w + (o * C + i) * 9, backward_data ? 9 : C * 9, backward_data,
                  U + i * Cout + o, es);
}

struct Tiles {
  int64_t rows, cols, per_image, total;  // 4×4 tiles over an H×W output map, N images
  Tiles(int64_t N, int64_t H, int64_t W)
      : rows((H + 3) / 4), cols((W + 3) / 4), per_image(rows * cols), total(N * per_image) {}
};

// Tiles per chunk: the chunk's transformed inputs and products (36 floats per tile and channel) about 8 MB, which
// stays in the last-level cache between the transforms and the matmul; at least 128 tiles, so each of the 36 GEMMs
// has rows enough to run near its peak and the transformed weights are not read again for every small chunk.
int64_t chunk_tiles(int64_t cin, int64_t cout, int64_t total) {
  static const int64_t bytes = [] {
    const char* env = std::getenv("VGGNET_CPU_WINOGRAD_CHUNK_MB");  // for measuring the choice, not a user knob
    return (env ? std::max<int64_t>(1, std::atoll(env)) : 8) << 20;
  }();
  return std::min(total, std::max<int64_t>(128, bytes / (kElems * 4 * (cin + cout))));
}

// 36 GEMMs c[e] = a[e] · b[e] as one oneDNN matmul (batch dimension e); a may be a transposed view.
void batched_gemm(const std::string& key, const memory::desc& a, const float* ap, const memory::desc& b,
                  const float* bp, const memory::desc& c, float* cp, bool accumulate) {
  auto& e = matmul_entry(key, a, b, nullptr, c, false, accumulate);
  e.prim.execute(stream(), {{DNNL_ARG_SRC, memory(a, engine(), const_cast<float*>(ap))},
                            {DNNL_ARG_WEIGHTS, memory(b, engine(), const_cast<float*>(bp))},
                            {DNNL_ARG_DST, memory(c, engine(), cp)}});
  stream().wait();
}

struct Act {
  float* base;
  Strides4 s;
  Map map;
  Act(const Tensor& t)
      : base(static_cast<float*>(const_cast<void*>(t.raw()))), s(strides4(t.shape, t.layout)),
        map{s.h, s.w, t.shape[2], t.shape[3]} {}
  float* group(int64_t n, int64_t c0) const { return base + n * s.n + s.coff(c0); }
};

// out = conv3x3(in, U) (+ bias, ReLU) for transformed weights U [36][Cin][Cout]; in and out share H×W.
void convolve(const Tensor& in, int64_t Cin, const float* U, int64_t Cout, const float* bias, bool relu, Tensor& out) {
  const int64_t esU = elem_stride(Cin * Cout);
  const Act x(in), y(out);
  const Tiles tl(in.shape[0], in.shape[2], in.shape[3]);
  const int64_t Tb = chunk_tiles(Cin, Cout, tl.total);
  const int64_t esV = elem_stride(Tb * Cin), esM = elem_stride(Tb * Cout);
  Tensor vbuf = scratch(size_t(kElems * esV) * 4), mbuf = scratch(size_t(kElems * esM) * 4);
  float* V = static_cast<float*>(vbuf.raw());
  float* M = static_cast<float*>(mbuf.raw());
  const memory::desc a({kElems, Tb, Cin}, memory::data_type::f32, memory::dims{esV, Cin, 1});
  const memory::desc b({kElems, Cin, Cout}, memory::data_type::f32, memory::dims{esU, Cout, 1});
  const memory::desc c({kElems, Tb, Cout}, memory::data_type::f32, memory::dims{esM, Cout, 1});
  const std::string key = cache_key("winograd/conv", Tb, Cin, Cout);
  const int64_t gin = Cin / 8, gout = Cout / 8;
  for (int64_t t0 = 0; t0 < tl.total; t0 += Tb) {
    const int64_t rows = std::min(Tb, tl.total - t0);
    if (rows < Tb)  // the last chunk's unused rows: defined values, their products are never read
      for (int64_t e = 0; e < kElems; ++e) std::memset(V + e * esV + rows * Cin, 0, size_t((Tb - rows) * Cin) * 4);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * gin; ++i) {
      const int64_t t = t0 + i / gin, cg = i % gin, n = t / tl.per_image, r = (t % tl.per_image) / tl.cols,
                    q = t % tl.cols;
      input_tile(x.group(n, cg * 8), x.map, 4 * r - 1, 4 * q - 1, V + (i / gin) * Cin + cg * 8, esV);
    }
    batched_gemm(key, a, V, b, U, c, M, false);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * gout; ++i) {
      const int64_t t = t0 + i / gout, kg = i % gout, n = t / tl.per_image, r = (t % tl.per_image) / tl.cols,
                    q = t % tl.cols;
      output_tile(M + (i / gout) * Cout + kg * 8, esM, bias ? bias + kg * 8 : nullptr, relu, y.group(n, kg * 8),
                  y.map, 4 * r, 4 * q);
    }
  }
}

}  // namespace

void forward(const Shape3x3& s, const Tensor& x, const float* w, const float* b, bool relu, Tensor& y) {
  KernelTimer timer("conv2d_forward", kImpl);
  Tensor u = scratch(size_t(kElems * elem_stride(s.C * s.K)) * 4);
  transform_weights(w, s.K, s.C, false, static_cast<float*>(u.raw()), elem_stride(s.C * s.K));
  convolve(x, s.C, static_cast<const float*>(u.raw()), s.K, b, relu, y);
}

void backward_data(const Shape3x3& s, const Tensor& dy, const float* w, Tensor& dx) {
  KernelTimer timer("conv2d_backward_data", kImpl);
  Tensor u = scratch(size_t(kElems * elem_stride(s.C * s.K)) * 4);
  transform_weights(w, s.K, s.C, true, static_cast<float*>(u.raw()), elem_stride(s.C * s.K));
  convolve(dy, s.K, static_cast<const float*>(u.raw()), s.C, nullptr, false, dx);
}

void backward_weights(const Shape3x3& s, const Tensor& x, const Tensor& dy, float* dw, float* db, bool accumulate) {
  KernelTimer timer("conv2d_backward_weights", kImpl);
  const Act xa(x), ga(dy);
  const Tiles tl(s.N, s.H, s.W);
  const int64_t C = s.C, K = s.K, Tb = chunk_tiles(C, K, tl.total);
  const int64_t esV = elem_stride(Tb * C), esZ = elem_stride(Tb * K), esU = elem_stride(C * K);
  Tensor vbuf = scratch(size_t(kElems * esV) * 4), zbuf = scratch(size_t(kElems * esZ) * 4),
         ubuf = scratch(size_t(kElems * esU) * 4);
  float* V = static_cast<float*>(vbuf.raw());
  float* Z = static_cast<float*>(zbuf.raw());
  float* dU = static_cast<float*>(ubuf.raw());
  // dU[e] (C, K) += V[e]ᵀ (C, Tb) · Z[e] (Tb, K): V read transposed through its strides
  const memory::desc a({kElems, C, Tb}, memory::data_type::f32, memory::dims{esV, 1, C});
  const memory::desc b({kElems, Tb, K}, memory::data_type::f32, memory::dims{esZ, K, 1});
  const memory::desc c({kElems, C, K}, memory::data_type::f32, memory::dims{esU, K, 1});
  const int64_t gc = C / 8, gk = K / 8;
  for (int64_t t0 = 0; t0 < tl.total; t0 += Tb) {
    const int64_t rows = std::min(Tb, tl.total - t0);
    if (rows < Tb)  // unused rows of both factors are zero: they add nothing to the sums
      for (int64_t e = 0; e < kElems; ++e) {
        std::memset(V + e * esV + rows * C, 0, size_t((Tb - rows) * C) * 4);
        std::memset(Z + e * esZ + rows * K, 0, size_t((Tb - rows) * K) * 4);
      }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * (gc + gk); ++i) {
      const int64_t j = i / (gc + gk), grp = i % (gc + gk), t = t0 + j, n = t / tl.per_image,
                    r = (t % tl.per_image) / tl.cols, q = t % tl.cols;
      if (grp < gc)
        input_tile(xa.group(n, grp * 8), xa.map, 4 * r - 1, 4 * q - 1, V + j * C + grp * 8, esV);
      else
        grad_tile(ga.group(n, (grp - gc) * 8), ga.map, 4 * r, 4 * q, Z + j * K + (grp - gc) * 8, esZ);
    }
    batched_gemm(cache_key("winograd/bwd_weights", Tb, C, K, t0 > 0), a, V, b, Z, c, dU, t0 > 0);
  }
#pragma omp parallel for schedule(static)
  for (int64_t ci = 0; ci < C; ++ci)
    for (int64_t k = 0; k < K; k += 8) weight_grad_tile(dU + ci * K + k, esU, dw + (k * C + ci) * 9, C * 9, accumulate);
  if (db) {
    // Σ dy per channel, 8 channels at a time along each group's contiguous positions, in double
#pragma omp parallel for schedule(static)
    for (int64_t kg = 0; kg < gk; ++kg) {
      double sum[8] = {};
      for (int64_t n = 0; n < s.N; ++n) {
        const float* g = ga.group(n, kg * 8);
        for (int64_t h = 0; h < s.H; ++h)
          for (int64_t w = 0; w < s.W; ++w)
            for (int l = 0; l < 8; ++l) sum[l] += g[h * ga.map.sh + w * ga.map.sw + l];
      }
      for (int l = 0; l < 8; ++l) db[kg * 8 + l] = accumulate ? float(db[kg * 8 + l] + sum[l]) : float(sum[l]);
    }
  }
}

}  // namespace vgg::cpu::winograd
