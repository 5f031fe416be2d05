// Training augmentation on the GPU from uint8 batches: RandomResizedCrop / Resize (bilinear, no antialias) +
// horizontal flip + ColorJitter + Normalize, writing the model's input dtype (float32 / bfloat16) and layout (NCHW /
// NHWC) directly. The per-sample parameters (crop window, flip, jitter order and factors) are drawn on the host by
// the CPU pipeline's own code (data::augment_sample); the per-pixel arithmetic is data/augment_math.h, shared with
// the CPU transforms, so the result is the CPU pipeline's (the host twin data::augment_batch_host is tested equal to
// it bit for bit on the CPU). The data layer's one CUDA file: it uses the CUDA backend's launch helpers
// (cuda/common.cuh), never the other way round.
//
// Passes: (1) one thread per output pixel resamples the three channels and applies the jitter steps before
// contrast; without contrast it also normalises and writes the output. With contrast, (2) one block per sample sums
// the grayscale image in the CPU's order (float partial sums over 256-pixel blocks, added in order in double) and
// (3) one thread per pixel applies contrast, the remaining steps and the normalisation, and writes the output.
// No cuDNN/cuBLAS here; everything is queued on the compute stream like the backend's other kernels.
#include <type_traits>

#include "../cuda/common.cuh"
#include "../cuda/cuda_hooks.h"
#include "augment.h"

namespace vgg {
namespace cuk {
namespace {

using data::am::AugConst;
using data::am::AugSample;
using data::am::kAugFloats;
using data::am::kContrastBlock;

template <class T>
__global__ void augment_pass1_k(T* out, float* scratch, const uint8_t* src, const float* params, AugConst k,
                                int64_t N, bool cl) {
  const int64_t HW = int64_t(k.oh) * k.ow, in_px = int64_t(k.h) * k.w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * HW; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / HW, p = i % HW;
    const int y = int(p / k.ow), x = int(p % k.ow);
    const AugSample s = data::am::unpack(params + n * kAugFloats);
    float rgb[3];
    data::am::sample_px(src + n * 3 * in_px, k, s, y, x, rgb);
    const int tc = data::am::contrast_step(k, s);
    data::am::jitter_steps(k, s, 0, tc, 0.f, rgb);
    if (tc < 4) {
      for (int c = 0; c < 3; ++c) scratch[(n * 3 + c) * HW + p] = rgb[c];
    } else {
      data::am::finish_px(k, rgb);
      for (int c = 0; c < 3; ++c) st(out, img_off(n, c, p, 3, HW, cl), rgb[c]);
    }
  }
}

// offsets[n] = contrast_offset(sum of gray over sample n's scratch image). blockDim.x == kContrastBlock.
__global__ void augment_contrast_k(float* offsets, const float* scratch, const float* params, AugConst k, int64_t N) {
  __shared__ float part[kContrastBlock];
  const int64_t HW = int64_t(k.oh) * k.ow;
  const int64_t nblk = (HW + kContrastBlock - 1) / kContrastBlock;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* r = scratch + n * 3 * HW;
    const float *g = r + HW, *b = g + HW;
    double sum = 0;  // thread 0's
    for (int64_t b0 = 0; b0 < nblk; b0 += blockDim.x) {
      const int64_t blk = b0 + threadIdx.x;
      float acc = 0.f;
      if (blk < nblk) {
        const int64_t i0 = blk * kContrastBlock, i1 = i0 + kContrastBlock < HW ? i0 + kContrastBlock : HW;
        for (int64_t i = i0; i < i1; ++i) acc = data::am::add(acc, data::am::gray(r[i], g[i], b[i]));
      }
      part[threadIdx.x] = acc;
      __syncthreads();
      if (threadIdx.x == 0) {
        const int64_t cnt = nblk - b0 < blockDim.x ? nblk - b0 : blockDim.x;
        for (int64_t j = 0; j < cnt; ++j) sum += double(part[j]);  // in block order, as the CPU adds them
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      const AugSample s = data::am::unpack(params + n * kAugFloats);
      offsets[n] = data::am::contrast_offset(sum, double(HW), s.fc);
    }
  }
}

template <class T>
__global__ void augment_pass2_k(T* out, const float* scratch, const float* offsets, const float* params, AugConst k,
                                int64_t N, bool cl) {
  const int64_t HW = int64_t(k.oh) * k.ow;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * HW; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / HW, p = i % HW;
    const AugSample s = data::am::unpack(params + n * kAugFloats);
    float rgb[3];
    for (int c = 0; c < 3; ++c) rgb[c] = scratch[(n * 3 + c) * HW + p];
    data::am::jitter_steps(k, s, data::am::contrast_step(k, s), 4, offsets[n], rgb);
    data::am::finish_px(k, rgb);
    for (int c = 0; c < 3; ++c) st(out, img_off(n, c, p, 3, HW, cl), rgb[c]);
  }
}

}  // namespace
}  // namespace cuk

void data::augment_batch_cuda(void* out, DType dt, bool channels_last, const uint8_t* src, const float* params,
                              int64_t n, const data::am::AugConst& k) {
  const char* op = "augmentBatch";
  VGG_CHECK(n >= 0 && k.oh > 0 && k.ow > 0 && k.h > 0 && k.w > 0, "%s: bad sizes", op);
  const int64_t HW = int64_t(k.oh) * k.ow, total = n * HW;
  if (total == 0) return;
  const bool contrast = k.has_jitter && k.has_c;
  CudaScratch scratch(contrast ? size_t(total) * 3 * sizeof(float) : 0);
  CudaScratch offsets(contrast ? size_t(n) * sizeof(float) : 0);
  cuk::dispatch_float(dt, op, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const unsigned g = cuk::grid_for(total);
    cuk::augment_pass1_k<T><<<g, cuk::kThreads, 0, cuk::stream()>>>(static_cast<T*>(out), static_cast<float*>(scratch.p), src, params,
                                                   k, n, channels_last);
    cuk::check_launch(op);
    if (!contrast) return;
    const unsigned blocks = unsigned(n < 65535 ? n : 65535);
    cuk::augment_contrast_k<<<blocks, data::am::kContrastBlock, 0, cuk::stream()>>>(static_cast<float*>(offsets.p),
                                                                  static_cast<const float*>(scratch.p), params, k, n);
    cuk::check_launch(op);
    cuk::augment_pass2_k<T><<<g, cuk::kThreads, 0, cuk::stream()>>>(static_cast<T*>(out), static_cast<const float*>(scratch.p),
                                                   static_cast<const float*>(offsets.p), params, k, n, channels_last);
    cuk::check_launch(op);
  });
}

}  // namespace vgg
