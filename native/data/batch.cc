#include "data/batch.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "data/augment.h"
#include "ops.h"

namespace vgg::data {

Tensor read_sample(const Source& src, int64_t i) {
  src.check_index(i);
  int c, h, w;
  src.shape(i, c, h, w);
  Tensor t = Tensor::empty({c, h, w}, DType::U8, Device::CPU);
  src.read(i, t.data<uint8_t>());
  return t;
}

Tensor transform_sample(const Source& src, int64_t i, const Pipeline& ops, uint64_t seed, uint64_t epoch) {
  src.check_index(i);
  int c, h, w;
  src.shape(i, c, h, w);
  std::vector<uint8_t> buf(size_t(c) * h * w);
  src.read(i, buf.data());
  int oc = c, oh = h, ow = w;
  output_shape(ops, oc, oh, ow);
  Tensor t = Tensor::empty({oc, oh, ow}, DType::F32, Device::CPU);
  run_pipeline(ops, buf.data(), c, h, w, sample_key(seed, epoch, uint64_t(i)), t.data<float>());
  return t;
}

namespace {
// The source shape shared by every sample, for raw batches: 3 channels, one size.
void uniform_source_shape(const Source& src, const std::vector<int64_t>& idx, int& h, int& w, const char* what) {
  for (size_t k = 0; k < idx.size(); ++k) {
    int c, hh, ww;
    src.shape(idx[k], c, hh, ww);
    VGG_CHECK(c == 3, "%s: sample %lld has %d channels; augmentation on the GPU needs 3", what, (long long)idx[k], c);
    if (k == 0) {
      h = hh;
      w = ww;
    }
    VGG_CHECK(hh == h && ww == w,
              "%s: sample %lld is %dx%d but sample %lld is %dx%d; augmentation on the GPU needs one image size per "
              "batch (use the CPU transforms for this dataset)",
              what, (long long)idx[k], hh, ww, (long long)idx[0], h, w);
  }
}
}  // namespace

BatchAssembler::BatchAssembler(std::shared_ptr<const Source> src, std::vector<int64_t> idx, Pipeline ops,
                               uint64_t seed, uint64_t epoch, int threads, bool raw)
    : src_(std::move(src)), idx_(std::move(idx)), ops_(std::move(ops)), seed_(seed), epoch_(epoch),
      threads_(threads), raw_(raw) {
  const int64_t n = int64_t(idx_.size());
  VGG_CHECK(n > 0, "loadBatch: empty batch");
  for (int64_t i : idx_) src_->check_index(i);
  labels = Tensor::empty({n}, DType::I32, Device::CPU);
  for (int64_t k = 0; k < n; ++k) labels.data<int32_t>()[k] = src_->label(idx_[size_t(k)]);
  if (raw_) {
    uniform_source_shape(*src_, idx_, h_, w_, "loadBatch");
    augment_const(ops_, h_, w_);  // throws when the pipeline cannot run on the GPU
    images = Tensor::empty({n, 3, h_, w_}, DType::U8, Device::CPU);
    params = Tensor::empty({n, am::kAugFloats}, DType::F32, Device::CPU);
    per_ = size_t(3) * h_ * w_;
    return;
  }
  int c0 = 0, h0 = 0, w0 = 0;
  for (int64_t k = 0; k < n; ++k) {
    int c, h, w;
    src_->shape(idx_[size_t(k)], c, h, w);
    output_shape(ops_, c, h, w);
    if (k == 0) {
      c0 = c;
      h0 = h;
      w0 = w;
    }
    VGG_CHECK(c == c0 && h == h0 && w == w0,
              "loadBatch: sample %lld gives a [%d,%d,%d] image but sample %lld gives [%d,%d,%d]; add a resize/crop "
              "transform so every sample has the same size",
              (long long)idx_[size_t(k)], c, h, w, (long long)idx_[0], c0, h0, w0);
  }
  images = Tensor::empty({n, c0, h0, w0}, DType::F32, Device::CPU);
  per_ = size_t(c0) * h0 * w0;
}

void BatchAssembler::run() {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::string err;
  const int64_t n = int64_t(idx_.size());
  auto work = [&] {
    std::vector<uint8_t> buf;
    for (;;) {
      int64_t k = next.fetch_add(1);
      if (k >= n) break;
      try {
        int64_t i = idx_[size_t(k)];
        const uint64_t key = sample_key(seed_, epoch_, uint64_t(i));
        if (raw_) {
          src_->read(i, images.data<uint8_t>() + size_t(k) * per_);
          am::pack(augment_sample(ops_, h_, w_, key), params.data<float>() + size_t(k) * am::kAugFloats);
          continue;
        }
        int c, h, w;
        src_->shape(i, c, h, w);
        buf.resize(size_t(c) * h * w);
        src_->read(i, buf.data());
        run_pipeline(ops_, buf.data(), c, h, w, key, images.data<float>() + size_t(k) * per_);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        if (err.empty()) err = e.what();
        next.store(n);
      }
    }
  };
  int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads_, n)));
  std::vector<std::thread> pool;
  try {
    for (int t = 1; t < nt; ++t) pool.emplace_back(work);
  } catch (const std::exception&) {
    // could not start more threads: the ones we have do the work
  }
  work();
  for (auto& th : pool) th.join();
  if (!err.empty()) throw Error(err);
}

std::string augment_support(const Source& src, const Pipeline& ops) {
  std::string why = augment_unsupported(ops);
  if (why.empty() && src.size() == 0) why = "the dataset is empty";
  if (!why.empty()) return why;
  std::vector<int64_t> all(size_t(src.size()));
  for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
  try {
    int h = 0, w = 0;
    uniform_source_shape(src, all, h, w, "dataset");
    augment_const(ops, h, w);
  } catch (const std::exception& e) {
    why = e.what();
  }
  return why;
}

Tensor augment_batch(const Tensor& images, const Tensor& params, const Pipeline& ops, DType dt, Layout layout) {
  const char* op = "augmentBatch";
  VGG_CHECK(dt == DType::F32 || dt == DType::BF16, "%s: dtype must be float32 or bfloat16, got %s", op,
            dtype_name(dt));
  VGG_CHECK(layout == Layout::Contiguous || layout == Layout::ChannelsLast, "%s: layout must be nchw or nhwc", op);
  check_dtype(images, DType::U8, "augmentBatch: images");
  check_ndim(images, 4, "augmentBatch: images");
  VGG_CHECK(images.layout == Layout::Contiguous && images.dim(1) == 3,
            "%s: images must be uint8 [n, 3, h, w] (contiguous), got %s", op, images.describe().c_str());
  const int64_t n = images.dim(0);
  VGG_CHECK(n > 0, "%s: empty batch", op);
  check_dtype(params, DType::F32, "augmentBatch: params");
  check_shape(params, {n, am::kAugFloats}, "augmentBatch: params");
  check_device(params, images.device(), "augmentBatch: params");
  VGG_CHECK(images.dim(2) <= (1 << 24) && images.dim(3) <= (1 << 24), "%s: image too large", op);
  const am::AugConst k = augment_const(ops, int(images.dim(2)), int(images.dim(3)));
  const Shape out_shape = {n, 3, k.oh, k.ow};
  if (images.device() == Device::CUDA) {
    Tensor out = Tensor::empty(out_shape, dt, Device::CUDA, layout);
    augment_batch_cuda(out.raw(), dt, layout == Layout::ChannelsLast, images.data<uint8_t>(), params.data<float>(),
                       n, k);
    return out;
  }
  // Host: check the parameters the kernels would trust (a window inside the image, a permutation).
  const float* p = params.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const am::AugSample s = am::unpack(p + i * am::kAugFloats);
    int seen = 0;
    for (int t = 0; t < 4; ++t) seen |= (s.perm[t] >= 0 && s.perm[t] < 4) ? 1 << s.perm[t] : 0;
    VGG_CHECK(s.ch > 0 && s.cw > 0 && seen == 15, "%s: params of sample %lld are not valid", op, (long long)i);
  }
  Tensor out = Tensor::empty(out_shape, DType::F32, Device::CPU);
  augment_batch_host(k, images.data<uint8_t>(), p, n, out.data<float>());
  if (dt != DType::F32) out = cpu_backend().cast(out, dt);
  if (layout != Layout::Contiguous) out = cpu_backend().to_layout(out, layout);
  return out;
}

}  // namespace vgg::data
