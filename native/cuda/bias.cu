// The bias of conv and linear layers, which cuDNN's and cuBLAS's calls leave to us: y += bias (+ ReLU) after the
// GEMM/convolution, and the bias gradient (a per-channel sum of dy, in a fixed order so that runs are reproducible).
#include <algorithm>
#include <type_traits>

#include "common.cuh"

namespace vgg::cuk {

// ---------------------------------------------------------------- bias (+ relu), bias gradient
template <class T>
__global__ void bias_act_k(T* y, const float* b, int64_t n, int64_t C, int64_t HW, bool cl, bool relu) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = ld(y, i);
    if (b) v += b[cl ? i % C : (i / HW) % C];
    if (relu) v = v > 0.f ? v : 0.f;
    st(y, i, v);
  }
}

void bias_act(void* y, DType dt, const float* bias, int64_t N, int64_t C, int64_t HW, bool cl, bool relu) {
  const int64_t n = N * C * HW;
  if (n <= 0 || (!bias && !relu)) return;
  dispatch_float(dt, "bias_act", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bias_act_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)y, bias, n, C, HW, cl, relu);
  });
  check_launch("bias_act");
}

// NCHW: one block per channel, reduces over N and HW.
template <class T>
__global__ void bias_grad_nchw_k(float* db, const T* dy, int64_t N, int64_t C, int64_t HW, bool acc) {
  __shared__ float shm[32];
  const int64_t c = blockIdx.x;
  float s = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const T* p = dy + (n * C + c) * HW;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) s += ld(p, i);
  }
  s = block_sum(s, shm);
  if (threadIdx.x == 0) db[c] = (acc ? db[c] : 0.f) + s;
}
// Channels-last / row-major (rows, C), in two deterministic passes. A single pass with one block per 32 channels
// left ~2 blocks for C = 64 on a 132-SM GPU, each thread summing ~400k values one dependent load at a time
// (hundreds of ms per conv at 224², measured on an H200). Pass 1: a grid of (channel tiles × row chunks), each
// block (32 channels × 8 row lanes) writes its chunk's partial sums; pass 2 adds the chunks in a fixed order.
template <class T>
__global__ void bias_grad_cl_partial_k(float* part, const T* dy, int64_t rows, int64_t C, int64_t rows_per_chunk) {
  __shared__ float lane[8][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float s = 0.f;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) s += ld(dy, r * C + c);
  lane[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.f;
    for (int j = 0; j < 8; ++j) t += lane[j][threadIdx.x];
    part[int64_t(blockIdx.y) * C + c] = t;
  }
}
__global__ void bias_grad_cl_final_k(float* db, const float* part, int64_t chunks, int64_t C, bool acc) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  float t = 0.f;
  for (int64_t k = 0; k < chunks; ++k) t += part[k * C + c];
  db[c] = (acc ? db[c] : 0.f) + t;
}

void bias_grad(float* db, const void* dy, DType dt, int64_t N, int64_t C, int64_t HW, bool cl, bool accumulate) {
  if (C <= 0) return;
  dispatch_float(dt, "bias_grad", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    if (cl || HW == 1) {
      const int64_t rows = N * HW, tiles = (C + 31) / 32;
      // about 8 blocks per SM in all, at least 256 rows a chunk
      int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((rows + 255) / 256, (132 * 8 + tiles - 1) / tiles));
      const int64_t per = (rows + chunks - 1) / chunks;
      chunks = (rows + per - 1) / per;
      const size_t bytes = size_t(chunks * C) * sizeof(float);
      float* part = static_cast<float*>(cuda_alloc(bytes));
      bias_grad_cl_partial_k<T><<<dim3(unsigned(tiles), unsigned(chunks)), dim3(32, 8), 0, cuk::stream()>>>(part, (const T*)dy, rows, C, per);
      check_launch("bias_grad (partial)");
      bias_grad_cl_final_k<<<grid_for(C), kThreads, 0, cuk::stream()>>>(db, part, chunks, C, accumulate);
      cuda_free(part, bytes);  // stream-ordered reuse: later work on the one stream runs after this kernel
    } else {
      bias_grad_nchw_k<T><<<unsigned(C), kThreads, 0, cuk::stream()>>>(db, (const T*)dy, N, C, HW, accumulate);
    }
  });
  check_launch("bias_grad");
}

}  // namespace vgg::cuk
