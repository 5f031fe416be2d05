// N-API bindings of the data layer (native/data/): argument conversion only. Sources are opaque type-tagged externals
// owning a shared_ptr<Source>; a batch is assembled by data::BatchAssembler in an AsyncWorker (off the JS thread)
// that resolves a promise.
#include "bindings/bind_data.h"

#include <cmath>

#include "bindings/js_tensor.h"
#include "data/batch.h"
#include "data/source.h"
#include "data/transforms.h"
#include "tensor.h"

namespace vgg::js {
namespace {

constexpr int kMaxSide = 1 << 16;  // the largest image side a transform may produce

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
    throw TypeError(strprintf("%s: expected a native data source", what));
  return v.As<Napi::External<SourceHolder>>().Data()->src;
}

std::vector<int64_t> get_indices(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw TypeError(strprintf("%s: expected an Int32Array", what));
  auto a = v.As<Napi::Int32Array>();
  std::vector<int64_t> out(a.ElementLength());
  for (size_t i = 0; i < out.size(); ++i) out[i] = a[i];
  return out;
}

double num_field(const Napi::Object& o, const char* key, const char* what) {
  return get_finite(o.Get(key), (std::string(what) + "." + key).c_str());
}
void pair_field(const Napi::Object& o, const char* key, double out[2], const char* what) {
  Napi::Value v = o.Get(key);
  std::string w = std::string(what) + "." + key;
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 2) throw Error(w + ": expected [number, number]");
  auto a = v.As<Napi::Array>();
  out[0] = get_finite(a.Get(0u), w.c_str());
  out[1] = get_finite(a.Get(1u), w.c_str());
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
  // Checked as doubles: converting an out-of-range double to int is undefined behaviour.
  VGG_CHECK_RANGE(s[0] >= 1 && s[1] >= 1 && s[0] <= kMaxSide && s[1] <= kMaxSide && s[0] == std::trunc(s[0]) &&
                s[1] == std::trunc(s[1]),
            "%s: size must be two integers in 1..%d, got [%g, %g]", what, kMaxSide, s[0], s[1]);
  op.h = int(s[0]);
  op.w = int(s[1]);
}

// A flat array of transform descriptions (see lib/data/transforms.ts).
Pipeline get_pipeline(const Napi::Value& v) {
  Pipeline ops;
  if (v.IsUndefined() || v.IsNull()) return ops;
  if (!v.IsArray()) throw TypeError("transforms: expected an array of transform descriptions");
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) throw TypeError("transforms: expected an object with a `type`");
    auto o = e.As<Napi::Object>();
    std::string type = get_string(o.Get("type"), "transforms: type");
    Op op;
    if (type == "resize") {
      op.kind = Op::Resize;
      Napi::Value s = o.Get("size");
      if (s.IsNumber()) op.short_side = get_int32(s, "resize.size");
      else hw_field(o, op, "resize");
      Napi::Value m = o.Get("maxSize");
      if (m.IsNumber()) op.max_size = get_int32(m, "resize.maxSize");
      VGG_CHECK_RANGE(op.short_side >= 0 && op.short_side <= kMaxSide && op.max_size >= 0 && op.max_size <= kMaxSide,
                "resize: size and maxSize must be in 1..%d", kMaxSide);
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
      VGG_CHECK_RANGE(op.p >= 0 && op.p <= 1, "randomHorizontalFlip: p must be in [0, 1], got %g", double(op.p));
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
          float x = float(get_finite(a.As<Napi::Array>().Get(c), "normalize"));
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
  VGG_CHECK_RANGE(d >= 0 && d <= 9007199254740991.0 && d == double(uint64_t(d)), "%s: expected a non-negative integer",
            what);
  return uint64_t(d);
}

// ---- sources -------------------------------------------------------------------------------------------------

// dataStl10Source(parts: [xPath, yPath|null][], subset?: Int32Array)
Napi::Value Stl10Source(const Napi::CallbackInfo& info) {
  auto src = std::make_shared<data::Stl10Source>();
  Napi::Value parts = arg(info, 0);
  if (!parts.IsArray()) throw TypeError("dataStl10Source: expected an array of [xPath, yPath|null]");
  auto a = parts.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsArray()) throw TypeError("dataStl10Source: expected an array of [xPath, yPath|null]");
    auto p = e.As<Napi::Array>();
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
  if (!imgs.IsArray()) throw TypeError("dataMemorySource: expected an array of Uint8Array");
  auto a = imgs.As<Napi::Array>();
  auto shapes = get_indices(arg(info, 1), "dataMemorySource: shapes");
  auto labels = get_indices(arg(info, 2), "dataMemorySource: labels");
  const bool hwc = arg(info, 3).IsBoolean() && arg(info, 3).As<Napi::Boolean>().Value();
  VGG_CHECK(shapes.size() == 3 * size_t(a.Length()) && labels.size() == a.Length(),
            "dataMemorySource: %u images need %u shape entries and %u labels", a.Length(), 3 * a.Length(),
            a.Length());
  src->items.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value v = a.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw TypeError(strprintf("dataMemorySource: image %u: expected a Uint8Array", i));
    auto u = v.As<Napi::Uint8Array>();
    src->add(u.Data(), u.ByteLength(), int(shapes[3 * i]), int(shapes[3 * i + 1]), int(shapes[3 * i + 2]),
             int(labels[i]), hwc, i);
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
  Tensor t = data::read_sample(*src, i);
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
  Tensor t = data::transform_sample(*src, i, ops, seed, epoch);
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
    throw TypeError("dataTransformImage: expected a Uint8Array");
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

class BatchWorker : public Napi::AsyncWorker {
 public:
  BatchWorker(Napi::Env env, std::unique_ptr<data::BatchAssembler> batch)
      : Napi::AsyncWorker(env, "vggnet:loadBatch"), deferred_(Napi::Promise::Deferred::New(env)),
        batch_(std::move(batch)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      batch_->run();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto o = Napi::Object::New(env);
    o.Set("images", wrap(env, batch_->images));
    o.Set("labels", wrap(env, batch_->labels));
    if (batch_->raw()) o.Set("params", wrap(env, batch_->params));
    batch_.reset();
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::unique_ptr<data::BatchAssembler> batch_;
};

// dataLoadBatch(source, indices: Int32Array, ops, seed, epoch, threads, raw?) -> Promise<{ images, labels, params? }>
Napi::Value LoadBatch(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataLoadBatch");
  auto idx = get_indices(arg(info, 1), "dataLoadBatch: indices");
  Pipeline ops = get_pipeline(arg(info, 2));
  uint64_t seed = get_u64(arg(info, 3), "dataLoadBatch: seed");
  uint64_t epoch = get_u64(arg(info, 4), "dataLoadBatch: epoch");
  int64_t threads = get_int(arg(info, 5), "dataLoadBatch: threads");
  VGG_CHECK_RANGE(threads >= 1 && threads <= 1024, "dataLoadBatch: threads must be in 1..1024, got %lld",
            (long long)threads);
  const bool raw = !arg(info, 6).IsUndefined() && get_bool(arg(info, 6), "dataLoadBatch: raw");
  // Validates and allocates here, so a bad index or mixed sizes throws synchronously.
  auto batch = std::make_unique<data::BatchAssembler>(std::move(src), std::move(idx), std::move(ops), seed, epoch,
                                                      int(threads), raw);
  auto* w = new BatchWorker(info.Env(), std::move(batch));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// ---- augmentation on the GPU --------------------------------------------------------------------------------

// dataAugmentSupport(source, ops) -> null when raw batches of this source can be augmented by dataAugmentBatch,
// else the reason (a string).
Napi::Value AugmentSupport(const Napi::CallbackInfo& info) {
  auto src = get_source(arg(info, 0), "dataAugmentSupport");
  const std::string why = data::augment_support(*src, get_pipeline(arg(info, 1)));
  if (why.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), why);
}

// dataAugmentBatch(images uint8 [n,3,h,w], params float32 [n,16], ops, dtype, layout) -> Tensor [n,3,oh,ow]
Napi::Value AugmentBatch(const Napi::CallbackInfo& info) {
  const char* op = "augmentBatch";
  Tensor& images = unwrap(arg(info, 0), "augmentBatch: images");
  Tensor& params = unwrap(arg(info, 1), "augmentBatch: params");
  Pipeline ops = get_pipeline(arg(info, 2));
  const DType dt = arg(info, 3).IsUndefined() ? DType::F32 : dtype_from_name(get_string(arg(info, 3), op));
  const std::string ls = arg(info, 4).IsUndefined() ? "nchw" : get_string(arg(info, 4), op);
  VGG_CHECK(ls == "nchw" || ls == "nhwc", "%s: layout must be nchw or nhwc, got '%s'", op, ls.c_str());
  const Layout layout = ls == "nhwc" ? Layout::ChannelsLast : Layout::Contiguous;
  return wrap(info.Env(), data::augment_batch(images, params, ops, dt, layout));
}

}  // namespace

void init_data(Napi::Env env, Napi::Object exports) {
  define(env, exports, "dataStl10Source", Stl10Source);
  define(env, exports, "dataMemorySource", MemorySource);
  define(env, exports, "dataSourceLength", SourceLength);
  define(env, exports, "dataSourceLabels", SourceLabels);
  define(env, exports, "dataGet", Get);
  define(env, exports, "dataGetTransformed", GetTransformed);
  define(env, exports, "dataTransformImage", TransformImage);
  define(env, exports, "dataLoadBatch", LoadBatch);
  define(env, exports, "dataAugmentSupport", AugmentSupport);
  define(env, exports, "dataAugmentBatch", AugmentBatch);
}

}  // namespace vgg::js
