// Shared device helpers of our kernels: float/bf16 loads and stores, dtype dispatch, grid sizes, launch checks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../tensor.h"
#include "cuda_hooks.h"
#include "kernels.h"

namespace vgg::cuk {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

constexpr int kThreads = 256;

// The compute stream every launch goes to (cuda_hooks.h).
inline cudaStream_t stream() { return static_cast<cudaStream_t>(cuda_stream()); }

// Throws "<op>: CUDA kernel launch failed: <error>" when the last launch failed (every launcher calls it).
inline void check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(strprintf("%s: CUDA kernel launch failed: %s", op, cudaGetErrorString(e)));
}

// Blocks for n elements, grid-stride loops cover the rest.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 16) b = 65535LL * 16;
  return unsigned(b);
}

// Calls f((T*)0) with T = float or bf16 according to dt; throws for other dtypes.
template <class F>
inline void dispatch_float(DType dt, const char* op, F&& f) {
  if (dt == DType::F32) {
    f(static_cast<float*>(nullptr));
  } else if (dt == DType::BF16) {
    f(static_cast<bf16*>(nullptr));
  } else {
    throw Error(strprintf("%s: expected float32 or bfloat16, got %s", op, dtype_name(dt)));
  }
}

// Block-wide sum (blockDim.x a multiple of 32, at most 1024). Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* shm /* >= 32 floats */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  float r = lane < nw ? shm[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}
__device__ __forceinline__ double block_sum_d(double v, double* shm /* >= 32 doubles */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  double r = lane < nw ? shm[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}
__device__ __forceinline__ float block_max(float v, float* shm) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  float r = lane < nw ? shm[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}

// Physical offset of logical element (n, c, hw) of an (N, C, HW) image tensor.
__device__ __forceinline__ int64_t img_off(int64_t n, int64_t c, int64_t hw, int64_t C, int64_t HW, bool cl) {
  return cl ? (n * HW + hw) * C + c : (n * C + c) * HW + hw;
}

}  // namespace vgg::cuk
