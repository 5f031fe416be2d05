// Samples and batches from a Source: one sample as stored or transformed, a batch assembled on worker threads
// (transformed float32 images, or raw uint8 images plus each sample's drawn augmentation parameters), and the
// deferred augmentation of such raw batches on the device they are on.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../tensor.h"
#include "source.h"
#include "transforms.h"

namespace vgg::data {

// Sample i as stored: uint8 (c, h, w).
Tensor read_sample(const Source& src, int64_t i);
// Sample i through `ops` with the randomness of (seed, epoch, i): float32 (c, h, w) of output_shape.
Tensor transform_sample(const Source& src, int64_t i, const Pipeline& ops, uint64_t seed, uint64_t epoch);

// A batch of samples `idx`. The constructor validates and allocates on the calling thread (so a bad index or mixed
// sizes is an error before any work starts); run() fills it on `threads` threads and throws the first sample's error.
// Without `raw`: images float32 (n, c, h, w), transformed. With `raw` (augmentation later, on the GPU): images uint8
// (n, 3, h, w) as stored and params float32 (n, am::kAugFloats) (augment_sample, packed).
class BatchAssembler {
 public:
  BatchAssembler(std::shared_ptr<const Source> src, std::vector<int64_t> idx, Pipeline ops, uint64_t seed,
                 uint64_t epoch, int threads, bool raw);
  void run();
  bool raw() const { return raw_; }
  Tensor images, labels, params;  // params: only with raw

 private:
  std::shared_ptr<const Source> src_;
  std::vector<int64_t> idx_;
  Pipeline ops_;
  uint64_t seed_, epoch_;
  int threads_;
  bool raw_;
  int h_ = 0, w_ = 0;  // raw: the source size
  size_t per_ = 0;     // elements per sample in images
};

// "" when raw batches of `src` can be augmented with `ops` (augment_batch), else the reason.
std::string augment_support(const Source& src, const Pipeline& ops);
// Runs `ops` over a raw batch (uint8 images (n, 3, h, w), params (n, am::kAugFloats), both on one device): on the
// GPU for CUDA tensors, on the host otherwise. The result is (n, 3, oh, ow) in dt (F32/BF16) and `layout`.
Tensor augment_batch(const Tensor& images, const Tensor& params, const Pipeline& ops, DType dt, Layout layout);

}  // namespace vgg::data
