// Kernels of ReLU and dropout (activation.cc). Dropout's mask comes from rng.h's counter-based generator, element i
// of the logical (NCHW) order drawing uniform01(seed, offset + i), so CPU and GPU drop the same elements.
#include <cstdint>
#include <type_traits>

#include "../rng.h"
#include "common.cuh"

namespace vgg::cuk {

// ---------------------------------------------------------------- relu
template <class T>
__global__ void relu_k(T* y, const T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float v = ld(x, i);
    st(y, i, v > 0.f ? v : 0.f);
  }
}
template <class T>
__global__ void relu_bwd_k(T* dx, const T* dy, const T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(dx, i, ld(y, i) > 0.f ? ld(dy, i) : 0.f);
}

void relu_forward(void* y, const void* x, DType dt, int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "relu_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    relu_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)y, (const T*)x, n);
  });
  check_launch("relu_forward");
}
// The same in 16-byte vectors (4 floats or 8 bfloat16s per load): the scalar kernel reached about a third of the
// H200's bandwidth. dy's bits are copied where y > 0, which is what the scalar float round trip gives.
template <class T>
__global__ void relu_bwd_vec_k(uint4* dx, const uint4* dy, const uint4* y, int64_t nvec) {
  constexpr int V = sizeof(uint4) / sizeof(T);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nvec; i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 g = dy[i], a = y[i];
    uint4 r;
    const T* gv = reinterpret_cast<const T*>(&g);
    const T* av = reinterpret_cast<const T*>(&a);
    T* rv = reinterpret_cast<T*>(&r);
#pragma unroll
    for (int j = 0; j < V; ++j) st(rv, j, ld(av, j) > 0.f ? ld(gv, j) : 0.f);
    dx[i] = r;
  }
}

void relu_backward(void* dx, const void* dy, const void* y, DType dt, int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "relu_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    constexpr int64_t V = sizeof(uint4) / sizeof(T);
    const bool aligned = (reinterpret_cast<uintptr_t>(dx) | reinterpret_cast<uintptr_t>(dy) |
                          reinterpret_cast<uintptr_t>(y)) % sizeof(uint4) == 0;
    const int64_t nvec = aligned ? n / V : 0;
    if (nvec > 0)
      relu_bwd_vec_k<T><<<grid_for(nvec), kThreads, 0, cuk::stream()>>>((uint4*)dx, (const uint4*)dy, (const uint4*)y,
                                                                        nvec);
    const int64_t done = nvec * V;  // the tail (or everything, unaligned) element by element
    if (done < n)
      relu_bwd_k<T><<<grid_for(n - done), kThreads, 0, cuk::stream()>>>((T*)dx + done, (const T*)dy + done,
                                                                          (const T*)y + done, n - done);
  });
  check_launch("relu_backward");
}

// ---------------------------------------------------------------- dropout
template <class T>
__global__ void dropout_k(T* y, uint8_t* mask, const T* x, int64_t n, int64_t C, int64_t HW, bool cl, float p,
                          float scale, uint64_t seed, uint64_t offset_arg, const uint64_t* offset_slot) {
  const uint64_t offset = offset_slot ? *offset_slot : offset_arg;  // a CUDA graph's replays each bring their own
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t logical = i;
    if (cl) {  // physical i = ((n*HW)+hw)*C + c  ->  logical (n*C + c)*HW + hw
      const int64_t c = i % C, r = i / C, hw = r % HW, nn = r / HW;
      logical = (nn * C + c) * HW + hw;
    }
    const bool keep = uniform01(seed, offset + uint64_t(logical)) >= p;
    mask[i] = keep ? 1 : 0;
    st(y, i, keep ? ld(x, i) * scale : 0.f);
  }
}
template <class T>
__global__ void dropout_bwd_k(T* dx, const T* dy, const uint8_t* mask, int64_t n, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(dx, i, mask[i] ? ld(dy, i) * scale : 0.f);
}

void dropout_forward(void* y, uint8_t* mask, const void* x, DType dt, int64_t N, int64_t C, int64_t HW, bool cl,
                     float p, uint64_t seed, uint64_t offset, const uint64_t* offset_slot) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  dispatch_float(dt, "dropout_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    dropout_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)y, mask, (const T*)x, n, C, HW, cl, p, scale, seed, offset,
                                                                 offset_slot);
  });
  check_launch("dropout_forward");
}
void dropout_backward(void* dx, const void* dy, const uint8_t* mask, DType dt, int64_t n, float scale) {
  if (n <= 0) return;
  dispatch_float(dt, "dropout_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    dropout_bwd_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, mask, n, scale);
  });
  check_launch("dropout_backward");
}

}  // namespace vgg::cuk
