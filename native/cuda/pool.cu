// Max pooling (with the arg-max kept for backward) and adaptive average pooling, NCHW or NHWC. No backward kernel
// uses atomics (deterministic): max-pool backward writes each window once where windows tile the input, else gathers.
#include <type_traits>

#include "common.cuh"
#include "pool_math.h"

namespace vgg::cuk {

// ---------------------------------------------------------------- max pool (bodies in pool_math.h)
template <class I, class T>
__global__ void maxpool_k(T* y, uint8_t* idx, const T* x, PoolShape ps, I total) {
  for (I o = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); o < total; o += I(gridDim.x) * I(blockDim.x))
    maxpool_forward_at<I>(o, y, idx, x, ps);
}
template <class I, class T>
__global__ void maxpool_bwd_gather_k(T* dx, const T* dy, const uint8_t* idx, PoolShape ps, I total) {
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < total; i += I(gridDim.x) * I(blockDim.x))
    maxpool_backward_gather_at<I>(i, dx, dy, idx, ps);
}
template <class I, class T>
__global__ void maxpool_bwd_tile_k(T* dx, const T* dy, const uint8_t* idx, PoolShape ps, I total) {
  for (I o = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); o < total; o += I(gridDim.x) * I(blockDim.x))
    maxpool_backward_tile_at<I>(o, dx, dy, idx, ps);
}

// Calls f(I{}) with the narrowest index type that holds every index below `largest`.
template <class F>
void by_index_type(int64_t largest, F&& f) {
  if (largest <= kMaxInt32Elements) f(int32_t{});
  else f(int64_t{});
}

void maxpool_forward(void* y, uint8_t* idx, const void* x, DType dt, int64_t N, int64_t C, int64_t H, int64_t W,
                     int64_t P, int64_t Q, int k, int stride, int pad, bool cl) {
  const int64_t total = N * C * P * Q;
  if (total <= 0) return;
  if (k * k > 256) throw Error(strprintf("maxpool2d_forward: kernel %d too large for the CUDA backend", k));
  const PoolShape ps{C, H, W, P, Q, k, stride, pad, cl};
  dispatch_float(dt, "maxpool2d_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    by_index_type(N * C * H * W, [&](auto i) {
      using I = decltype(i);
      maxpool_k<I, T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)y, idx, (const T*)x, ps, I(total));
    });
  });
  check_launch("maxpool2d_forward");
}

void maxpool_backward(void* dx, const void* dy, const uint8_t* idx, DType dt, int64_t N, int64_t C, int64_t H,
                      int64_t W, int64_t P, int64_t Q, int k, int stride, int pad, bool cl) {
  const int64_t total = N * C * H * W;
  if (total <= 0) return;
  const PoolShape ps{C, H, W, P, Q, k, stride, pad, cl};
  const bool tile = windows_tile(ps);
  const int64_t outputs = N * C * P * Q;
  dispatch_float(dt, "maxpool2d_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    by_index_type(total, [&](auto i) {
      using I = decltype(i);
      if (tile) {
        maxpool_bwd_tile_k<I, T><<<grid_for(outputs), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, idx, ps,
                                                                                    I(outputs));
      } else {
        maxpool_bwd_gather_k<I, T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, idx, ps,
                                                                                    I(total));
      }
    });
  });
  check_launch("maxpool2d_backward");
}

// ---------------------------------------------------------------- adaptive average pool
// PyTorch's windows: rows [floor(i*H/OH), ceil((i+1)*H/OH)).
__device__ __forceinline__ int64_t win_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
__device__ __forceinline__ int64_t win_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

template <class T>
__global__ void avgpool_k(T* y, const T* x, int64_t C, int64_t H, int64_t W, int OH, int OW, bool cl, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, oh, ow;
    unravel<int64_t>(i, C, OH, OW, false, n, c, oh, ow);  // y is NCHW
    const int64_t h0 = win_start(oh, H, OH), h1 = win_end(oh, H, OH);
    const int64_t w0 = win_start(ow, W, OW), w1 = win_end(ow, W, OW);
    float s = 0.f;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) s += ld(x, ravel<int64_t>(n, c, h, w, C, H, W, cl));
    st(y, i, s / float((h1 - h0) * (w1 - w0)));
  }
}

template <class T>
__global__ void avgpool_bwd_k(T* dx, const T* dy, int64_t C, int64_t H, int64_t W, int OH, int OW, bool cl,
                              int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    unravel<int64_t>(i, C, H, W, cl, n, c, h, w);
    float g = 0.f;
    for (int oh = 0; oh < OH; ++oh) {
      const int64_t h0 = win_start(oh, H, OH), h1 = win_end(oh, H, OH);
      if (h < h0 || h >= h1) continue;
      for (int ow = 0; ow < OW; ++ow) {
        const int64_t w0 = win_start(ow, W, OW), w1 = win_end(ow, W, OW);
        if (w < w0 || w >= w1) continue;
        g += ld(dy, ((n * C + c) * OH + oh) * OW + ow) / float((h1 - h0) * (w1 - w0));
      }
    }
    st(dx, i, g);
  }
}

void adaptive_avgpool_forward(void* y, const void* x, DType dt, int64_t N, int64_t C, int64_t H, int64_t W, int OH,
                              int OW, bool cl) {
  const int64_t total = N * C * OH * OW;
  if (total <= 0) return;
  dispatch_float(dt, "adaptive_avgpool2d_forward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    avgpool_k<T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)y, (const T*)x, C, H, W, OH, OW, cl, total);
  });
  check_launch("adaptive_avgpool2d_forward");
}

void adaptive_avgpool_backward(void* dx, const void* dy, DType dt, int64_t N, int64_t C, int64_t H, int64_t W,
                               int OH, int OW, bool cl) {
  const int64_t total = N * C * H * W;
  if (total <= 0) return;
  dispatch_float(dt, "adaptive_avgpool2d_backward", [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    avgpool_bwd_k<T><<<grid_for(total), kThreads, 0, cuk::stream()>>>((T*)dx, (const T*)dy, C, H, W, OH, OW, cl, total);
  });
  check_launch("adaptive_avgpool2d_backward");
}

}  // namespace vgg::cuk
