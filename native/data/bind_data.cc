// N-API bindings of the data pipeline. Sources are opaque type-tagged externals owning a shared_ptr<Source>; batch
// assembly runs in an AsyncWorker that fans the samples out over `threads` threads and resolves a promise.
#include "data/bind_data.h"

#include <atomic>
#include <mutex>
#include <thread>

#include "cuda/cuda_hooks.h"
#include "data/source.h"
#include "data/transforms.h"
#include "js_tensor.h"
#include "ops.h"
#include "tensor.h"

namespace vgg::js {
namespace {

using data::Op;
using data::Pipeline;
using data::Source;

const napi_type_tag kSourceTag = {0x7667676e65746461ull, 0x736f757263653031ull};

struct SourceHolder {
  std::shared_ptr<Source> src;
};

Napi::Value make_source(Napi::Env env, std::shared_ptr<Source> src) {
  auto ext = Napi::External<SourceHolder>::New(env, new SourceHolder{std::move(src)},
                                               [](Napi::Env, SourceHolder* h) { delete h; });
  ext.TypeTag(&kSourceTag);
  return ext;
}

std::shared_ptr<Source> get_source(const Napi::Value& v, const char* what) {
  if (!v.IsExternal() || !v.As<Napi::Object>().CheckTypeTag(&kSourceTag))
    throw Error(strprintf("%s: expected a native data source", what));
  return v.As<Napi::External<SourceHolder>>().Data()->src;
}

std::vector<int64_t> get_indices(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Error(strprintf("%s: expected an Int32Array", what));
  auto a = v.As<Napi::Int32Array>();
  std::vector<int64_t> out(a.ElementLength());
  for (size_t i = 0; i < out.size(); ++i) out[i] = a[i];
  return out;
}

double num_field(const Napi::Object& o, const char* key, const char* what) {
  return get_number(o.Get(key), (std::string(what) + "." + key).c_str());
}
void pair_field(const Napi::Object& o, const char* key, double out[2], const char* what) {
  Napi::Value v = o.Get(key);
  std::string w = std::string(what) + "." + key;
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 2) throw Error(w + ": expected [number, number]");
  auto a = v.As<Napi::Array>();
  out[0] = get_number(a.Get(0u), w.c_str());
  out[1] = get_number(a.Get(1u), w.c_str());
}
bool jitter_field(const Napi::Object& o, const char* key, float out[2]) {
  Napi::Value v = o.Get(key);
  if (v.IsNull() || v.IsUndefined()) return false;
  double d[2];
  pair_field(o, key, d, "colorJitter");
  out[0] = float(d[0]);
  out[1] = float(d[1]);
  return true;
}
void hw_field(const Napi::Object& o, Op& op, const char* what) {
  double s[2];
  pair_field(o, "size", s, what);
  op.h = int(s[0]);
  op.w = int(s[1]);
  VGG_CHECK(op.h > 0 && op.w > 0, "%s: size must be positive, got [%d, %d]", what, op.h, op.w);
}

// A flat array of transform descriptions (see lib/data/transforms.ts).
Pipeline get_pipeline(const Napi::Value& v) {
  Pipeline ops;
  if (v.IsUndefined() || v.IsNull()) return ops;
  if (!v.IsArray()) throw Error("transforms: expected an array of transform descriptions");
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) throw Error("transforms: expected an object with a `type`");
    auto o = e.As<Napi::Object>();
    std::string type = get_string(o.Get("type"), "transforms: type");
    Op op;
    if (type == "resize") {
      op.kind = Op::Resize;
      Napi::Value s = o.Get("size");
      if (s.IsNumber()) op.short_side = int(get_int(s, "resize.size"));
      else hw_field(o, op, "resize");
      Napi::Value m = o.Get("maxSize");
      if (m.IsNumber()) op.max_size = int(get_int(m, "resize.maxSize"));
      VGG_CHECK(op.short_side >= 0, "resize: size must be positive");
    } else if (type == "centerCrop") {
      op.kind = Op::CenterCrop;
      hw_field(o, op, "centerCrop");
    } else if (type == "randomResizedCrop") {
      op.kind = Op::RandomResizedCrop;
      hw_field(o, op, "randomResizedCrop");
      pair_field(o, "scale", op.scale, "randomResizedCrop");
      pair_field(o, "ratio", op.ratio, "randomResizedCrop");
      VGG_CHECK(op.ratio[0] > 0 && op.ratio[1] > 0 && op.scale[0] >= 0 && op.scale[1] > 0,
                "randomResizedCrop: scale and ratio must be positive");
    } else if (type == "randomHorizontalFlip") {
      op.kind = Op::HFlip;
      op.p = num_field(o, "p", "randomHorizontalFlip");
    } else if (type == "colorJitter") {
      op.kind = Op::ColorJitter;
      op.has_b = jitter_field(o, "brightness", op.b);
      op.has_c = jitter_field(o, "contrast", op.c);
      op.has_s = jitter_field(o, "saturation", op.s);
      op.has_h = jitter_field(o, "hue", op.hu);
    } else if (type == "normalize") {
      op.kind = Op::Normalize;
      for (const char* key : {"mean", "std"}) {
        Napi::Value a = o.Get(key);
        if (!a.IsArray() || a.As<Napi::Array>().Length() != 3)
          throw Error(strprintf("normalize.%s: expected 3 numbers", key));
        for (uint32_t c = 0; c < 3; ++c) {
          float x = float(get_number(a.As<Napi::Array>().Get(c), "normalize"));
          (key[0] == 'm' ? op.mean : op.std)[c] = x;
        }
      }
      for (float s : op.std) VGG_CHECK(s != 0.f, "normalize: std must be non-zero");
    } else {
      throw Error("transforms: unknown transform type '" + type + "'");
    }
    ops.push_back(op);
  }
  return ops;
}

uint64_t get_u64(const Napi::Value& v, const char* what) {
  double d = get_number(v, what);
  VGG_CHECK(d >= 0 && d <= 9007199254740991.0 && d == double(uint64_t(d)), "%s: expected a non-negative integer",
            what);
  return uint64_t(d);
}

// ---- sources -------------------------------------------------------------------------------------------------

// dataStl10Source(parts: [xPath, yPath|null][], subset?: Int32Array)
Napi::Value Stl10Source(const Napi::CallbackInfo& info) {
  auto src = std::make_shared<data::Stl10Source>();
  Napi::Value parts = arg(info, 0);
  if (!parts.IsArray()) throw Error("dataStl10Source: expected an array of [xPath, yPath|null]");
  auto a = parts.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    auto p = a.Get(i).As<Napi::Array>();
    std::string x = get_string(p.Get(0u), "dataStl10Source: xPath");
    Napi::Value y = p.Get(1u);
    src->add_part(x, y.IsString() ? y.As<Napi::String>().Utf8Value() : std::string());
  }
  Napi::Value sub = arg(info, 1);
  if (!sub.IsUndefined() && !sub.IsNull()) src->set_subset(get_indices(sub, "dataStl10Source: subset"));
  return make_source(info.Env(), src);
}

// dataMemorySource(images: Uint8Array[], shapes: Int32Array [c,h,w]*n, labels: Int32Array, hwc?: boolean)
// images are CHW, or HWC (interleaved) when `hwc`; they are copied into native memory.
Napi::Value MemorySource(const Napi::CallbackInfo& info) {
  auto src = std::make_shared<data::MemorySource>();
  Napi::Value imgs = arg(info, 0);
  if (!imgs.IsArray()) throw Error("dataMemorySource: expected an array of Uint8Array");
  auto a = imgs.As<Napi::Array>();
  auto shapes = get_indices(arg(info, 1), "dataMemorySource: shapes");
  auto labels = get_indices(arg(info, 2), "dataMemorySource: labels");
  const bool hwc = arg(info, 3).IsBoolean() && arg(info, 3).As<Napi::Boolean>().Value();
  VGG_CHECK(shapes.size() == 3 * size_t(a.Length()) && labels.size() == a.Length(),
            "dataMemorySource: %u images need %u shape entries and %u labels", a.Length(), 3 * a.Length(),
            a.Length());
  src->items.resize(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Error(strprintf("dataMemorySource: image %u: expected a Uint8Array", i));
    auto u = v.As<Napi::Uint8Array>();
    auto& it = src->items[i];
    it.c = int(shapes[3 * i]); it.h = int(shapes[3 * i + 1]); it.w = int(shapes[3 * i + 2]);
    it.label = int(labels[i]);
    VGG_CHECK(it.c > 0 && it.h > 0 && it.w > 0 && size_t(it.c) * it.h * it.w == u.ByteLength(),
              "dataMemorySource: image %u: %zu bytes do not match shape [%d,%d,%d]", i, u.ByteLength(), it.c, it.h,
              it.w);
    if (hwc && it.c > 1) {  // interleaved (as decoders give it) -> planar
      it.chw.resize(u.ByteLength());
      const uint8_t* src_px = u.Data();
      const size_t n = size_t(it.h) * it.w;
      for (size_t px = 0; px < n; ++px)
        for (int ch = 0; ch < it.c; ++ch) it.chw[ch * n + px] = src_px[px * it.c + ch];
    } else {
      it.chw.assign(u.Data(), u.Data() + u.ByteLength());
    }
  }
  return make_source(info.Env(), src);
}

Napi::Value SourceLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(get_source(arg(info, 0), "dataSourceLength")->size()));
}

Napi::Value SourceLabels(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataSourceLabels");
  auto out = Napi::Int32Array::New(info.Env(), size_t(src->size()));
  for (int64_t i = 0; i < src->size(); ++i) out[size_t(i)] = src->label(i);
  return out;
}

// dataGet(source, i) -> { image: NativeTensor uint8 [c,h,w], label }
Napi::Value Get(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataGet");
  int64_t i = get_int(arg(info, 1), "dataGet: index");
  src->check_index(i);
  int c, h, w;
  src->shape(i, c, h, w);
  Tensor t = Tensor::empty({c, h, w}, DType::U8, Device::CPU);
  src->read(i, t.data<uint8_t>());
  auto o = Napi::Object::New(info.Env());
  o.Set("image", wrap(info.Env(), t));
  o.Set("label", Napi::Number::New(info.Env(), src->label(i)));
  return o;
}

// dataGetTransformed(source, i, ops, seed, epoch) -> { image: NativeTensor float32 [c,h,w], label }
Napi::Value GetTransformed(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataGetTransformed");
  int64_t i = get_int(arg(info, 1), "dataGetTransformed: index");
  Pipeline ops = get_pipeline(arg(info, 2));
  uint64_t seed = get_u64(arg(info, 3), "dataGetTransformed: seed");
  uint64_t epoch = get_u64(arg(info, 4), "dataGetTransformed: epoch");
  src->check_index(i);
  int c, h, w;
  src->shape(i, c, h, w);
  std::vector<uint8_t> buf(size_t(c) * h * w);
  src->read(i, buf.data());
  int oc = c, oh = h, ow = w;
  data::output_shape(ops, oc, oh, ow);
  Tensor t = Tensor::empty({oc, oh, ow}, DType::F32, Device::CPU);
  data::run_pipeline(ops, buf.data(), c, h, w, data::sample_key(seed, epoch, uint64_t(i)), t.data<float>());
  auto o = Napi::Object::New(info.Env());
  o.Set("image", wrap(info.Env(), t));
  o.Set("label", Napi::Number::New(info.Env(), src->label(i)));
  return o;
}

// dataTransformImage(u8: Uint8Array CHW, shape [c,h,w], ops, seed, epoch, index) -> { data: Float32Array, shape }
// (a tensor-free entry point for tests and tools)
Napi::Value TransformImage(const Napi::CallbackInfo& info) {
  Napi::Value v = arg(info, 0);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Error("dataTransformImage: expected a Uint8Array");
  auto u = v.As<Napi::Uint8Array>();
  Shape s = get_shape(arg(info, 1), "dataTransformImage: shape");
  VGG_CHECK(s.size() == 3 && size_t(shape_numel(s)) == u.ByteLength(),
            "dataTransformImage: shape %s does not match %zu bytes", shape_str(s).c_str(), u.ByteLength());
  Pipeline ops = get_pipeline(arg(info, 2));
  uint64_t key = data::sample_key(get_u64(arg(info, 3), "seed"), get_u64(arg(info, 4), "epoch"),
                                  get_u64(arg(info, 5), "index"));
  int c = int(s[0]), h = int(s[1]), w = int(s[2]);
  std::vector<uint8_t> in(u.Data(), u.Data() + u.ByteLength());
  data::output_shape(ops, c, h, w);
  auto out = Napi::Float32Array::New(info.Env(), size_t(c) * h * w);
  data::run_pipeline(ops, in.data(), int(s[0]), int(s[1]), int(s[2]), key, out.Data());
  auto o = Napi::Object::New(info.Env());
  o.Set("data", out);
  auto sh = Napi::Array::New(info.Env(), 3);
  sh.Set(0u, c); sh.Set(1u, h); sh.Set(2u, w);
  o.Set("shape", sh);
  return o;
}

// ---- batch assembly ------------------------------------------------------------------------------------------

// The source shape shared by every sample, for the GPU augmentation path (raw batches): 3 channels, one size.
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

// Without `raw`: the transformed float32 batch. With `raw` (augmentation on the GPU): the source images as uint8
// [n, 3, h, w] and each sample's parameters as float32 [n, kAugFloats] (data::augment_sample), for dataAugmentBatch.
class BatchWorker : public Napi::AsyncWorker {
 public:
  BatchWorker(Napi::Env env, std::shared_ptr<Source> src, std::vector<int64_t> idx, Pipeline ops, uint64_t seed,
              uint64_t epoch, int threads, bool raw)
      : Napi::AsyncWorker(env, "vggnet:loadBatch"), deferred_(Napi::Promise::Deferred::New(env)),
        src_(std::move(src)), idx_(std::move(idx)), ops_(std::move(ops)), seed_(seed), epoch_(epoch),
        threads_(threads), raw_(raw) {
    const int64_t n = int64_t(idx_.size());
    VGG_CHECK(n > 0, "loadBatch: empty batch");
    if (raw_) {
      for (int64_t i : idx_) src_->check_index(i);
      uniform_source_shape(*src_, idx_, h_, w_, "loadBatch");
      data::augment_const(ops_, h_, w_);  // throws when the pipeline cannot run on the GPU
      images_ = Tensor::empty({n, 3, h_, w_}, DType::U8, Device::CPU);
      params_ = Tensor::empty({n, data::am::kAugFloats}, DType::F32, Device::CPU);
      labels_ = Tensor::empty({n}, DType::I32, Device::CPU);
      for (int64_t k = 0; k < n; ++k) labels_.data<int32_t>()[k] = src_->label(idx_[size_t(k)]);
      per_ = size_t(3) * h_ * w_;
      return;
    }
    int c0 = 0, h0 = 0, w0 = 0;
    for (int64_t k = 0; k < n; ++k) {
      src_->check_index(idx_[size_t(k)]);
      int c, h, w;
      src_->shape(idx_[size_t(k)], c, h, w);
      data::output_shape(ops_, c, h, w);
      if (k == 0) { c0 = c; h0 = h; w0 = w; }
      VGG_CHECK(c == c0 && h == h0 && w == w0,
                "loadBatch: sample %lld gives a [%d,%d,%d] image but sample %lld gives [%d,%d,%d]; add a resize/crop "
                "transform so every sample has the same size",
                (long long)idx_[size_t(k)], c, h, w, (long long)idx_[0], c0, h0, w0);
    }
    images_ = Tensor::empty({n, c0, h0, w0}, DType::F32, Device::CPU);
    labels_ = Tensor::empty({n}, DType::I32, Device::CPU);
    for (int64_t k = 0; k < n; ++k) labels_.data<int32_t>()[k] = src_->label(idx_[size_t(k)]);
    per_ = size_t(c0) * h0 * w0;
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
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
          const uint64_t key = data::sample_key(seed_, epoch_, uint64_t(i));
          if (raw_) {
            src_->read(i, images_.data<uint8_t>() + size_t(k) * per_);
            data::am::pack(data::augment_sample(ops_, h_, w_, key),
                           params_.data<float>() + size_t(k) * data::am::kAugFloats);
            continue;
          }
          int c, h, w;
          src_->shape(i, c, h, w);
          buf.resize(size_t(c) * h * w);
          src_->read(i, buf.data());
          data::run_pipeline(ops_, buf.data(), c, h, w, key, images_.data<float>() + size_t(k) * per_);
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
    if (!err.empty()) SetError(err);
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto o = Napi::Object::New(env);
    o.Set("images", wrap(env, images_));
    o.Set("labels", wrap(env, labels_));
    if (raw_) o.Set("params", wrap(env, params_));
    images_ = Tensor();
    labels_ = Tensor();
    params_ = Tensor();
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Source> src_;
  std::vector<int64_t> idx_;
  Pipeline ops_;
  uint64_t seed_, epoch_;
  int threads_;
  bool raw_;
  int h_ = 0, w_ = 0;  // raw: the source size
  Tensor images_, labels_, params_;
  size_t per_ = 0;  // elements per sample in images_
};

// dataLoadBatch(source, indices: Int32Array, ops, seed, epoch, threads, raw?) -> Promise<{ images, labels, params? }>
Napi::Value LoadBatch(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataLoadBatch");
  auto idx = get_indices(arg(info, 1), "dataLoadBatch: indices");
  Pipeline ops = get_pipeline(arg(info, 2));
  uint64_t seed = get_u64(arg(info, 3), "dataLoadBatch: seed");
  uint64_t epoch = get_u64(arg(info, 4), "dataLoadBatch: epoch");
  int64_t threads = get_int(arg(info, 5), "dataLoadBatch: threads");
  VGG_CHECK(threads >= 1 && threads <= 1024, "dataLoadBatch: threads must be in 1..1024, got %lld",
            (long long)threads);
  const bool raw = !arg(info, 6).IsUndefined() && get_bool(arg(info, 6), "dataLoadBatch: raw");
  auto* w = new BatchWorker(info.Env(), std::move(src), std::move(idx), std::move(ops), seed, epoch, int(threads),
                            raw);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// ---- augmentation on the GPU --------------------------------------------------------------------------------

// dataAugmentSupport(source, ops) -> null when raw batches of this source can be augmented by dataAugmentBatch,
// else the reason (a string).
Napi::Value AugmentSupport(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataAugmentSupport");
  Pipeline ops = get_pipeline(arg(info, 1));
  std::string why = data::augment_unsupported(ops);
  if (why.empty() && src->size() == 0) why = "the dataset is empty";
  if (why.empty()) {
    std::vector<int64_t> all(size_t(src->size()));
    for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
    try {
      int h = 0, w = 0;
      uniform_source_shape(*src, all, h, w, "dataset");
      data::augment_const(ops, h, w);
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  if (why.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), why);
}

// dataAugmentBatch(images uint8 [n,3,h,w], params float32 [n,16], ops, dtype, layout) -> Tensor [n,3,oh,ow]
// On CUDA tensors: the kernels of native/cuda/augment.cu, queued on the default stream. On CPU tensors: the host
// twin (data::augment_batch_host), float32 computed, then cast / laid out as asked.
Napi::Value AugmentBatch(const Napi::CallbackInfo& info) {
  const char* op = "augmentBatch";
  Tensor& images = unwrap(arg(info, 0), "augmentBatch: images");
  Tensor& params = unwrap(arg(info, 1), "augmentBatch: params");
  Pipeline ops = get_pipeline(arg(info, 2));
  const DType dt = arg(info, 3).IsUndefined() ? DType::F32 : dtype_from_name(get_string(arg(info, 3), op));
  const std::string ls = arg(info, 4).IsUndefined() ? "nchw" : get_string(arg(info, 4), op);
  VGG_CHECK(ls == "nchw" || ls == "nhwc", "%s: layout must be nchw or nhwc, got '%s'", op, ls.c_str());
  const Layout layout = ls == "nhwc" ? Layout::ChannelsLast : Layout::Contiguous;
  VGG_CHECK(dt == DType::F32 || dt == DType::BF16, "%s: dtype must be float32 or bfloat16, got %s", op,
            dtype_name(dt));
  check_dtype(images, DType::U8, "augmentBatch: images");
  check_ndim(images, 4, "augmentBatch: images");
  VGG_CHECK(images.layout == Layout::Contiguous && images.dim(1) == 3,
            "%s: images must be uint8 [n, 3, h, w] (contiguous), got %s", op, images.describe().c_str());
  const int64_t n = images.dim(0);
  VGG_CHECK(n > 0, "%s: empty batch", op);
  check_dtype(params, DType::F32, "augmentBatch: params");
  check_shape(params, {n, data::am::kAugFloats}, "augmentBatch: params");
  check_device(params, images.device(), "augmentBatch: params");
  VGG_CHECK(images.dim(2) <= (1 << 24) && images.dim(3) <= (1 << 24), "%s: image too large", op);
  const data::am::AugConst k = data::augment_const(ops, int(images.dim(2)), int(images.dim(3)));
  const Shape out_shape = {n, 3, k.oh, k.ow};
  if (images.device() == Device::CUDA) {
    Tensor out = Tensor::empty(out_shape, dt, Device::CUDA, layout);
    cuda_augment(out.raw(), dt, layout == Layout::ChannelsLast, images.data<uint8_t>(), params.data<float>(), n, k);
    return wrap(info.Env(), out);
  }
  // Host: check the parameters the kernels would trust (a window inside the image, a permutation).
  const float* p = params.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const data::am::AugSample s = data::am::unpack(p + i * data::am::kAugFloats);
    int seen = 0;
    for (int t = 0; t < 4; ++t) seen |= (s.perm[t] >= 0 && s.perm[t] < 4) ? 1 << s.perm[t] : 0;
    VGG_CHECK(s.ch > 0 && s.cw > 0 && seen == 15, "%s: params of sample %lld are not valid", op, (long long)i);
  }
  Tensor out = Tensor::empty(out_shape, DType::F32, Device::CPU);
  data::augment_batch_host(k, images.data<uint8_t>(), p, n, out.data<float>());
  if (dt != DType::F32) out = cpu_backend().cast(out, dt);
  if (layout != Layout::Contiguous) out = cpu_backend().to_layout(out, layout);
  return wrap(info.Env(), out);
}

}  // namespace

void init_data(Napi::Env env, Napi::Object exports) {
  exports.Set("dataStl10Source", Napi::Function::New(env, Stl10Source, "dataStl10Source"));
  exports.Set("dataMemorySource", Napi::Function::New(env, MemorySource, "dataMemorySource"));
  exports.Set("dataSourceLength", Napi::Function::New(env, SourceLength, "dataSourceLength"));
  exports.Set("dataSourceLabels", Napi::Function::New(env, SourceLabels, "dataSourceLabels"));
  exports.Set("dataGet", Napi::Function::New(env, Get, "dataGet"));
  exports.Set("dataGetTransformed", Napi::Function::New(env, GetTransformed, "dataGetTransformed"));
  exports.Set("dataTransformImage", Napi::Function::New(env, TransformImage, "dataTransformImage"));
  exports.Set("dataLoadBatch", Napi::Function::New(env, LoadBatch, "dataLoadBatch"));
  exports.Set("dataAugmentSupport", Napi::Function::New(env, AugmentSupport, "dataAugmentSupport"));
  exports.Set("dataAugmentBatch", Napi::Function::New(env, AugmentBatch, "dataAugmentBatch"));
}

}  // namespace vgg::js
