// linear on oneDNN matmul (plain row-major operands; the transposes are expressed as strides).
//   forward          y (N,M) = x (N,K) · w(M,K)^T + b (M)        [relu post-op when asked]
//   backward data    dx (N,K) = dy (N,M) · w (M,K)
//   backward weights dw (M,K) (+)= dy^T (M,N) · x (N,K)  [sum post-op when accumulating];  db (M) (+)= sum_n dy
// bf16 activations (Bf16Path, cpu_common.h): the matmuls run in the compute dtype `cdt` of the operands (bf16 with
// bf16 weights on the native path, widened f32 with bf16-rounded f32 weights when emulated); bias, dw and db are f32.
// Forward and backward data take w as float32 (converted per call) or prepared by linear_weights (ops.h).
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
