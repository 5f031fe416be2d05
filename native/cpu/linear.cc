// linear on oneDNN matmul (plain row-major operands; the transposes are expressed as strides).
//   forward          y (N,M) = x (N,K) · w(M,K)^T + b (M)        [relu post-op when asked]
//   backward data    dx (N,K) = dy (N,M) · w (M,K)
//   backward weights dw (M,K) (+)= dy^T (M,N) · x (N,K)  [sum post-op when accumulating];  db (M) (+)= sum_n dy
// bf16 activations (Bf16Path, cpu_common.h): the matmuls run in the compute dtype `cdt` of the operands (bf16 with
// bf16 weights on the native path, widened f32 with bf16-rounded f32 weights when emulated); bias, dw and db are f32.
// Forward and backward data take w as float32 (converted per call) or prepared by linear_weights (ops.h).
#include <immintrin.h>

#include <cstdint>

#include "backend.h"
#include "kernel_log.h"

namespace vgg::cpu {

using dnnl::memory;
using tag = memory::format_tag;

namespace {

memory::desc md(const memory::dims& d, DType dt, tag t) { return memory::desc(d, dnnl_dtype(dt), t); }

// kSgemmNote: the f32 backward passes run on oneDNN's sgemm (its JIT GEMM) rather than its matmul primitive, whose
// brgemm kernel took 1.7-2.2x the CPU time on the classifier's shapes (batch 8: dx = dy·W and dW = dy^T·x over a
// 4096×25088 weight, avx512_core, 2 threads); the matmul stays for the forward (as fast there) and for bf16.

// w: float32, or (prepared) the dtype this CPU computes activations on `path` with, as linear_weights made it.
void check_weight_dtype(const char* op, const Tensor& w, Bf16Path path, bool prepared) {
  if (!prepared) return check_dtype(w, DType::F32, strprintf("%s: weight", op).c_str());
  const DType want = path == Bf16Path::Native ? DType::BF16 : DType::F32;
  VGG_CHECK(w.dtype == want, "%s: prepared weight is %s, this CPU computes these activations with %s weights (%s)",
            op, dtype_name(w.dtype), dtype_name(want), "prepare them with linearWeights for the activations' dtype");
}
// The weights an op computes with: w converted now, or w itself when linear_weights already made it.
Tensor compute_weights(const Tensor& w, Bf16Path path, bool prepared) { return prepared ? w : bf16_weights(w, path); }

// ---- the weight gradient at small batches. dW (M,K) = dy^T · x is an outer-product sum over N ≤ 16 rows: a pass
// that writes M·K floats (the 4096×25088 classifier layer: 411 MB) from N·(M+K) inputs, bound by that write.
// oneDNN 2.6 runs it in bf16 at ~14 GB/s (its avx512_core_bf16 matmul: it takes no AMX kernel for this one);
// these loops keep x in L2, work out two rows of dW at a time in registers and stream them out past the caches.
// Where the CPU has bf16 dot products (avx512_core_bf16, AMX), x stays bf16, its rows interleaved in pairs, and each
// vdpbf16ps adds two rows' products: half the instructions and half the x the f32 loop reads (below: 4096×25088,
// batch 8, 26 -> 16.5 ms, AMD Zen 4, 2 threads). Elsewhere (avx512_core) x is widened to f32 and each dy value
// broadcast: the classifier's three weight gradients in a vgg16 b8 64² bf16 step 36 -> 23 ms against oneDNN (Xeon
// with AMX, 2 threads). For bf16 activations only: on float32 ones oneDNN's sgemm is as fast (21 against 23 ms).
// Batches up to 8 for the f32 loop: at 16 x's rows (1.6 MB as floats) no longer stay in L2 and it lost to oneDNN
// (vgg11 b16 32²: 52 against 38 ms); up to 16 for the bf16 one, whose x (0.8 MB at 16) still fits (batch 16: 30 ->
// 16 ms on the Zen 4). AVX-512 only; larger batches or other CPUs go to oneDNN.
constexpr int64_t kSkinnyMaxBatch = 8, kSkinnyMaxBatchBf16 = 16;
bool use_skinny_weight_grad(int64_t N, DType activation) {
  static const bool avx512 = cpu_isa_info().avx512;
  static const int64_t most = cpu_isa_info().bf16_dot ? kSkinnyMaxBatchBf16 : kSkinnyMaxBatch;
  return avx512 && activation == DType::BF16 && N >= 1 && N <= most;
}

// Stores a row's 16 columns at o (+= with accumulate; masked at K's tail; streamed past the caches when asked).
__attribute__((target("avx512f"))) inline void store_row(float* o, __m512 v, __mmask16 mask, bool accumulate,
                                                         bool stream_out) {
  if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, o));
  if (stream_out && mask == 0xffff) _mm512_stream_ps(o, v);
  else _mm512_mask_storeu_ps(o, mask, v);
}

// xf (N,K) f32, c0/c1 the two dy columns (N values each) of rows m and m+1 (o1 null: one row).
__attribute__((target("avx512f"))) void skinny_rows(const float* xf, int64_t N, int64_t K, const float* c0,
                                                    const float* c1, float* o0, float* o1, bool accumulate,
                                                    bool stream_out) {
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t n = 0; n < N; ++n) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, xf + n * K + k);
      acc0 = _mm512_fmadd_ps(_mm512_set1_ps(c0[n]), xv, acc0);
      acc1 = _mm512_fmadd_ps(_mm512_set1_ps(c1[n]), xv, acc1);
    }
    store_row(o0 + k, acc0, mask, accumulate, stream_out);
    if (o1) store_row(o1 + k, acc1, mask, accumulate, stream_out);
  }
}

// The bf16 form. xp: x packed for vdpbf16ps, K in blocks of 16 columns, each block P vectors, dword i of vector p
// holding (x[2p][k+i], x[2p+1][k+i]) (a zero row pads an odd N, zero columns K's tail); c0/c1 the matching pairs of
// dy values of rows m and m+1, each dword broadcast whole. P fixed (1-8), so the broadcasts stay in registers.
template <int P>
__attribute__((target("avx512f,avx512bf16"))) void skinny_rows_bf16(const uint32_t* xp, int64_t K, const uint32_t* c0,
                                                                   const uint32_t* c1, float* o0, float* o1,
                                                                   bool accumulate, bool stream_out) {
  __m512bh b0[P], b1[P];
  for (int p = 0; p < P; ++p) {
    b0[p] = (__m512bh)_mm512_set1_epi32(int(c0[p]));
    b1[p] = (__m512bh)_mm512_set1_epi32(int(c1[p]));
  }
  for (int64_t k = 0; k < K; k += 16, xp += P * 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int p = 0; p < P; ++p) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + p * 16);
      acc0 = _mm512_dpbf16_ps(acc0, xv, b0[p]);
      acc1 = _mm512_dpbf16_ps(acc1, xv, b1[p]);
    }
    store_row(o0 + k, acc0, mask, accumulate, stream_out);
    if (o1) store_row(o1 + k, acc1, mask, accumulate, stream_out);
  }
}

// dw (M,K) (+)= dy^T · x for bf16 x (N,K) and dy (N,M).
void skinny_weight_grad(const uint16_t* x, const uint16_t* dy, float* dw, int64_t N, int64_t K, int64_t M,
                        bool accumulate) {
  // Streaming stores need 64-byte aligned rows; they skip the caches, so only for a write-only pass.
  const bool stream_out = !accumulate && reinterpret_cast<uintptr_t>(dw) % 64 == 0 && K % 16 == 0;
  const int64_t pairs = (M + 1) / 2;
  if (cpu_isa_info().bf16_dot) {
    const int P = int((N + 1) / 2);
    const int64_t blocks = (K + 15) / 16;
    const Tensor xp_buf = scratch(size_t(blocks * P * 16) * sizeof(uint32_t));  // from the caching allocator
    uint32_t* xp = static_cast<uint32_t*>(xp_buf.raw());
    const auto x_at = [&](int64_t n, int64_t k) -> uint32_t { return n < N && k < K ? x[n * K + k] : 0; };
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < 16; ++i) {
          const int64_t k = blk * 16 + i;
          xp[(blk * P + p) * 16 + i] = x_at(2 * p, k) | x_at(2 * p + 1, k) << 16;
        }
    const auto dy_pair = [&](int64_t p, int64_t m) -> uint32_t {
      const uint32_t lo = dy[2 * p * M + m], hi = 2 * p + 1 < N ? dy[(2 * p + 1) * M + m] : 0;
      return lo | hi << 16;
    };
    using Rows = void (*)(const uint32_t*, int64_t, const uint32_t*, const uint32_t*, float*, float*, bool, bool);
    static constexpr Rows kRows[8] = {skinny_rows_bf16<1>, skinny_rows_bf16<2>, skinny_rows_bf16<3>,
                                      skinny_rows_bf16<4>, skinny_rows_bf16<5>, skinny_rows_bf16<6>,
                                      skinny_rows_bf16<7>, skinny_rows_bf16<8>};
    const Rows rows = kRows[P - 1];
#pragma omp parallel for schedule(static)
    for (int64_t pr = 0; pr < pairs; ++pr) {
      const int64_t m = 2 * pr;
      const bool two = m + 1 < M;
      uint32_t c0[kSkinnyMaxBatchBf16 / 2], c1[kSkinnyMaxBatchBf16 / 2];
      for (int p = 0; p < P; ++p) {
        c0[p] = dy_pair(p, m);
        c1[p] = two ? dy_pair(p, m + 1) : 0;
      }
      rows(xp, K, c0, c1, dw + m * K, two ? dw + (m + 1) * K : nullptr, accumulate, stream_out);
    }
  } else {
    const Tensor xf_buf = scratch(size_t(N * K) * sizeof(float));  // x widened (exact), from the caching allocator
    float* xf = static_cast<float*>(xf_buf.raw());
    bf16_to_f32_array(x, xf, N * K);
#pragma omp parallel for schedule(static)
    for (int64_t pr = 0; pr < pairs; ++pr) {
      const int64_t m = 2 * pr;
      const bool two = m + 1 < M;
      float c0[kSkinnyMaxBatch], c1[kSkinnyMaxBatch];
      for (int64_t n = 0; n < N; ++n) {
        c0[n] = bf16_to_f32(dy[n * M + m]);
        c1[n] = two ? bf16_to_f32(dy[n * M + m + 1]) : 0.f;
      }
      skinny_rows(xf, N, K, c0, c1, dw + m * K, two ? dw + (m + 1) * K : nullptr, accumulate, stream_out);
    }
  }
  if (stream_out) _mm_sfence();  // streamed stores are weakly ordered: make them visible before dw is read
}

}  // namespace

Tensor CpuBackend::linear_weights(const Tensor& w, DType activation) {
  check_cpu(w, "linear_weights: weight");
  check_dtype(w, DType::F32, "linear_weights: weight");
  check_ndim(w, 2, "linear_weights: weight");
  VGG_CHECK_TYPE(activation == DType::F32 || activation == DType::BF16,
                 "linear_weights: activations must be float32 or bfloat16, got %s", dtype_name(activation));
  return guard("linear_weights", [&] { return bf16_weights(w, bf16_path(activation)); });
}

Tensor CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, bool w_prepared) {
  const char* op = "linear_forward";
  check_float_activation(x, "linear_forward: input");
  check_ndim(x, 2, "linear_forward: input");
  check_cpu(w, "linear_forward: weight");
  check_ndim(w, 2, "linear_forward: weight");
  const int64_t N = x.dim(0), K = x.dim(1), M = w.dim(0);
  VGG_CHECK(w.dim(1) == K, "linear_forward: input has %lld features, weight expects %lld", (long long)K,
            (long long)w.dim(1));
  if (b.defined()) check_param(b, {M}, "linear_forward: bias");
  check_nonzero_dims(x.shape, 1, "linear_forward: input");
  check_nonzero_dims(w.shape, 0, "linear_forward: weight");
  const Bf16Path path = bf16_path(x.dtype);
  check_weight_dtype(op, w, path, w_prepared);
  if (N == 0) return Tensor::empty({0, M}, x.dtype, Device::CPU);  // oneDNN: SIGFPE on a zero-size matmul
  return guard(op, [&] {
    const Tensor xc = bf16_operand(x, path), wc = compute_weights(w, path, w_prepared);
    const DType cdt = xc.dtype;
    auto a = md({N, K}, cdt, tag::ab), wt = md({K, M}, cdt, tag::ba), c = md({N, M}, cdt, tag::ab);
    auto bias = md({1, M}, DType::F32, tag::ab);
    auto& e = matmul_entry(cache_key(op, N, K, M, b.defined(), relu, int(cdt)), a, wt, b.defined() ? &bias : nullptr,
                           c, relu, false);
    Tensor y = Tensor::empty({N, M}, cdt, Device::CPU);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, mem_of(xc, a)}, {DNNL_ARG_WEIGHTS, mem_of(wc, wt)},
                                         {DNNL_ARG_DST, mem_of(y, c)}};
    if (b.defined()) args.emplace(DNNL_ARG_BIAS, mem_of(b, bias));
    {
      KernelTimer t(op, std::string("gemm:") + e.pd.impl_info_str());
      e.prim.execute(stream(), args);
      stream().wait();
    }
    return bf16_result(y, path);
  });
}

Tensor CpuBackend::linear_backward_data(const Tensor& dy, const Tensor& w, bool w_prepared) {
  const char* op = "linear_backward_data";
  check_float_activation(dy, "linear_backward_data: dy");
  check_ndim(dy, 2, "linear_backward_data: dy");
  check_cpu(w, "linear_backward_data: weight");
  check_ndim(w, 2, "linear_backward_data: weight");
  const int64_t N = dy.dim(0), M = dy.dim(1), K = w.dim(1);
  VGG_CHECK(w.dim(0) == M, "linear_backward_data: dy has %lld features, weight has %lld outputs", (long long)M,
            (long long)w.dim(0));
  check_nonzero_dims(dy.shape, 1, "linear_backward_data: dy");
  check_nonzero_dims(w.shape, 0, "linear_backward_data: weight");
  const Bf16Path path = bf16_path(dy.dtype);
  check_weight_dtype(op, w, path, w_prepared);
  if (N == 0) return Tensor::empty({0, K}, dy.dtype, Device::CPU);
  return guard(op, [&] {
    const Tensor dyc = bf16_operand(dy, path), wc = compute_weights(w, path, w_prepared);
    const DType cdt = dyc.dtype;
    if (cdt == DType::F32) {  // see kSgemmNote
      Tensor dx = Tensor::empty({N, K}, cdt, Device::CPU);
      KernelTimer t(op, "sgemm");
      dnnl::sgemm('N', 'N', N, K, M, 1.f, dyc.data<float>(), M, wc.data<float>(), K, 0.f, dx.data<float>(), K);
      return bf16_result(dx, path);
    }
    auto a = md({N, M}, cdt, tag::ab), wm = md({M, K}, cdt, tag::ab), c = md({N, K}, cdt, tag::ab);
    auto& e = matmul_entry(cache_key(op, N, K, M, int(cdt)), a, wm, nullptr, c, false, false);
    Tensor dx = Tensor::empty({N, K}, cdt, Device::CPU);
    {
      KernelTimer t(op, std::string("gemm:") + e.pd.impl_info_str());
      e.prim.execute(stream(), {{DNNL_ARG_SRC, mem_of(dyc, a)}, {DNNL_ARG_WEIGHTS, mem_of(wc, wm)},
                                {DNNL_ARG_DST, mem_of(dx, c)}});
      stream().wait();
    }
    return bf16_result(dx, path);
  });
}

void CpuBackend::linear_backward_weights(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor& db,
                                         bool accumulate) {
  const char* op = "linear_backward_weights";
  check_float_activation(x, "linear_backward_weights: input");
  check_ndim(x, 2, "linear_backward_weights: input");
  check_float_activation(dy, "linear_backward_weights: dy");
  check_ndim(dy, 2, "linear_backward_weights: dy");
  check_same_dtype(x, dy, "linear_backward_weights: input and dy");
  const int64_t N = x.dim(0), K = x.dim(1), M = dy.dim(1);
  VGG_CHECK(dy.dim(0) == N, "linear_backward_weights: input has batch %lld, dy has %lld", (long long)N,
            (long long)dy.dim(0));
  check_param(dw, {M, K}, "linear_backward_weights: dw");
  if (db.defined()) check_param(db, {M}, "linear_backward_weights: db");
  check_nonzero_dims(x.shape, 1, "linear_backward_weights: input");
  check_nonzero_dims(dy.shape, 1, "linear_backward_weights: dy");
  if (N == 0) return zero_grads_of_empty_batch(*this, dw, db, accumulate);
  const Bf16Path path = bf16_path(x.dtype);
  guard(op, [&] {
    if (use_skinny_weight_grad(N, x.dtype)) {
      KernelTimer t(op, cpu_isa_info().bf16_dot ? "skinny:avx512_bf16" : "skinny:avx512");
      return skinny_weight_grad(x.data<uint16_t>(), dy.data<uint16_t>(), dw.data<float>(), N, K, M, accumulate);
    }
    const Tensor xc = bf16_operand(x, path), dyc = bf16_operand(dy, path);
    const DType cdt = xc.dtype;
    if (cdt == DType::F32) {  // see kSgemmNote
      KernelTimer t(op, "sgemm");
      dnnl::sgemm('T', 'N', M, K, N, 1.f, dyc.data<float>(), M, xc.data<float>(), K, accumulate ? 1.f : 0.f,
                  dw.data<float>(), K);
      return;
    }
    auto a = md({M, N}, cdt, tag::ba), xm = md({N, K}, cdt, tag::ab), c = md({M, K}, DType::F32, tag::ab);
    auto& e = matmul_entry(cache_key(op, N, K, M, accumulate, int(cdt)), a, xm, nullptr, c, false, accumulate);
    KernelTimer t(op, std::string("gemm:") + e.pd.impl_info_str());
    e.prim.execute(stream(), {{DNNL_ARG_SRC, mem_of(dyc, a)}, {DNNL_ARG_WEIGHTS, mem_of(xc, xm)},
                              {DNNL_ARG_DST, mem_of(dw, c)}});
    stream().wait();
  });
  if (db.defined()) {
    float* o = db.data<float>();
    dispatch_float(dy.dtype, [&](auto t) {
      using T = decltype(t);
      const T* d = dy.data<T>();
#pragma omp parallel for schedule(static)
      for (int64_t m = 0; m < M; ++m) {
        float s = 0;
        for (int64_t n = 0; n < N; ++n) s += to_f32(d[n * M + m]);
        o[m] = accumulate ? o[m] + s : s;
      }
    });
  }
}

}  // namespace vgg::cpu
