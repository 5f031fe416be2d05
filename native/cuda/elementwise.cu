// Elementwise kernels: fill, add_, cast, layout transposes, relu, bias (+relu) and bias gradient, dropout.
// Each kernel is a grid-stride loop over elements; its launcher sits right below it and checks the launch.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../rng.h"
#include "common.cuh"
#include "cuda_hooks.h"

namespace vgg::cuk {

void check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(strprintf("%s: CUDA kernel launch failed: %s", op, cudaGetErrorString(e)));
}

// ---------------------------------------------------------------- fill
template <class T>
__global__ void fill_k(T* p, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

void fill(void* p, DType dt, int64_t n, double value) {
  if (n <= 0) return;
  const unsigned g = grid_for(n);
  switch (dt) {
    case DType::F32: fill_k<float><<<g, kThreads, 0, cuk::stream()>>>((float*)p, n, float(value)); break;
    case DType::BF16: fill_k<bf16><<<g, kThreads, 0, cuk::stream()>>>((bf16*)p, n, __float2bfloat16(float(value))); break;
    case DType::I32: fill_k<int32_t><<<g, kThreads, 0, cuk::stream()>>>((int32_t*)p, n, int32_t(value)); break;
    case DType::I64: fill_k<int64_t><<<g, kThreads, 0, cuk::stream()>>>((int64_t*)p, n, int64_t(value)); break;
    case DType::U8: fill_k<uint8_t><<<g, kThreads, 0, cuk::stream()>>>((uint8_t*)p, n, uint8_t(value)); break;
    default: throw Error(strprintf("fill: unsupported dtype %s", dtype_name(dt)));
  }
  check_launch("fill");
}

// ---------------------------------------------------------------- add_
template <class D, class S>
__global__ void add_k(D* dst, const S* src, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(dst, i, ld(dst, i) + alpha * ld(src, i));
}

void add_(void* dst, DType dt, const void* src, DType st_, int64_t n, double alpha) {
  if (n <= 0) return;
  dispatch_float(dt, "add_", [&](auto* d) {
    using D = std::remove_pointer_t<decltype(d)>;
    dispatch_float(st_, "add_", [&](auto* s) {
      using S = std::remove_pointer_t<decltype(s)>;
      add_k<D, S><<<grid_for(n), kThreads, 0, cuk::stream()>>>((D*)dst, (const S*)src, n, float(alpha));
    });
  });
  check_launch("add_");
}

// ---------------------------------------------------------------- cast
__device__ __forceinline__ float ldany(const void* p, int dt, int64_t i) {
  switch (dt) {
    case int(DType::F32): return static_cast<const float*>(p)[i];
    case int(DType::BF16): return __bfloat162float(static_cast<const bf16*>(p)[i]);
    case int(DType::I32): return float(static_cast<const int32_t*>(p)[i]);
    case int(DType::U8): return float(static_cast<const uint8_t*>(p)[i]);
    default: return float(static_cast<const int64_t*>(p)[i]);
  }
}

template <class D>
__global__ void cast_k(D* dst, const void* src, int sdt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(dst, i, ldany(src, sdt, i));
}

void cast(void* dst, DType dt, const void* src, DType sdt, int64_t n) {
  if (n <= 0) return;
  if (dt == sdt) {
    cudaError_t e = cudaMemcpyAsync(dst, src, size_t(n) * dtype_size(dt), cudaMemcpyDeviceToDevice, cuk::stream());
    if (e != cudaSuccess) throw Error(strprintf("cast: cudaMemcpyAsync failed: %s", cudaGetErrorString(e)));
    return;
  }
  if (sdt != DType::F32 && sdt != DType::BF16 && sdt != DType::I32 && sdt != DType::U8 && sdt != DType::I64)
    throw Error(strprintf("cast: unsupported source dtype %s", dtype_name(sdt)));
  dispatch_float(dt, "cast", [&](auto* d) {
    using D = std::remove_pointer_t<decltype(d)>;
    cast_k<D><<<grid_for(n), kThreads, 0, cuk::stream()>>>((D*)dst, src, int(sdt), n);
  });
  check_launch("cast");
}

// ---------------------------------------------------------------- transpose NCHW <-> NHWC
// 32x32 tiles through shared memory over the (C, HW) plane of each image: both reads and writes are coalesced.
template <class D, class S>
__global__ void transpose_k(D* dst, const S* src, int64_t C, int64_t HW, bool to_cl, bool acc) {
  __shared__ float tile[32][33];
  const int64_t n = blockIdx.z;
  // Source plane is rows x cols: to_cl: rows = C, cols = HW; else rows = HW, cols = C.
  const int64_t rows = to_cl ? C : HW, cols = to_cl ? HW : C;
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  const S* s = src + n * C * HW;
  D* d = dst + n * C * HW;
  for (int j = threadIdx.y; j < 32; j += blockDim.y) {
    int64_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = ld(s, r * cols + c);
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += blockDim.y) {
    int64_t c = c0 + j, r = r0 + threadIdx.x;  // dst plane is cols x rows
    if (r < rows && c < cols) {
      float v = tile[threadIdx.x][j];
      if (acc) v += ld(d, c * rows + r);
      st(d, c * rows + r, v);
    }
  }
}

void transpose(void* dst, DType dt, const void* src, DType sdt, int64_t N, int64_t C, int64_t HW, bool to_cl,
               bool accumulate) {
  if (N * C * HW <= 0) return;
  if (N > 65535) throw Error(strprintf("to_layout: batch %lld too large", (long long)N));
  if (accumulate && dt != DType::F32) throw Error("to_layout: accumulate needs a float32 destination");
  const int64_t rows = to_cl ? C : HW, cols = to_cl ? HW : C;
  if ((rows + 31) / 32 > 65535) throw Error("to_layout: plane too large");
  dim3 grid(unsigned((cols + 31) / 32), unsigned((rows + 31) / 32), unsigned(N)), block(32, 8);
  dispatch_float(dt, "to_layout", [&](auto* d) {
    using D = std::remove_pointer_t<decltype(d)>;
    dispatch_float(sdt, "to_layout", [&](auto* s) {
      using S = std::remove_pointer_t<decltype(s)>;
      transpose_k<D, S><<<grid, block, 0, cuk::stream()>>>((D*)dst, (const S*)src, C, HW, to_cl, accumulate);
    });
  });
  check_launch("to_layout");
}

template <class S>
__global__ void accumulate_k(float* dst, const S* src, int64_t n, bool acc) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = (acc ? dst[i] : 0.f) + ld(src, i);
}

void accumulate_f32(float* dst, const void* src, DType sdt, int64_t n, bool accumulate) {
  if (n <= 0) return;
  dispatch_float(sdt, "accumulate", [&](auto* s) {
    using S = std::remove_pointer_t<decltype(s)>;
    accumulate_k<S><<<grid_for(n), kThreads, 0, cuk::stream()>>>(dst, (const S*)src, n, accumulate);
  });
  check_launch("accumulate");
}

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
void relu_backward(void* dx, const void* dy, const void* y, DType dt, int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "relu_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    relu_bwd_k<T><<<grid_for(n), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, (const T*)y, n);
  });
  check_launch("relu_backward");
}

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
