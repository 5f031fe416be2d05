// Helpers every host file of the CUDA backend uses: status checks that turn CUDA/cuDNN/cuBLAS failures into
// vgg::Error naming the op, owners of cuDNN descriptors, and argument checks. (The CudaBackend class itself is
// declared in backend.h; device-side helpers of our kernels are in common.cuh.)
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "../ops.h"
#include "cuda_hooks.h"

namespace vgg::cuda {

// ---- status checks
void check_cuda(cudaError_t e, const char* op, const char* what);
void check_cudnn(cudnnStatus_t s, const char* op, const char* what);
void check_cublas(cublasStatus_t s, const char* op, const char* what);
#define CUDNN_OK(op, call) ::vgg::cuda::check_cudnn((call), op, #call)
#define CUBLAS_OK(op, call) ::vgg::cuda::check_cublas((call), op, #call)
#define CUDA_OK(op, call) ::vgg::cuda::check_cuda((call), op, #call)

// ---- owners of cuDNN descriptors (created on construction, destroyed with the owner)
template <class D, cudnnStatus_t (*Create)(D*), cudnnStatus_t (*Destroy)(D)>
struct CudnnDesc {
  D d = nullptr;
  CudnnDesc() { CUDNN_OK("cudnn", Create(&d)); }
  ~CudnnDesc() {
    if (d) Destroy(d);
  }
  CudnnDesc(const CudnnDesc&) = delete;
  CudnnDesc& operator=(const CudnnDesc&) = delete;
};
using TensorDesc = CudnnDesc<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc = CudnnDesc<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc =
    CudnnDesc<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor, cudnnDestroyConvolutionDescriptor>;
using ActDesc =
    CudnnDesc<cudnnActivationDescriptor_t, cudnnCreateActivationDescriptor, cudnnDestroyActivationDescriptor>;

// ---- small helpers
inline bool is_cl(const Tensor& t) { return t.layout == Layout::ChannelsLast && t.ndim() == 4; }
inline bool is_float(DType d) { return d == DType::F32 || d == DType::BF16; }
inline cudnnDataType_t cudnn_dtype(DType d) { return d == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }
inline cudaDataType_t blas_dtype(DType d) { return d == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }
inline Tensor cuda_empty(const Shape& s, DType dt, Layout l = Layout::Contiguous) {
  return Tensor::empty(s, dt, Device::CUDA, l);
}
// v as the CUDA libraries' int; throws naming `what` when it does not fit.
int to_int(int64_t v, const char* op, const char* what);

// ---- argument checks (each throws vgg::Error naming `what`)
void check_cuda_tensor(const Tensor& t, const char* what);  // defined and on the GPU
void check_float(const Tensor& t, const char* what);        // float32 or bfloat16
// A per-channel float32 parameter of C elements on the GPU; `required` = must be defined.
void check_param(const Tensor& t, int64_t C, const char* what, bool required);

}  // namespace vgg::cuda
