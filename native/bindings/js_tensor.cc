// NativeTensor: the JS object that owns a vgg::Tensor, and the argument helpers used by every binding.
#include "bindings/js_tensor.h"

#include <cmath>
#include <cstdint>

#include "cuda/cuda_hooks.h"
#include "ops.h"

namespace vgg::js {

namespace {
struct InstanceData {
  Napi::FunctionReference ctor;
};
InstanceData& instance(Napi::Env env) {
  auto* d = env.GetInstanceData<InstanceData>();
  if (!d) {
    d = new InstanceData();
    env.SetInstanceData(d);
  }
  return *d;
}
Layout layout_from_name(const std::string& s, const char* what) {
  if (s == "nchw" || s == "contiguous") return Layout::Contiguous;
  if (s == "nhwc" || s == "channels_last") return Layout::ChannelsLast;
  if (s == "nchw8c") return Layout::Blocked8;
  if (s == "nchw16c") return Layout::Blocked16;
  throw RangeError(std::string(what) + ": unknown layout '" + s + "' (expected nchw, nhwc, nchw8c or nchw16c)");
}
// V8 is told of each host tensor's bytes (external memory) so that it collects tensors dropped without dispose() in
// time. Told of every allocation, it ran a full mark-compact each time its count rose 64 MiB past the count at the
// last one, in every training step, whose activations come and go by the hundred MB (4-46 ms each, on a 4.5 MB heap
// with nothing to collect; up to 7 a step at vgg16 b8 224², ~5 ms a step at vgg11 b16 32²; AMD Zen 5). Inside a
// deferred scope (deferMemoryReports .. flushMemoryReports: a training step, an inference forward) the changes are
// summed and told at its end, when the step's own churn has netted out. One count per thread: each JS environment
// (the main thread, a worker) runs on its own, finalisers included.
struct ExternalReports {
  int depth = 0;
  int64_t pending = 0;
};
thread_local ExternalReports external_reports;
void tell_v8(napi_env env, int64_t delta) {
  int64_t total;  // napi_adjust_external_memory changes nothing when given no place for the total
  napi_adjust_external_memory(env, delta, &total);
}
void report_external(napi_env env, int64_t delta) {
  if (external_reports.depth > 0) external_reports.pending += delta;
  else tell_v8(env, delta);
}
}  // namespace

void defer_memory_reports() { ++external_reports.depth; }
void flush_memory_reports(napi_env env) {
  ExternalReports& r = external_reports;
  VGG_CHECK(r.depth > 0, "flushMemoryReports: no deferMemoryReports to end");
  if (--r.depth > 0 || r.pending == 0) return;
  const int64_t d = r.pending;
  r.pending = 0;
  tell_v8(env, d);
}

Napi::Function NativeTensor::Define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {
                         InstanceAccessor<&NativeTensor::Shape>("shape"),
                         InstanceAccessor<&NativeTensor::DTypeName>("dtype"),
                         InstanceAccessor<&NativeTensor::DeviceName>("device"),
                         InstanceAccessor<&NativeTensor::LayoutName>("layout"),
                         InstanceAccessor<&NativeTensor::Disposed>("disposed"),
                         InstanceMethod<&NativeTensor::Dispose>("dispose"),
                         InstanceMethod<&NativeTensor::ToBuffer>("toBuffer"),
                     });
}

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {}
NativeTensor::~NativeTensor() {
  // The finaliser: frees what dispose() did not, and gives back the external-memory count V8 was told of.
  t_ = Tensor();
  if (accounted_) report_external(Env(), -accounted_);
}

void NativeTensor::adjust(int64_t delta) {
  if (delta == 0) return;
  report_external(Env(), delta);
  accounted_ += delta;
}

void NativeTensor::set(Tensor t) {
  t_ = std::move(t);
  disposed_ = false;
  if (t_.device() == Device::CPU) adjust(int64_t(t_.nbytes()) - accounted_);
}

Tensor& NativeTensor::meta(const char* what) {
  VGG_CHECK(!disposed_, "%s: tensor was disposed", what);
  return t_;
}
Tensor& NativeTensor::get(const char* what) {
  VGG_CHECK(!disposed_, "%s: tensor was disposed", what);
  if (t_.storage && t_.storage->pending) cuda_order_after_copy(t_.storage->pending);
  return t_;
}

Napi::Value NativeTensor::Shape(const Napi::CallbackInfo& info) {
  const auto& s = meta("shape").shape;
  Napi::Array a = Napi::Array::New(info.Env(), s.size());
  for (size_t i = 0; i < s.size(); i++) a.Set(uint32_t(i), Napi::Number::New(info.Env(), double(s[i])));
  return a;
}
Napi::Value NativeTensor::DTypeName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(meta("dtype").dtype));
}
Napi::Value NativeTensor::DeviceName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), device_name(meta("device").device()));
}
Napi::Value NativeTensor::LayoutName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), layout_name(meta("layout").layout));
}
Napi::Value NativeTensor::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
Napi::Value NativeTensor::Dispose(const Napi::CallbackInfo& info) {
  t_ = Tensor();
  disposed_ = true;
  adjust(-accounted_);
  return info.Env().Undefined();
}
// A copy of the data on the host, contiguous NCHW; bfloat16 comes back as float32.
Napi::Value NativeTensor::ToBuffer(const Napi::CallbackInfo& info) {
  Tensor h = to_host_contiguous(get("toArray"));
  if (h.dtype == DType::BF16) h = cpu_backend().cast(h, DType::F32);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(info.Env(), h.nbytes());
  if (h.nbytes()) std::memcpy(buf.Data(), h.raw(), h.nbytes());  // an empty ArrayBuffer's Data() is null
  return buf;
}

void define(Napi::Env env, Napi::Object exports, const char* name, Binding fn) {
  exports.Set(name, Napi::Function::New(
                        env,
                        [fn](const Napi::CallbackInfo& info) -> Napi::Value {
                          try {
                            return fn(info);
                          } catch (const TypeError& e) {
                            throw Napi::TypeError::New(info.Env(), e.what());
                          } catch (const RangeError& e) {
                            throw Napi::RangeError::New(info.Env(), e.what());
                          }
                        },
                        name));
}

Napi::Object wrap(Napi::Env env, Tensor t) {
  Napi::Object o = instance(env).ctor.New({});
  NativeTensor::Unwrap(o)->set(std::move(t));
  return o;
}

Tensor& unwrap(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsObject() && v.As<Napi::Object>().InstanceOf(instance(v.Env()).ctor.Value()),
                 "%s: expected a Tensor", what);
  return NativeTensor::Unwrap(v.As<Napi::Object>())->get(what);
}
Tensor unwrap_optional(const Napi::Value& v, const char* what) {
  if (v.IsUndefined() || v.IsNull()) return Tensor();
  return unwrap(v, what);
}

double get_number(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsNumber(), "%s: expected a number", what);
  return v.As<Napi::Number>().DoubleValue();
}
int64_t get_int(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    int64_t r = v.As<Napi::BigInt>().Int64Value(&lossless);
    VGG_CHECK_RANGE(lossless, "%s: integer out of range", what);
    return r;
  }
  double d = get_number(v, what);
  // Checked before converting: NaN, an infinity or a double beyond int64 converted to int64_t is undefined behaviour.
  VGG_CHECK_TYPE(std::isfinite(d) && d == std::trunc(d), "%s: expected an integer, got %g", what, d);
  VGG_CHECK_RANGE(d >= -9223372036854775808.0 && d < 9223372036854775808.0, "%s: %g is out of the 64-bit integer range",
                  what, d);
  return int64_t(d);
}
int get_int32(const Napi::Value& v, const char* what) {
  const int64_t i = get_int(v, what);
  VGG_CHECK_RANGE(i >= INT32_MIN && i <= INT32_MAX, "%s: %lld is out of the 32-bit integer range", what, (long long)i);
  return int(i);
}
double get_finite(const Napi::Value& v, const char* what) {
  const double d = get_number(v, what);
  VGG_CHECK_RANGE(std::isfinite(d), "%s: expected a finite number, got %g", what, d);
  return d;
}
bool get_bool(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsBoolean(), "%s: expected a boolean", what);
  return v.As<Napi::Boolean>().Value();
}
std::string get_string(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsString(), "%s: expected a string", what);
  return v.As<Napi::String>().Utf8Value();
}
Shape get_shape(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsArray(), "%s: expected an array of dimensions", what);
  Napi::Array a = v.As<Napi::Array>();
  VGG_CHECK_RANGE(a.Length() <= 8, "%s: at most 8 dimensions, got %u", what, a.Length());
  Shape s;
  for (uint32_t i = 0; i < a.Length(); i++) {
    int64_t d = get_int(a.Get(i), what);
    VGG_CHECK_RANGE(d >= 0, "%s: dimension %u is negative (%lld)", what, i, (long long)d);
    s.push_back(d);
  }
  shape_numel(s);  // overflow check
  return s;
}
Napi::Value arg(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() ? info[i] : info.Env().Undefined(); }

// ---- factories: tensorFromBuffer(typedArray, shape, dtype, device, layout), tensorEmpty/Zeros(shape, dtype, device,
// layout). Data given from JS is always in contiguous NCHW order; a channels-last request converts it.
namespace {
Napi::Value TensorFromBuffer(const Napi::CallbackInfo& info) {
  const char* what = "Tensor.from";
  Napi::Value data = arg(info, 0);
  VGG_CHECK(data.IsTypedArray(), "%s: expected a typed array", what);
  Napi::TypedArray ta = data.As<Napi::TypedArray>();
  Shape shape = get_shape(arg(info, 1), what);
  DType dt = dtype_from_name(get_string(arg(info, 2), what));
  Device dev = device_from_name(get_string(arg(info, 3), what));
  Layout layout = info.Length() > 4 && !arg(info, 4).IsUndefined() ? layout_from_name(get_string(arg(info, 4), what), what)
                                                                    : Layout::Contiguous;
  size_t want = size_t(shape_numel(shape)) * dtype_size(dt == DType::BF16 ? DType::F32 : dt);
  VGG_CHECK(ta.ByteLength() == want, "%s: data has %zu bytes, shape %s of %s needs %zu", what, ta.ByteLength(),
            shape_str(shape).c_str(), dtype_name(dt), want);
  const uint8_t* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  Tensor h = Tensor::empty(shape, dt == DType::BF16 ? DType::F32 : dt, Device::CPU);
  if (want) std::memcpy(h.raw(), src, want);  // an empty typed array may have no buffer at all
  if (dt == DType::BF16) h = cpu_backend().cast(h, DType::BF16);
  if (layout != Layout::Contiguous) h = cpu_backend().to_layout(h, layout);
  return wrap(info.Env(), to_device(h, dev));
}
Napi::Value TensorNew(const Napi::CallbackInfo& info, bool zero) {
  const char* what = zero ? "Tensor.zeros" : "Tensor.empty";
  Shape shape = get_shape(arg(info, 0), what);
  DType dt = dtype_from_name(get_string(arg(info, 1), what));
  Device dev = device_from_name(get_string(arg(info, 2), what));
  Layout layout = !arg(info, 3).IsUndefined() ? layout_from_name(get_string(arg(info, 3), what), what)
                                               : Layout::Contiguous;
  return wrap(info.Env(), zero ? Tensor::zeros(shape, dt, dev, layout) : Tensor::empty(shape, dt, dev, layout));
}
Napi::Value TensorView(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), unwrap(arg(info, 0), "view").view(get_shape(arg(info, 1), "view")));
}
// tensorTo(x, device, nonBlocking?): nonBlocking starts a CPU->CUDA copy and returns at once (see to_device_async).
Napi::Value TensorTo(const Napi::CallbackInfo& info) {
  Tensor& x = unwrap(arg(info, 0), "to");
  const Device dev = device_from_name(get_string(arg(info, 1), "to"));
  const bool non_blocking = !arg(info, 2).IsUndefined() && get_bool(arg(info, 2), "to: nonBlocking");
  return wrap(info.Env(), non_blocking ? to_device_async(x, dev) : to_device(x, dev));
}
Napi::Value TensorClone(const Napi::CallbackInfo& info) {
  Tensor& x = unwrap(arg(info, 0), "clone");
  Tensor y = Tensor::empty(x.shape, x.dtype, x.device(), x.layout);
  copy_bytes(y.raw(), y.device(), x.raw(), x.device(), x.nbytes());
  return wrap(info.Env(), y);
}
// copyInto(dst, src): same shape/dtype; layouts and devices may differ.
Napi::Value TensorCopyInto(const Napi::CallbackInfo& info) {
  Tensor& dst = unwrap(arg(info, 0), "copy_: destination");
  Tensor src = unwrap(arg(info, 1), "copy_: source");
  VGG_CHECK(dst.shape == src.shape, "copy_: destination is %s, source is %s", dst.describe().c_str(),
            src.describe().c_str());
  if (src.dtype != dst.dtype) src = backend(src.device()).cast(src, dst.dtype);
  if (src.layout != dst.layout) src = backend(src.device()).to_layout(src, dst.layout);
  copy_bytes(dst.raw(), dst.device(), src.raw(), src.device(), dst.nbytes());
  dst.mark_written();
  return info.Env().Undefined();
}
}  // namespace

void init_tensor(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = NativeTensor::Define(env);
  instance(env).ctor = Napi::Persistent(ctor);
  exports.Set("NativeTensor", ctor);
  define(env, exports, "tensorFromBuffer", TensorFromBuffer);
  define(env, exports, "tensorEmpty", [](const Napi::CallbackInfo& i) { return TensorNew(i, false); });
  define(env, exports, "tensorZeros", [](const Napi::CallbackInfo& i) { return TensorNew(i, true); });
  define(env, exports, "tensorView", TensorView);
  define(env, exports, "tensorTo", TensorTo);
  define(env, exports, "tensorClone", TensorClone);
  define(env, exports, "tensorCopyInto", TensorCopyInto);
}

}  // namespace vgg::js
