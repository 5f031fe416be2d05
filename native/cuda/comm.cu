// Kernels of distributed training (native/dist/): gradients packed into a bucket's flat buffer (float32 or, with
// compression, bfloat16) and unpacked back scaled by 1/world. Unlike the backend's kernels these run on the stream
// they are given: the process group's communication stream, beside the backward pass on the compute stream.
#include "common.cuh"

namespace vgg::cuk {

template <class D>
__global__ void comm_pack_k(D* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(dst, i, src[i]);
}

template <class S>
__global__ void comm_unpack_k(float* dst, const S* src, int64_t n, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = scale * ld(src, i);
}

void comm_pack(void* dst, bool to_bf16, const float* src, int64_t n, void* stream) {
  if (n <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (to_bf16) comm_pack_k<bf16><<<grid_for(n), kThreads, 0, s>>>(static_cast<bf16*>(dst), src, n);
  else comm_pack_k<float><<<grid_for(n), kThreads, 0, s>>>(static_cast<float*>(dst), src, n);
  check_launch("gradient bucket (pack)");
}

void comm_unpack(float* dst, const void* src, bool from_bf16, int64_t n, float scale, void* stream) {
  if (n <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (from_bf16) comm_unpack_k<bf16><<<grid_for(n), kThreads, 0, s>>>(dst, static_cast<const bf16*>(src), n, scale);
  else comm_unpack_k<float><<<grid_for(n), kThreads, 0, s>>>(dst, static_cast<const float*>(src), n, scale);
  check_launch("gradient bucket (unpack)");
}

}  // namespace vgg::cuk
