// Helpers every file of the CPU backend uses: the process-wide oneDNN engine/stream, the primitive cache,
// memory-descriptor helpers, argument checks, bf16 conversions and the bf16 compute paths. (The CpuBackend class
// itself is declared in backend.h.)
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include "../ops.h"

namespace vgg::cpu {

// ---- oneDNN context: one CPU engine and one in-order stream for the process.
dnnl::engine& engine();
dnnl::stream& stream();

// Runs f, turning dnnl::error into vgg::Error("<op>: oneDNN error: ...").
template <class F>
auto guard(const char* op, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    throw Error(strprintf("%s: oneDNN error %d: %s", op, int(e.status), e.what()));
  }
}

// ---- primitive cache: one entry per (op, shapes, params) key; a fixed-shape loop creates primitives only once.
// Entries are opaque shared_ptr<void> so each op keeps its own struct (primitive descs + primitives).
template <class T>
T& cached(const std::string& key, const std::function<T*()>& make) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<void>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    std::shared_ptr<T> p(make());
    it = cache.emplace(key, std::static_pointer_cast<void>(p)).first;
  }
  return *static_cast<T*>(it->second.get());
}

// Key builder: cache_key("conv_fwd", a, b, ...) with integers appended as "|n".
inline void key_append(std::string&) {}
template <class T, class... R>
void key_append(std::string& s, const T& v, const R&... rest) {
  if constexpr (std::is_same_v<T, Shape>) {
    for (auto d : v) s += "," + std::to_string(d);
  } else if constexpr (std::is_convertible_v<T, const char*>) {
    s += "|";
    s += v;
  } else {
    s += "|" + std::to_string(static_cast<long long>(v));
  }
  s += ";";
  key_append(s, rest...);
}
template <class... A>
std::string cache_key(const A&... a) {
  std::string s;
  key_append(s, a...);
  return s;
}

// ---- memory descriptors for our plain tensors. A Tensor is plain NCHW/NHWC (Contiguous/ChannelsLast) today;
// when tensors carry oneDNN blocked layouts (issue 6) this is the one place that maps Tensor -> memory::desc.
dnnl::memory::data_type dnnl_dtype(DType t);
dnnl::memory::dims dims_of(const Shape& s);
dnnl::memory::format_tag plain_tag(int ndim, Layout layout);
dnnl::memory::desc md_of(const Tensor& t);
dnnl::memory::desc md_plain(const Shape& s, DType dt, Layout layout);
dnnl::memory mem_of(const Tensor& t, const dnnl::memory::desc& md);
dnnl::memory mem_of(const Tensor& t);

// A scratch buffer of `nbytes` from the caching allocator, as a U8 tensor that keeps it alive.
Tensor scratch(size_t nbytes);

// A cached oneDNN matmul c = a · b (+ bias row) with optional post-ops: sum (c += ...) when accumulating, then relu.
struct MatmulEntry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};
MatmulEntry& matmul_entry(const std::string& key, const dnnl::memory::desc& a, const dnnl::memory::desc& b,
                          const dnnl::memory::desc* bias, const dnnl::memory::desc& c, bool relu, bool accumulate);

// Reorders `user` into `want` when the layouts differ (using a cached reorder) and returns the memory to use;
// `keep` holds any temporary buffer for the duration of the op.
dnnl::memory to_desc(const dnnl::memory& user, const dnnl::memory::desc& want, std::vector<Tensor>& keep);
// The reorder (cached per descriptor pair and scale) is queued, not waited for. scale != 1: to = saturate(round(from *
// scale)), rounding to nearest even (int8 inference's quantize and dequantize).
void reorder(const dnnl::memory& from, const dnnl::memory& to, float scale = 1.0f);

// ---- a convolution's sizes: x (N,C,H,W), w (K,C,R,S) -> y (N,K,P,Q), with oneDNN's strides and paddings.
struct ConvGeom {
  int64_t N, C, H, W, K, R, S, P, Q;
  dnnl::memory::dims strides, pad_l, pad_r;
};
// Checks the shapes and params (message prefixed with op) and works the sizes out (conv.cc).
ConvGeom conv_geometry(const Shape& x, const Shape& w, const Conv2dParams& p, const char* op);

// ---- checks
void check_cpu(const Tensor& t, const char* what);                 // defined and on the CPU
void check_float_activation(const Tensor& t, const char* what);    // f32 or bf16
void check_same_dtype(const Tensor& a, const Tensor& b, const char* what);
void check_4d_image(const Tensor& t, const char* what);            // defined, CPU, 4-D
void check_param(const Tensor& t, const Shape& s, const char* what);  // defined, CPU, f32, shape s
void check_same_layout(const Tensor& a, const Tensor& b, const char* what);

// Offset of logical (n,c,h,w) for a tensor of shape (N,C,H,W) stored with `layout`:
// n*s.n + s.coff(c) + h*s.h + w*s.w (for nchw8c/nchw16c, s.c is the stride of a block of `block` channels).
struct Strides4 {
  int64_t n, c, h, w;
  int block;  // channels per block (8, 16), 0 when not blocked
  int64_t coff(int64_t ch) const { return block ? (ch / block) * c + ch % block : ch * c; }
  // coff of channels 0..C-1: loops over every element look channels up here instead of dividing per element.
  std::vector<int64_t> channel_offsets(int64_t C) const {
    std::vector<int64_t> o(size_t(C > 0 ? C : 0));
    for (int64_t ch = 0; ch < C; ++ch) o[size_t(ch)] = coff(ch);
    return o;
  }
};
Strides4 strides4(const Shape& s, Layout layout);

// float <-> bfloat16, round to nearest even, NaN kept quiet. Written as a select, not a branch, so that loops over it
// vectorise (a 411 MB weight: 81 -> 65 ms on 2 threads); the same result as the branch for all 2^32 inputs.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f(begin, end) over [0, n) in one contiguous chunk per thread, chunks a multiple of 64 elements (whole cache lines
// of every array indexed alike); arrays under 32 768 elements on the calling thread.
template <class F>
void parallel_chunks(int64_t n, F&& f) {
  if (n < (int64_t(1) << 15)) return f(int64_t(0), n);
#pragma omp parallel
  {
    const int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t chunk = ((n + T - 1) / T + 63) / 64 * 64;
    const int64_t b = std::min(n, t * chunk), e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  }
}

// Compiles a serial loop a second time for AVX2 (without FMA, so the arithmetic rounds as in the baseline build),
// the copy picked at load time: the build targets baseline x86-64 (SSE2).
#define VGG_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))

// The same conversions over whole arrays, in parallel, on VGG_VECTOR_CLONES loops: as SSE2 they ran at a third of
// the memory bandwidth (a 4096×25088 weight to bf16: 80 ms on 2 threads, Xeon with AMX; AVX2: 34 ms). The same bits
// on every ISA.
void f32_to_bf16_array(const float* a, uint16_t* o, int64_t n);
void bf16_to_f32_array(const uint16_t* a, float* o, int64_t n);
void round_to_bf16_array(const float* a, float* o, int64_t n);  // o = bf16_to_f32(f32_to_bf16(a)), elementwise

// Element access for loops templated on the activation's storage type (float or bf16 bits).
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t v) { return bf16_to_f32(v); }
inline void from_f32(float& d, float v) { d = v; }
inline void from_f32(uint16_t& d, float v) { d = f32_to_bf16(v); }
// f(T{}) with T = float for f32, uint16_t for bf16.
template <class F>
void dispatch_float(DType t, F&& f) {
  if (t == DType::BF16) f(uint16_t{});
  else f(float{});
}
// Untyped element access by dtype (f32 or bf16), for loops where a per-element branch costs nothing that matters.
inline float load(const void* p, DType t, int64_t i) {
  return t == DType::F32 ? static_cast<const float*>(p)[i] : bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
inline void store(void* p, DType t, int64_t i, float v) {
  if (t == DType::F32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
}

// ---- bfloat16 activations. Parameters, gradients, BN statistics and the optimizer stay float32; convolutions and
// linear layers take bf16 activations by one of two paths, with the same numerics (bf16 products summed in fp32,
// the result rounded once to bf16):
//   Native:   oneDNN's own bf16 kernels (bf16 src/weights/dst descs, f32 bias and weight gradients), on CPUs with
//             bf16 instructions (avx512_core_bf16, AMX), or wherever oneDNN 2.6 has them (avx512_core on) with
//             VGGNET_CPU_BF16=native. cpu_isa_info().bf16 says so (native/cpu/backend.cc: why not on avx512_core).
//   Emulated: every other CPU (AVX2, avx512_core), or VGGNET_CPU_BF16=emulate: the bf16 operands widened to f32 (exact), the f32
//             weights rounded to bf16 and back, the f32 primitive, its output rounded to bf16. Same rounding as bf16
//             hardware, no speed-up (slower than fp32: the conversions are extra passes).
// Pools, BN, ReLU and dropout compute in float and read/write bf16 on both paths.
enum class Bf16Path { None, Native, Emulated };
Bf16Path bf16_path(DType activation);
// What an op computes on: the activation itself, or (emulated) a widened f32 copy in the same layout.
Tensor bf16_operand(const Tensor& act, Bf16Path path);
// The weights an op computes with: w (None), a bf16 copy (Native), or w rounded to bf16 and back in f32 (Emulated).
Tensor bf16_weights(const Tensor& w, Bf16Path path);
// The op's output in the activation dtype: y, or (emulated) y rounded to a bf16 copy.
Tensor bf16_result(const Tensor& y, Bf16Path path);

// ---- prepared weights. bf16_weights keeps what it makes on the weight's Storage (Storage::derived), tagged with
// the weight's version, and hands the same copy back while the weight is unchanged: a bf16 step converts each weight
// once instead of in every op that reads it (conv forward and backward-data, a linear layer's forward), and SGD
// writes the copy as it updates the weight (sgd.cc), so the next forward converts nothing. Any other write marks the
// weight (Tensor::mark_written) and the next use converts again. The copy lives as long as the weight: 10 % of the
// f32 weights' size in bf16 for the convolutions, plus the classifier's (a VGG16's: 248 MB).
struct PreparedWeight {
  uint64_t version;  // the weight's version it was made from
  Bf16Path path;
  Tensor t;          // bf16 (Native) or bf16-rounded f32 (Emulated), the weight's shape
};
// The prepared copy of w that an update of w may write along (it is current and held by nothing but the cache),
// or null. The caller writes it and sets its version to w's after marking w written.
PreparedWeight* prepared_for_update(const Tensor& w);

// PyTorch's adaptive average pool windows [floor(i*in/out), ceil((i+1)*in/out)) of every output row and column,
// worked out once per call rather than per plane.
struct AdaptiveWindows {
  std::vector<int64_t> h0, h1, w0, w1;
  AdaptiveWindows() = default;
  AdaptiveWindows(int64_t H, int64_t W, int64_t oh, int64_t ow) {
    for (int64_t i = 0; i < oh; ++i) h0.push_back(i * H / oh), h1.push_back(((i + 1) * H + oh - 1) / oh);
    for (int64_t j = 0; j < ow; ++j) w0.push_back(j * W / ow), w1.push_back(((j + 1) * W + ow - 1) / ow);
  }
};
// One plane's adaptive average pool: each output the sum of its window's inputs from 0, in row-major order, divided
// by the window's area (the arithmetic every CPU path of the pool shares, so that they agree bit for bit).
inline void adaptive_pool_plane(const float* x, int64_t sh, int64_t sw, float* y, const AdaptiveWindows& win) {
  const int64_t oh = int64_t(win.h0.size()), ow = int64_t(win.w0.size());
  for (int64_t i = 0; i < oh; ++i) {
    const int64_t h0 = win.h0[size_t(i)], h1 = win.h1[size_t(i)];
    for (int64_t j = 0; j < ow; ++j) {
      const int64_t w0 = win.w0[size_t(j)], w1 = win.w1[size_t(j)];
      float acc = 0;
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) acc += x[h * sh + w * sw];
      y[i * ow + j] = acc / float((h1 - h0) * (w1 - w0));
    }
  }
}

// ---- the average pool folded into a weight (cpu_adaptive_pool_fold, pool.cc), kept on the weight's Storage beside
// its prepared copy in the same way: handed back while the weight is unchanged, and rewritten by SGD from the updated
// weight in the same pass (training folds the pool into the first classifier layer every step: one read of that
// layer's weight, 205-411 MB, instead of two).
struct FoldPlan {  // how to fold one geometry: planes of Q pooled inputs each to M map positions
  int64_t C = 0, H = 0, W = 0;
  int oh = 0, ow = 0;
  int64_t Q = 0, M = 0;
  std::vector<float> pt;  // P transposed (M × Q); on AVX-512 each row padded to 64 (fold_planes_avx512)
  bool avx512 = false;
  // AVX-512 on maps of 3-4 rows, pool rows of at most 8 (fold_planes_separable): P = Ph ⊗ Pw, each map row the
  // sum of the pool rows covering it times 1/height (rows[y]), then each output a sum of those rows' entries times
  // 1/width, gathered by permutes (cols).
  bool separable = false;
  struct RowTerm {
    int i;
    float scale;
  };
  std::vector<RowTerm> rows[4];
  int col_terms = 0;
  std::vector<int32_t> col_idx;     // [term][16]: the entry y·8 + j of map row y's sums for output y·W + x
  std::vector<uint16_t> col_mask;   // [term]: the outputs with that many terms
  std::vector<float> col_scale;     // [term][16]: 1/width of pool column j
  bool same_geometry(int64_t c, int64_t h, int64_t w, int o_h, int o_w) const {
    return C == c && H == h && W == w && oh == o_h && ow == o_w;
  }
  // Whether run() folds any range of planes by itself (else: oneDNN's sgemm over all of them, in fold_all).
  bool by_planes() const { return avx512 || M == 1; }
  void run(const float* w, float* out, int64_t planes) const;  // serial, by_planes() only
};
struct FoldedWeight {
  uint64_t version;    // the weight's version it was made from
  FoldPlan plan;
  Tensor t;            // (out, C·H·W) f32
  uint64_t t_version;  // t's own version then: a write into t makes it stale too
};
// The fold of w that an update of w may rewrite along (current, by planes, held by nothing but the cache), or null.
// The caller writes t, marks t written and sets version and t_version after marking w written.
FoldedWeight* folded_for_update(const Tensor& w);
// The fold cached on w for this geometry when current, else null; store_fold keeps f on w.
std::shared_ptr<FoldedWeight> cached_fold(const Tensor& w, int64_t C, int64_t H, int64_t W, int oh, int ow);
void store_fold(const Tensor& w, std::shared_ptr<FoldedWeight> f);

// ---- a gradient given as an adaptive pool's input (ops.h, PooledGrad): SGD pools it back block by block as it
// updates the weight (sgd.cc), so the full gradient is neither written in backward nor read in the step.
struct PoolPlan {  // contiguous H×W planes pooled to oh×ow ones, as adaptive_pool_plane computes them
  int64_t H = 0, W = 0, M = 0, Q = 0;  // M = H·W inputs, Q = oh·ow outputs per plane
  AdaptiveWindows win;
  // AVX-512 (M ≤ 16, H ≤ oh, W ≤ ow, Q ≤ 64): each vector of sixteen outputs sums up to four permutes of the
  // plane's one vector, in the window's order, times 1/area (areas 1, 2 or 4 there: the same bits as dividing).
  // Per output vector v and term k < terms[v]: the input lane (idx) and which outputs have a k-th term (mask).
  bool avx512 = false;
  int terms[4] = {};
  std::vector<int32_t> idx;   // [v][k][16]
  std::vector<uint16_t> mask; // [v][k]
  std::vector<float> scale;   // [v][16]: 1/area
  void run(const float* in, float* out, int64_t planes) const;  // serial
};
PoolPlan make_pool_plan(int64_t H, int64_t W, int oh, int ow);

}  // namespace vgg::cpu
