// The CUDA backend's shared helpers (common.h).
#include "common.h"

namespace vgg::cuda {

void check_cuda(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) throw Error(strprintf("%s: %s failed: %s", op, what, cudaGetErrorString(e)));
}
void check_cudnn(cudnnStatus_t s, const char* op, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw Error(strprintf("%s: %s failed: %s", op, what, cudnnGetErrorString(s)));
}

namespace {
const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}
}  // namespace

void check_cublas(cublasStatus_t s, const char* op, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(strprintf("%s: %s failed: %s (%d)", op, what, cublas_status_name(s), int(s)));
}

int to_int(int64_t v, const char* op, const char* what) {
  VGG_CHECK(v >= 0 && v <= 2147483647LL, "%s: %s = %lld does not fit the CUDA libraries' int", op, what,
            (long long)v);
  return int(v);
}

void check_cuda_tensor(const Tensor& t, const char* what) {
  check_defined(t, what);
  check_device(t, Device::CUDA, what);
}
void check_float(const Tensor& t, const char* what) {
  VGG_CHECK_TYPE(is_float(t.dtype), "%s: expected float32 or bfloat16, got %s", what, dtype_name(t.dtype));
}
void check_param(const Tensor& t, int64_t C, const char* what, bool required) {
  if (!t.defined()) {
    VGG_CHECK(!required, "%s: missing", what);
    return;
  }
  check_device(t, Device::CUDA, what);
  check_dtype(t, DType::F32, what);
  VGG_CHECK(t.numel() == C, "%s: expected %lld elements, got %s", what, (long long)C, shape_str(t.shape).c_str());
}

}  // namespace vgg::cuda
