// Kernels of the tensor-wide ops (tensor_ops.cc): fill, add_, cast, layout transposes and the float32 accumulate of
// converted gradients. Each kernel is a grid-stride loop over elements; its launcher sits right below it and checks
// the launch.
#include <type_traits>

#include "common.cuh"

namespace vgg::cuk {

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
    case DType::I8: fill_k<int8_t><<<g, kThreads, 0, cuk::stream()>>>((int8_t*)p, n, int8_t(value)); break;
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

}  // namespace vgg::cuk
