// The N-API side of Tensor: a JS object (class NativeTensor) owning one vgg::Tensor. Bindings use wrap/unwrap and
// nothing else; argument helpers turn bad JS values into JS Errors that name the function and argument.
#pragma once
#include <napi.h>

#include <string>

#include "tensor.h"

namespace vgg::js {

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit NativeTensor(const Napi::CallbackInfo& info);
  ~NativeTensor() override;
  // The tensor for use by an op or copy: throws "<what>: tensor was disposed"; orders the default stream after a
  // pending non-blocking copy into it first (cuda_hooks.h), so nothing reads it before the data has arrived.
  Tensor& get(const char* what);
  void set(Tensor t);

 private:
  Tensor& meta(const char* what);  // for shape/dtype/device/layout only: no ordering needed
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value DTypeName(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value LayoutName(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ToBuffer(const Napi::CallbackInfo& info);
  void adjust(int64_t delta);
  Tensor t_;
  bool disposed_ = false;
  int64_t accounted_ = 0;  // bytes reported to V8 as external memory (host tensors)
};

void init_tensor(Napi::Env env, Napi::Object exports);

// Host tensors' bytes are told to V8 as they change, except between defer_memory_reports() and the matching
// flush_memory_reports(), which tells their sum at once (js_tensor.cc says why). Nestable; per thread.
void defer_memory_reports();
void flush_memory_reports(napi_env env);

// Registers a binding as exports[name]: a vgg::TypeError or vgg::RangeError it throws becomes a JS TypeError or
// RangeError with the same message (tensor.h); any other exception a JS Error (node-addon-api's C++ exception mode).
using Binding = Napi::Value (*)(const Napi::CallbackInfo&);
void define(Napi::Env env, Napi::Object exports, const char* name, Binding fn);
Napi::Object wrap(Napi::Env env, Tensor t);
// The tensor held by a NativeTensor argument; `what` names it in errors ("conv2dForward: weight").
Tensor& unwrap(const Napi::Value& v, const char* what);
// Same, but undefined/null give an undefined Tensor (optional arguments such as a bias).
Tensor unwrap_optional(const Napi::Value& v, const char* what);

// Argument helpers: each throws vgg::Error naming `what` when the value has the wrong type.
double get_number(const Napi::Value& v, const char* what);
int64_t get_int(const Napi::Value& v, const char* what);
int get_int32(const Napi::Value& v, const char* what);      // an integer that fits an int
double get_finite(const Napi::Value& v, const char* what);  // a number that is neither NaN nor infinite
bool get_bool(const Napi::Value& v, const char* what);
std::string get_string(const Napi::Value& v, const char* what);
Shape get_shape(const Napi::Value& v, const char* what);
Napi::Value arg(const Napi::CallbackInfo& info, size_t i);  // undefined when absent

}  // namespace vgg::js
