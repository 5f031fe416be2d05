// Augmentation of uint8 batches after they left the loader (the Trainer's GPU augmentation): the parameters of each
// sample are drawn on the host by the CPU pipeline's own code, and the per-pixel arithmetic is augment_math.h's, so
// the result is the CPU pipeline's bit for bit. Kernels in augment.cu (CUDA builds; cuda_stub.cc otherwise); the host
// twin in transforms.cc.
#pragma once
#include <cstdint>
#include <string>

#include "../tensor.h"
#include "augment_math.h"
#include "transforms.h"

namespace vgg::data {

// Supported pipelines: [randomResizedCrop | resize]? [randomHorizontalFlip]? [colorJitter]? [normalize]?, in that
// order, on 3-channel images of one size per batch. Returns "" when `ops` is of that form, else the reason.
std::string augment_unsupported(const Pipeline& ops);
// The pipeline's constants for a 3 x h x w source (throws vgg::Error when unsupported).
am::AugConst augment_const(const Pipeline& ops, int h, int w);
// One sample's parameters, drawn by the same calls as run_pipeline makes for `key` (rrc_params, flip_draw,
// jitter_draw with the same counters), so the GPU path sees the crop, flip and jitter the CPU path would apply.
am::AugSample augment_sample(const Pipeline& ops, int h, int w, uint64_t key);
// What augment.cu computes, on the host: `params` holds n * am::kAugFloats floats (am::pack), src n uint8 CHW
// images of k.h x k.w, out n float32 CHW images of k.oh x k.ow. Equal to run_pipeline's output bit for bit.
void augment_batch_host(const am::AugConst& k, const uint8_t* src, const float* params, int64_t n, float* out);

// augment_batch_host's computation as CUDA kernels, queued on the compute stream: src and params device pointers,
// out n images (3, k.oh, k.ow) in dt (F32 or BF16), NCHW or NHWC (channels_last).
void augment_batch_cuda(void* out, DType dt, bool channels_last, const uint8_t* src, const float* params, int64_t n,
                        const am::AugConst& k);

}  // namespace vgg::data
