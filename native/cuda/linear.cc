// linear on cuBLAS: forward (our bias/ReLU kernel after the GEMM), backward data, backward weights (+ our
// bias-gradient kernel). Row-major tensors are seen by cuBLAS as their column-major transposes (comments per op).
#include "backend.h"

namespace vgg::cuda {

namespace {
// w: float32, or (prepared) already in the activations' dtype `dt`, as linear_weights made it.
void check_linear_weight(const char* op, const Tensor& w, DType dt, bool prepared) {
  check_cuda_tensor(w, strprintf("%s: weight", op).c_str());
  check_dtype(w, prepared ? dt : DType::F32, strprintf("%s: %sweight", op, prepared ? "prepared " : "").c_str());
  check_ndim(w, 2, strprintf("%s: weight", op).c_str());
}
}  // namespace

Tensor CudaBackend::linear_weights(const Tensor& w, DType activation) {
  check_cuda_tensor(w, "linear_weights: weight");
  check_dtype(w, DType::F32, "linear_weights: weight");
  check_ndim(w, 2, "linear_weights: weight");
  VGG_CHECK_TYPE(is_float(activation), "linear_weights: activations must be float32 or bfloat16, got %s",
                 dtype_name(activation));
  return activation == DType::F32 ? w : cast(w, activation);
}

// C(m,n) = alpha op(A) op(B) + beta C in cuBLAS's column-major terms; A and B in the same dtype, C float32 or
// that dtype; float32 accumulation (TF32 allowed for float32 inputs when the math mode says so).
void CudaBackend::gemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                       int64_t k, const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, Tensor& C,
                       int64_t ldc, float beta) {
  VGG_CHECK(A.dtype == B.dtype, "%s: operands in %s and %s", op, dtype_name(A.dtype), dtype_name(B.dtype));
  if (m == 0 || n == 0) return;
  const float alpha = 1.f;
  const cublasComputeType_t ct = (A.dtype == DType::F32 && cuda_math_mode() != 0) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                 : CUBLAS_COMPUTE_32F;
  CUBLAS_OK(op, cublasGemmEx(cublas_, ta, tb, to_int(m, op, "m"), to_int(n, op, "n"), to_int(k, op, "k"), &alpha,
                             A.raw(), blas_dtype(A.dtype), to_int(lda, op, "lda"), B.raw(), blas_dtype(B.dtype),
                             to_int(ldb, op, "ldb"), &beta, C.raw(), blas_dtype(C.dtype), to_int(ldc, op, "ldc"),
                             ct, CUBLAS_GEMM_DEFAULT));
}

// Row-major y(N,M) = x(N,K) w(M,K)^T  <=>  column-major y^T(M,N) = w^T... as cuBLAS sees the same bytes:
// gemm(T, N, m=M, n=N, k=K, A=w (lda K), B=x (ldb K), C=y (ldc M)).
Tensor CudaBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, bool w_prepared) {
  const char* op = "linear_forward";
  check_cuda_tensor(x, "linear_forward: x");
  check_float(x, "linear_forward: x");
  check_ndim(x, 2, "linear_forward: x");
  check_linear_weight(op, w, x.dtype, w_prepared);
  VGG_CHECK(w.dim(1) == x.dim(1), "%s: input has %lld features, weight expects %lld", op, (long long)x.dim(1),
            (long long)w.dim(1));
  const int64_t N = x.dim(0), K = x.dim(1), M = w.dim(0);
  if (b.defined()) check_param(b, M, "linear_forward: bias", true);
  check_nonzero_dims(x.shape, 1, "linear_forward: x");
  check_nonzero_dims(w.shape, 0, "linear_forward: weight");
  const DType dt = x.dtype;
  if (N == 0) return cuda_empty({0, M}, dt);
  Tensor wk = w_prepared ? w : linear_weights(w, dt);
  Tensor y = cuda_empty({N, M}, dt);
  gemm(op, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, wk, K, x, K, y, M, 0.f);
  cuk::bias_act(y.raw(), dt, b.defined() ? b.data<float>() : nullptr, N, M, 1, true, relu);
  return y;
}
// dx(N,K) = dy(N,M) w(M,K):  column-major dx^T(K,N) = w^T(K,M) dy^T(M,N): gemm(N, N, K, N, M, w, K, dy, M, dx, K)
Tensor CudaBackend::linear_backward_data(const Tensor& dy, const Tensor& w, bool w_prepared) {
  const char* op = "linear_backward_data";
  check_cuda_tensor(dy, "linear_backward_data: dy");
  check_float(dy, "linear_backward_data: dy");
  check_ndim(dy, 2, "linear_backward_data: dy");
  check_linear_weight(op, w, dy.dtype, w_prepared);
  VGG_CHECK(dy.dim(1) == w.dim(0), "%s: dy has %lld features, weight has %lld outputs", op, (long long)dy.dim(1),
            (long long)w.dim(0));
  const int64_t N = dy.dim(0), M = dy.dim(1), K = w.dim(1);
  check_nonzero_dims(dy.shape, 1, "linear_backward_data: dy");
  check_nonzero_dims(w.shape, 0, "linear_backward_data: w");
  const DType dt = dy.dtype;
  if (N == 0) return cuda_empty({0, K}, dt);
  Tensor wk = w_prepared ? w : linear_weights(w, dt);
  Tensor dx = cuda_empty({N, K}, dt);
  gemm(op, CUBLAS_OP_N, CUBLAS_OP_N, K, N, M, wk, K, dy, M, dx, K, 0.f);
  return dx;
}
// dw(M,K) = dy^T(M,N) x(N,K):  column-major dw^T(K,M) = x^T(K,N) dy(N,M): gemm(N, T, K, M, N, x, K, dy, M, dw, K)
void CudaBackend::linear_backward_weights(const Tensor& x, const Tensor& dy_in, Tensor& dw, Tensor& db,
                                          bool accumulate) {
  const char* op = "linear_backward_weights";
  check_cuda_tensor(x, "linear_backward_weights: x");
  check_float(x, "linear_backward_weights: x");
  check_ndim(x, 2, "linear_backward_weights: x");
  check_cuda_tensor(dy_in, "linear_backward_weights: dy");
  check_float(dy_in, "linear_backward_weights: dy");
  check_ndim(dy_in, 2, "linear_backward_weights: dy");
  VGG_CHECK(dy_in.dim(0) == x.dim(0), "%s: dy has %lld rows, x has %lld", op, (long long)dy_in.dim(0),
            (long long)x.dim(0));
  const int64_t N = x.dim(0), K = x.dim(1), M = dy_in.dim(1);
  check_cuda_tensor(dw, "linear_backward_weights: dw");
  check_dtype(dw, DType::F32, "linear_backward_weights: dw");
  check_shape(dw, {M, K}, "linear_backward_weights: dw");
  if (db.defined()) check_param(db, M, "linear_backward_weights: db", true);
  check_nonzero_dims(x.shape, 1, "linear_backward_weights: x");
  check_nonzero_dims(dw.shape, 0, "linear_backward_weights: dw");
  if (N == 0) return zero_grads_of_empty_batch(*this, dw, db, accumulate);
  Tensor dy = conform(dy_in, x.dtype, Layout::Contiguous, "linear_backward_weights: dy");
  gemm(op, CUBLAS_OP_N, CUBLAS_OP_T, K, M, N, x, K, dy, M, dw, K, accumulate ? 1.f : 0.f);
  if (db.defined()) cuk::bias_grad(db.data<float>(), dy.raw(), dy.dtype, N, M, 1, true, accumulate);
}

}  // namespace vgg::cuda
