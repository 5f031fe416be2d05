// N-API bindings of ops.h: argument conversion and device checks only; the arithmetic is in the backends.
// Names are the camelCase of the ops; lib/ops.ts is the typed wrapper.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cuda/cuda_hooks.h"
#include "bindings/bind_dist.h"
#include "bindings/js_tensor.h"
#include "ops.h"

namespace vgg::js {

namespace {

// All defined tensors of an op must live on one device; returns that device's backend.
Backend& backend_of(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) first = t;
    VGG_CHECK(t->device() == first->device(), "%s: tensors on different devices (%s and %s)", op,
              device_name(first->device()), device_name(t->device()));
  }
  VGG_CHECK(first != nullptr, "%s: no tensor given", op);
  return backend(first->device());
}

// A pool geometry [C, H, W, oh, ow] (ops.h, PooledGrad): each an int (oh, ow are ints in PooledGrad, and the rest
// multiply into tensor sizes), and C·H·W and C·oh·ow without overflow.
PooledGrad pool_geometry(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsArray() && v.As<Napi::Array>().Length() == 5, "%s must be [C, H, W, oh, ow]", what);
  static const char* const names[5] = {"channels", "height", "width", "pool height", "pool width"};
  Napi::Array a = v.As<Napi::Array>();
  int g[5];
  for (uint32_t k = 0; k < 5; k++) {
    const int64_t x = get_int(a.Get(k), what);
    VGG_CHECK_RANGE(x >= 1 && x <= INT32_MAX, "%s: %s must be in [1, %d], got %lld", what, names[k], INT32_MAX,
                    (long long)x);
    g[k] = int(x);
  }
  int64_t map = 0, pooled = 0;
  VGG_CHECK_RANGE(!__builtin_mul_overflow(int64_t(g[0]) * g[1], int64_t(g[2]), &map) &&
                      !__builtin_mul_overflow(int64_t(g[0]) * g[3], int64_t(g[4]), &pooled),
                  "%s: channels·height·width or channels·pool height·pool width overflows", what);
  return PooledGrad{g[0], g[1], g[2], g[3], g[4]};
}

Conv2dParams conv_params(const Napi::Value& v, const char* op) {
  VGG_CHECK_TYPE(v.IsObject(), "%s: expected conv parameters {strideH, strideW, padH, padW}", op);
  Napi::Object o = v.As<Napi::Object>();
  Conv2dParams p;
  p.stride_h = get_int32(o.Get("strideH"), op);
  p.stride_w = get_int32(o.Get("strideW"), op);
  p.pad_h = get_int32(o.Get("padH"), op);
  p.pad_w = get_int32(o.Get("padW"), op);
  Napi::Value blocked = o.Get("cpuBlockedOutput");
  p.cpu_blocked_output = !blocked.IsUndefined() && blocked.ToBoolean().Value();
  VGG_CHECK_RANGE(p.stride_h >= 1 && p.stride_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
            "%s: strides must be >= 1 and paddings >= 0", op);
  return p;
}
Pool2dParams pool_params(const Napi::Value& v, const char* op) {
  VGG_CHECK_TYPE(v.IsObject(), "%s: expected pool parameters {kernel, stride, pad}", op);
  Napi::Object o = v.As<Napi::Object>();
  Pool2dParams p;
  p.kernel = get_int32(o.Get("kernel"), op);
  p.stride = get_int32(o.Get("stride"), op);
  p.pad = get_int32(o.Get("pad"), op);
  VGG_CHECK_RANGE(p.kernel >= 1 && p.stride >= 1 && p.pad >= 0 && 2 * p.pad <= p.kernel,
            "%s: kernel and stride must be >= 1, padding at most half the kernel", op);
  return p;
}
Napi::Array wrap_all(Napi::Env env, const Saved& s) {
  Napi::Array a = Napi::Array::New(env, s.size());
  for (size_t i = 0; i < s.size(); i++) a.Set(uint32_t(i), wrap(env, s[i]));
  return a;
}
Saved unwrap_all(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsArray(), "%s: expected an array of tensors", what);
  Napi::Array a = v.As<Napi::Array>();
  Saved s;
  for (uint32_t i = 0; i < a.Length(); i++) s.push_back(unwrap(a.Get(i), what));
  return s;
}
Napi::Object pair(Napi::Env env, const Tensor& y, const Saved& saved) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("y", wrap(env, y));
  o.Set("saved", wrap_all(env, saved));
  return o;
}
Layout layout_arg(const Napi::Value& v, const char* what) {
  std::string s = get_string(v, what);
  if (s == "nchw") return Layout::Contiguous;
  if (s == "nhwc") return Layout::ChannelsLast;
  if (s == "nchw8c") return Layout::Blocked8;
  if (s == "nchw16c") return Layout::Blocked16;
  throw RangeError(std::string(what) + ": unknown layout '" + s + "' (expected nchw, nhwc, nchw8c or nchw16c)");
}

// conv2dForward(x, w, b|null, params, relu)
Napi::Value Conv2dForward(const Napi::CallbackInfo& info) {
  const char* op = "conv2dForward";
  Tensor& x = unwrap(arg(info, 0), "conv2dForward: input");
  Tensor& w = unwrap(arg(info, 1), "conv2dForward: weight");
  Tensor b = unwrap_optional(arg(info, 2), "conv2dForward: bias");
  Conv2dParams p = conv_params(arg(info, 3), op);
  bool relu = get_bool(arg(info, 4), op);
  return wrap(info.Env(), backend_of(op, {&x, &w, &b}).conv2d_forward(x, w, b, p, relu));
}
// conv2dBackwardData(dy, w, xShape, params)
Napi::Value Conv2dBackwardData(const Napi::CallbackInfo& info) {
  const char* op = "conv2dBackwardData";
  Tensor& dy = unwrap(arg(info, 0), "conv2dBackwardData: grad output");
  Tensor& w = unwrap(arg(info, 1), "conv2dBackwardData: weight");
  Shape xs = get_shape(arg(info, 2), op);
  return wrap(info.Env(), backend_of(op, {&dy, &w}).conv2d_backward_data(dy, w, xs, conv_params(arg(info, 3), op)));
}
// conv2dBackwardWeights(x, dy, params, dw, db|null, accumulate)
Napi::Value Conv2dBackwardWeights(const Napi::CallbackInfo& info) {
  const char* op = "conv2dBackwardWeights";
  Tensor& x = unwrap(arg(info, 0), "conv2dBackwardWeights: input");
  Tensor& dy = unwrap(arg(info, 1), "conv2dBackwardWeights: grad output");
  Conv2dParams p = conv_params(arg(info, 2), op);
  Tensor& dw = unwrap(arg(info, 3), "conv2dBackwardWeights: weight grad");
  Tensor db = unwrap_optional(arg(info, 4), "conv2dBackwardWeights: bias grad");
  backend_of(op, {&x, &dy, &dw, &db}).conv2d_backward_weights(x, dy, p, dw, db, get_bool(arg(info, 5), op));
  dw.mark_written();
  db.mark_written();
  return info.Env().Undefined();
}
Napi::Value ReluForward(const Napi::CallbackInfo& info) {
  Tensor& x = unwrap(arg(info, 0), "reluForward: input");
  return wrap(info.Env(), backend_of("reluForward", {&x}).relu_forward(x));
}
Napi::Value ReluBackward(const Napi::CallbackInfo& info) {
  Tensor& dy = unwrap(arg(info, 0), "reluBackward: grad output");
  Tensor& y = unwrap(arg(info, 1), "reluBackward: output");
  return wrap(info.Env(), backend_of("reluBackward", {&dy, &y}).relu_backward(dy, y));
}
// maxpool2dForward(x, params, needBackward) -> {y, saved}
Napi::Value Maxpool2dForward(const Napi::CallbackInfo& info) {
  const char* op = "maxpool2dForward";
  Tensor& x = unwrap(arg(info, 0), "maxpool2dForward: input");
  Pool2dParams p = pool_params(arg(info, 1), op);
  bool train = get_bool(arg(info, 2), op);
  Saved saved;
  Tensor y = backend_of(op, {&x}).maxpool2d_forward(x, p, train ? &saved : nullptr);
  return pair(info.Env(), y, saved);
}
// maxpool2dBackward(dy, x, y, params, saved)
Napi::Value Maxpool2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "maxpool2dBackward";
  Tensor& dy = unwrap(arg(info, 0), "maxpool2dBackward: grad output");
  Tensor& x = unwrap(arg(info, 1), "maxpool2dBackward: input");
  Tensor& y = unwrap(arg(info, 2), "maxpool2dBackward: output");
  Pool2dParams p = pool_params(arg(info, 3), op);
  Saved saved = unwrap_all(arg(info, 4), "maxpool2dBackward: saved");
  return wrap(info.Env(), backend_of(op, {&dy, &x, &y}).maxpool2d_backward(dy, x, y, p, saved));
}
Napi::Value AdaptiveAvgpool2dForward(const Napi::CallbackInfo& info) {
  const char* op = "adaptiveAvgpool2dForward";
  Tensor& x = unwrap(arg(info, 0), "adaptiveAvgpool2dForward: input");
  int oh = get_int32(arg(info, 1), op), ow = get_int32(arg(info, 2), op);
  VGG_CHECK_RANGE(oh >= 1 && ow >= 1, "%s: output size must be >= 1, got %dx%d", op, oh, ow);
  return wrap(info.Env(), backend_of(op, {&x}).adaptive_avgpool2d_forward(x, oh, ow));
}
Napi::Value AdaptiveAvgpool2dBackward(const Napi::CallbackInfo& info) {
  const char* op = "adaptiveAvgpool2dBackward";
  Tensor& dy = unwrap(arg(info, 0), "adaptiveAvgpool2dBackward: grad output");
  Shape xs = get_shape(arg(info, 1), op);
  return wrap(info.Env(),
              backend_of(op, {&dy}).adaptive_avgpool2d_backward(dy, xs, layout_arg(arg(info, 2), op)));
}
// batchnormForward(x, gamma, beta, runningMean, runningVar, training, momentum, eps, needBackward, relu, sync?)
//   -> {y, saved}; sync: a process group (SyncBatchNorm) or null
Napi::Value BatchnormForward(const Napi::CallbackInfo& info) {
  const char* op = "batchnormForward";
  Tensor& x = unwrap(arg(info, 0), "batchnormForward: input");
  Tensor& g = unwrap(arg(info, 1), "batchnormForward: weight");
  Tensor& b = unwrap(arg(info, 2), "batchnormForward: bias");
  Tensor& rm = unwrap(arg(info, 3), "batchnormForward: running_mean");
  Tensor& rv = unwrap(arg(info, 4), "batchnormForward: running_var");
  bool training = get_bool(arg(info, 5), op);
  double momentum = get_finite(arg(info, 6), "batchnormForward: momentum"),
         eps = get_finite(arg(info, 7), "batchnormForward: eps");
  VGG_CHECK_RANGE(momentum >= 0 && momentum <= 1 && eps > 0, "%s: expected 0 <= momentum <= 1 and eps > 0, got %g and %g",
            op, momentum, eps);
  bool need_backward = get_bool(arg(info, 8), op);
  bool relu = get_bool(arg(info, 9), op);
  ReplicaSum* sync = replica_sum_arg(arg(info, 10), "batchnormForward: process group");
  Saved saved;
  Tensor y = backend_of(op, {&x, &g, &b, &rm, &rv})
                 .batchnorm_forward(x, g, b, rm, rv, training, momentum, eps, need_backward ? &saved : nullptr,
                                    relu, sync);
  if (training) rm.mark_written(), rv.mark_written();
  return pair(info.Env(), y, saved);
}
// batchnormBackward(dy, x, gamma, eps, saved, dgamma, dbeta, accumulate, reluOutput | null, sync?)
Napi::Value BatchnormBackward(const Napi::CallbackInfo& info) {
  const char* op = "batchnormBackward";
  Tensor& dy = unwrap(arg(info, 0), "batchnormBackward: grad output");
  Tensor& x = unwrap(arg(info, 1), "batchnormBackward: input");
  Tensor& g = unwrap(arg(info, 2), "batchnormBackward: weight");
  double eps = get_finite(arg(info, 3), "batchnormBackward: eps");
  VGG_CHECK_RANGE(eps > 0, "%s: eps must be > 0, got %g", op, eps);
  Saved saved = unwrap_all(arg(info, 4), "batchnormBackward: saved");
  Tensor& dg = unwrap(arg(info, 5), "batchnormBackward: weight grad");
  Tensor& db = unwrap(arg(info, 6), "batchnormBackward: bias grad");
  Tensor relu_y = unwrap_optional(arg(info, 8), "batchnormBackward: relu output");
  ReplicaSum* sync = replica_sum_arg(arg(info, 9), "batchnormBackward: process group");
  Tensor dx = backend_of(op, {&dy, &x, &g, &dg, &db})
                  .batchnorm_backward(dy, x, g, eps, saved, dg, db, get_bool(arg(info, 7), op), relu_y, sync);
  dg.mark_written();
  db.mark_written();
  return wrap(info.Env(), dx);
}
Napi::Value LinearForward(const Napi::CallbackInfo& info) {
  const char* op = "linearForward";
  Tensor& x = unwrap(arg(info, 0), "linearForward: input");
  Tensor& w = unwrap(arg(info, 1), "linearForward: weight");
  Tensor b = unwrap_optional(arg(info, 2), "linearForward: bias");
  return wrap(info.Env(), backend_of(op, {&x, &w, &b})
                              .linear_forward(x, w, b, get_bool(arg(info, 3), op), get_bool(arg(info, 4), op)));
}
Napi::Value LinearBackwardData(const Napi::CallbackInfo& info) {
  const char* op = "linearBackwardData";
  Tensor& dy = unwrap(arg(info, 0), "linearBackwardData: grad output");
  Tensor& w = unwrap(arg(info, 1), "linearBackwardData: weight");
  return wrap(info.Env(), backend_of(op, {&dy, &w}).linear_backward_data(dy, w, get_bool(arg(info, 2), op)));
}
// linearWeights(w, dtype): w in the form linearForward/linearBackwardData compute with for activations of dtype.
Napi::Value LinearWeights(const Napi::CallbackInfo& info) {
  const char* op = "linearWeights";
  Tensor& w = unwrap(arg(info, 0), "linearWeights: weight");
  const DType dt = dtype_from_name(get_string(arg(info, 1), "linearWeights: dtype"));
  return wrap(info.Env(), backend_of(op, {&w}).linear_weights(w, dt));
}
Napi::Value LinearBackwardWeights(const Napi::CallbackInfo& info) {
  const char* op = "linearBackwardWeights";
  Tensor& x = unwrap(arg(info, 0), "linearBackwardWeights: input");
  Tensor& dy = unwrap(arg(info, 1), "linearBackwardWeights: grad output");
  Tensor& dw = unwrap(arg(info, 2), "linearBackwardWeights: weight grad");
  Tensor db = unwrap_optional(arg(info, 3), "linearBackwardWeights: bias grad");
  backend_of(op, {&x, &dy, &dw, &db}).linear_backward_weights(x, dy, dw, db, get_bool(arg(info, 4), op));
  dw.mark_written();
  db.mark_written();
  return info.Env().Undefined();
}
// dropoutForward(x, p, seed, offset, train) -> {y, saved}; in eval (train=false) y is x itself.
Napi::Value DropoutForward(const Napi::CallbackInfo& info) {
  const char* op = "dropoutForward";
  Tensor& x = unwrap(arg(info, 0), "dropoutForward: input");
  double p = get_number(arg(info, 1), op);
  VGG_CHECK_RANGE(p >= 0 && p < 1, "%s: p must be in [0, 1), got %g", op, p);
  uint64_t seed = uint64_t(get_int(arg(info, 2), op)), offset = uint64_t(get_int(arg(info, 3), op));
  if (!get_bool(arg(info, 4), op)) return pair(info.Env(), x, {});
  Saved saved;
  Tensor y = backend_of(op, {&x}).dropout_forward(x, p, seed, offset, &saved);
  return pair(info.Env(), y, saved);
}
Napi::Value DropoutBackward(const Napi::CallbackInfo& info) {
  const char* op = "dropoutBackward";
  Tensor& dy = unwrap(arg(info, 0), "dropoutBackward: grad output");
  double p = get_number(arg(info, 1), op);
  VGG_CHECK_RANGE(p >= 0 && p < 1, "%s: p must be in [0, 1), got %g", op, p);
  Saved saved = unwrap_all(arg(info, 2), "dropoutBackward: saved");
  return wrap(info.Env(), backend_of(op, {&dy}).dropout_backward(dy, p, saved));
}
// crossEntropy(logits, labels) -> {loss, dlogits}
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy";
  Tensor& logits = unwrap(arg(info, 0), "crossEntropy: logits");
  Tensor& labels = unwrap(arg(info, 1), "crossEntropy: labels");
  Tensor loss, dlogits;
  backend_of(op, {&logits, &labels}).cross_entropy(logits, labels, loss, dlogits);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("loss", wrap(info.Env(), loss));
  o.Set("dlogits", wrap(info.Env(), dlogits));
  return o;
}
// sgdStep(params[], grads[], bufs[], {lr, momentum, dampening, weightDecay, nesterov}, first, pooled?)
// pooled: absent, or per parameter null or [C, H, W, oh, ow]: that gradient given as the pool's input (ops.h, PooledGrad).
Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  const char* op = "sgdStep";
  Saved params = unwrap_all(arg(info, 0), "sgdStep: params");
  Saved grads = unwrap_all(arg(info, 1), "sgdStep: grads");
  Saved bufs = unwrap_all(arg(info, 2), "sgdStep: momentum buffers");
  VGG_CHECK_TYPE(arg(info, 3).IsObject(), "%s: expected options {lr, momentum, dampening, weightDecay, nesterov}", op);
  Napi::Object o = arg(info, 3).As<Napi::Object>();
  SgdParams p;
  // Non-finite or negative values would write NaN or diverging weights without a word: refused here as in SGD's setters.
  p.lr = get_finite(o.Get("lr"), "sgdStep: lr");
  p.momentum = get_finite(o.Get("momentum"), "sgdStep: momentum");
  p.dampening = get_finite(o.Get("dampening"), "sgdStep: dampening");
  p.weight_decay = get_finite(o.Get("weightDecay"), "sgdStep: weightDecay");
  VGG_CHECK_RANGE(p.lr >= 0 && p.momentum >= 0 && p.weight_decay >= 0,
            "%s: lr, momentum and weightDecay must be >= 0, got %g, %g and %g", op, p.lr, p.momentum, p.weight_decay);
  p.nesterov = get_bool(o.Get("nesterov"), "sgdStep: nesterov");
  bool first = get_bool(arg(info, 4), op);
  VGG_CHECK(params.size() == grads.size(), "%s: %zu params but %zu grads", op, params.size(), grads.size());
  VGG_CHECK(p.momentum == 0 || bufs.size() == params.size(), "%s: %zu params but %zu momentum buffers", op,
            params.size(), bufs.size());
  std::vector<PooledGrad> pooled;
  if (!arg(info, 5).IsUndefined()) {
    VGG_CHECK_TYPE(arg(info, 5).IsArray(), "%s: pooled must be an array (one entry per parameter)", op);
    Napi::Array a = arg(info, 5).As<Napi::Array>();
    VGG_CHECK(a.Length() == params.size(), "%s: %zu params but %u pooled entries", op, params.size(), a.Length());
    pooled.resize(params.size());
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value e = a.Get(i);
      if (e.IsNull() || e.IsUndefined()) continue;
      VGG_CHECK_TYPE(e.IsArray() && e.As<Napi::Array>().Length() == 5,
                     "%s: pooled[%u] must be null or [C, H, W, oh, ow]", op, i);
      const std::string what = std::string(op) + ": pooled[" + std::to_string(i) + "]";
      pooled[i] = pool_geometry(e, what.c_str());
    }
  }
  if (params.empty()) return info.Env().Undefined();
  for (size_t i = 0; i < params.size(); i++) {
    VGG_CHECK(params[i].device() == params[0].device() && grads[i].device() == params[0].device() &&
                  (bufs.size() <= i || bufs[i].device() == params[0].device()),
              "%s: parameter %zu is not on the same device as the others", op, i);
  }
  backend(params[0].device()).sgd_step(params, grads, bufs, p, first, pooled);
  return info.Env().Undefined();
}
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Tensor& t = unwrap(arg(info, 0), "fill: tensor");
  const double v = get_number(arg(info, 1), "fill: value");
  if (t.dtype == DType::I32 || t.dtype == DType::I64 || t.dtype == DType::U8 || t.dtype == DType::I8) {
    // An integer tensor takes an integer it can hold (converting anything else is undefined behaviour in C++).
    const double lo = t.dtype == DType::U8 ? 0 : t.dtype == DType::I8 ? -128 : t.dtype == DType::I32 ? -2147483648.0 : -9223372036854775808.0;
    const double hi = t.dtype == DType::U8 ? 255 : t.dtype == DType::I8 ? 127 : t.dtype == DType::I32 ? 2147483647.0 : 9223372036854775807.0;
    VGG_CHECK_RANGE(std::isfinite(v) && v == std::trunc(v) && v >= lo && v < hi + 1, "fill: a %s tensor cannot hold %g",
              dtype_name(t.dtype), v);
  }
  backend(t.device()).fill(t, v);
  t.mark_written();
  return info.Env().Undefined();
}
Napi::Value Add(const Napi::CallbackInfo& info) {
  Tensor& dst = unwrap(arg(info, 0), "add_: destination");
  Tensor& src = unwrap(arg(info, 1), "add_: source");
  backend_of("add_", {&dst, &src}).add_(dst, src, get_number(arg(info, 2), "add_: alpha"));
  dst.mark_written();
  return info.Env().Undefined();
}
Napi::Value Cast(const Napi::CallbackInfo& info) {
  Tensor& x = unwrap(arg(info, 0), "cast: input");
  DType dt = dtype_from_name(get_string(arg(info, 1), "cast: dtype"));
  if (x.dtype == dt) return wrap(info.Env(), x);
  return wrap(info.Env(), backend(x.device()).cast(x, dt));
}
Napi::Value ToLayout(const Napi::CallbackInfo& info) {
  Tensor& x = unwrap(arg(info, 0), "toLayout: input");
  Layout l = layout_arg(arg(info, 1), "toLayout");
  VGG_CHECK(!layout_block(l) || x.device() == Device::CPU, "toLayout: %s is the CPU backend's own layout (got a %s tensor)",
            layout_name(l), device_name(x.device()));
  if (x.layout == l) return wrap(info.Env(), x);
  return wrap(info.Env(), backend(x.device()).to_layout(x, l));
}
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  backend(device_from_name(get_string(arg(info, 0), "synchronize: device"))).synchronize();
  return info.Env().Undefined();
}
Napi::Value MemoryStatsJs(const Napi::CallbackInfo& info) {
  MemoryStats s = device_memory_stats(device_from_name(get_string(arg(info, 0), "memoryStats: device")));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("inUse", double(s.in_use));
  o.Set("cached", double(s.cached));
  o.Set("peak", double(s.peak));
  return o;
}
Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  device_reset_peak(device_from_name(get_string(arg(info, 0), "resetPeakMemory: device")));
  return info.Env().Undefined();
}
Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  device_empty_cache(device_from_name(get_string(arg(info, 0), "emptyCache: device")));
  return info.Env().Undefined();
}
Napi::Value DeferMemoryReports(const Napi::CallbackInfo& info) {
  defer_memory_reports();
  return info.Env().Undefined();
}
Napi::Value FlushMemoryReports(const Napi::CallbackInfo& info) {
  flush_memory_reports(info.Env());
  return info.Env().Undefined();
}
Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("cudaBuilt", cuda_built());
  o.Set("cudaDeviceCount", double(cuda_device_count()));
  o.Set("cuda", cuda_info_json());
  return o;
}
// cpuIsaInfo(): {isa, bf16, blockedLayout, bf16Layout, bf16WinogradLayers}, see ops.h.
Napi::Value CpuIsaInfoJs(const Napi::CallbackInfo& info) {
  const CpuIsaInfo i = cpu_isa_info();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("isa", i.isa);
  o.Set("bf16", i.bf16);
  o.Set("blockedLayout", layout_name(i.blocked));
  o.Set("bf16Layout", layout_name(i.bf16_layout));
  o.Set("bf16WinogradLayers", i.bf16_winograd_layers);
  return o;
}
// cpuPeakGflops(threads, seconds): {gflops, threads, vector}, see ops.h.
Napi::Value CpuPeakGflopsJs(const Napi::CallbackInfo& info) {
  const CpuPeak p = cpu_peak_gflops(get_int32(arg(info, 0), "cpuPeakGflops: threads"),
                                    get_number(arg(info, 1), "cpuPeakGflops: seconds"));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("gflops", p.gflops);
  o.Set("threads", p.threads);
  o.Set("vector", p.vector);
  return o;
}
// fillRandom(tensor, 'normal'|'uniform', a, b, seed): normal(mean=a, std=b) or uniform[a, b).
Napi::Value FillRandom(const Napi::CallbackInfo& info) {
  const char* op = "fillRandom";
  Tensor& t = unwrap(arg(info, 0), "fillRandom: tensor");
  const std::string kind = get_string(arg(info, 1), op);
  VGG_CHECK_RANGE(kind == "normal" || kind == "uniform", "%s: kind must be 'normal' or 'uniform', got '%s'", op, kind.c_str());
  check_dtype(t, DType::F32, "fillRandom: tensor");
  const double a = get_finite(arg(info, 2), "fillRandom: a"), b = get_finite(arg(info, 3), "fillRandom: b");
  VGG_CHECK_RANGE(kind == "normal" ? b >= 0 : a <= b, "%s: expected %s, got a = %g, b = %g", op,
            kind == "normal" ? "a standard deviation b >= 0" : "a range a <= b", a, b);
  const uint64_t seed = uint64_t(get_int(arg(info, 4), op));
  backend(t.device()).fill_random(t, kind == "normal" ? RandomKind::Normal : RandomKind::Uniform, a, b, seed);
  t.mark_written();
  return info.Env().Undefined();
}
// cpuKernelsUsed(): [{op, impl, calls, ms}], read and cleared, see ops.h.
Napi::Value CpuKernelsUsedJs(const Napi::CallbackInfo& info) {
  const auto used = cpu_kernels_used();
  Napi::Array a = Napi::Array::New(info.Env(), used.size());
  for (size_t i = 0; i < used.size(); ++i) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("op", used[i].op);
    o.Set("impl", used[i].impl);
    o.Set("calls", double(used[i].calls));
    o.Set("ms", used[i].ms);
    a.Set(uint32_t(i), o);
  }
  return a;
}
Napi::Value SetCudaMathMode(const Napi::CallbackInfo& info) {
  cuda_set_math_mode(get_int32(arg(info, 0), "setCudaMathMode"));
  return info.Env().Undefined();
}

// setCpuWinograd('auto' | 'off' | 'avx2') and cpuWinograd(): which Winograd convolutions the CPU backend runs (ops.h).
Napi::Value SetCpuWinograd(const Napi::CallbackInfo& info) {
  const std::string m = get_string(arg(info, 0), "setCpuWinograd");
  VGG_CHECK_RANGE(m == "auto" || m == "off" || m == "avx2", "setCpuWinograd: expected 'auto', 'off' or 'avx2', got '%s'",
                  m.c_str());
  set_cpu_winograd(m == "off" ? CpuWinograd::Off : m == "avx2" ? CpuWinograd::Ours : CpuWinograd::Auto);
  return info.Env().Undefined();
}
Napi::Value CpuWinogradJs(const Napi::CallbackInfo& info) {
  const CpuWinograd m = cpu_winograd();
  return Napi::String::New(info.Env(), m == CpuWinograd::Off ? "off" : m == CpuWinograd::Ours ? "avx2" : "auto");
}

// ---- int8 inference on the CPU (ops.h): the tensors must be on the CPU.
Tensor& cpu_tensor(const Napi::Value& v, const char* what) {
  Tensor& t = unwrap(v, what);
  VGG_CHECK(t.device() == Device::CPU, "%s: int8 inference runs on the CPU; this tensor is on %s", what,
            device_name(t.device()));
  return t;
}
Napi::Value CpuInt8WeightMaxJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu_int8_weight_max());
}
// cpuQuantize(x, scale, 'uint8' | 'int8') -> nhwc
Napi::Value CpuQuantize(const Napi::CallbackInfo& info) {
  Tensor& x = cpu_tensor(arg(info, 0), "quantize: input");
  const DType dt = dtype_from_name(get_string(arg(info, 2), "quantize: dtype"));
  return wrap(info.Env(), cpu_quantize(x, get_finite(arg(info, 1), "quantize: scale"), dt));
}
// cpuDequantizeU8(q, scale) -> float32 nchw
Napi::Value CpuDequantizeU8(const Napi::CallbackInfo& info) {
  Tensor& q = cpu_tensor(arg(info, 0), "dequantizeU8: input");
  return wrap(info.Env(), cpu_dequantize_u8(q, get_finite(arg(info, 1), "dequantizeU8: scale")));
}
// cpuQuantizeConvWeights(w) -> {q: int8 (K,C,R,S), scales: float32 (K)}
Napi::Value CpuQuantizeConvWeights(const Napi::CallbackInfo& info) {
  const Int8ConvWeights r = cpu_quantize_conv_weights(cpu_tensor(arg(info, 0), "quantizeConvWeights: weight"));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("q", wrap(info.Env(), r.q));
  o.Set("scales", wrap(info.Env(), r.scales));
  return o;
}
// The arguments an int8 layer shares: weights (q, scales, prepared | null at `prepared_at`), bias | null.
Int8ConvWeights int8_weights_arg(const Napi::CallbackInfo& info, size_t prepared_at, const std::string& op) {
  return {cpu_tensor(arg(info, 2), (op + ": weight").c_str()), cpu_tensor(arg(info, 3), (op + ": weight scales").c_str()),
          unwrap_optional(arg(info, prepared_at), (op + ": prepared weights").c_str())};
}
Tensor int8_bias_arg(const Napi::CallbackInfo& info, const std::string& op) {
  Tensor b = unwrap_optional(arg(info, 4), (op + ": bias").c_str());
  if (b.defined()) cpu_tensor(arg(info, 4), (op + ": bias").c_str());
  return b;
}
// {y, prepared?}: prepared is set when the weights were reordered (pass it back next time)
Napi::Object with_prepared(Napi::Env env, const Tensor& y, const Tensor& prepared) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("y", wrap(env, y));
  if (prepared.defined()) o.Set("prepared", wrap(env, prepared));
  return o;
}
// cpuInt8Conv2dForward(x, xScale, q, scales, bias | null, params, yScale, relu, prepared | null) -> {y, prepared?}
Napi::Value CpuInt8Conv2dForward(const Napi::CallbackInfo& info) {
  const char* op = "int8Conv2dForward";
  Tensor& x = cpu_tensor(arg(info, 0), "int8Conv2dForward: input");
  const double xs = get_finite(arg(info, 1), "int8Conv2dForward: input scale");
  const Int8ConvWeights w = int8_weights_arg(info, 8, op);
  const Tensor b = int8_bias_arg(info, op);
  const Conv2dParams p = conv_params(arg(info, 5), op);
  const double ys = get_finite(arg(info, 6), "int8Conv2dForward: output scale");
  Tensor prepared;
  const Tensor y = cpu_int8_conv2d_forward(x, xs, w, b, p, ys, get_bool(arg(info, 7), op), &prepared);
  return with_prepared(info.Env(), y, prepared);
}
// cpuInt8LinearForward(x, xScale, q, scales, bias | null, yScale, relu, prepared | null) -> {y, prepared?}
Napi::Value CpuInt8LinearForward(const Napi::CallbackInfo& info) {
  const char* op = "int8LinearForward";
  Tensor& x = cpu_tensor(arg(info, 0), "int8LinearForward: input");
  const double xs = get_finite(arg(info, 1), "int8LinearForward: input scale");
  const Int8ConvWeights w = int8_weights_arg(info, 7, op);
  const Tensor b = int8_bias_arg(info, op);
  const double ys = get_finite(arg(info, 5), "int8LinearForward: output scale");
  Tensor prepared;
  const Tensor y = cpu_int8_linear_forward(x, xs, w, b, ys, get_bool(arg(info, 6), op), &prepared);
  return with_prepared(info.Env(), y, prepared);
}
// cpuInt8Flatten(q) -> (N, H*W*C, 1, 1) nhwc, q's storage
Napi::Value CpuInt8Flatten(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), cpu_int8_flatten(cpu_tensor(arg(info, 0), "int8Flatten: input")));
}
// cpuAdaptivePoolFold(weight, c, h, w, oh, ow) -> the pool-folded weight (ops.h, cpu_adaptive_pool_fold)
Napi::Value CpuAdaptivePoolFold(const Napi::CallbackInfo& info) {
  const char* op = "adaptivePoolFold";
  Tensor& w = unwrap(arg(info, 0), "adaptivePoolFold: weight");
  VGG_CHECK(w.device() == Device::CPU, "%s: runs on the CPU; this weight is on %s", op, device_name(w.device()));
  Napi::Array g = Napi::Array::New(info.Env(), 5);
  for (uint32_t k = 0; k < 5; k++) g.Set(k, arg(info, int(k) + 1));
  const PooledGrad p = pool_geometry(g, op);
  return wrap(info.Env(), cpu_adaptive_pool_fold(w, p.C, p.H, p.W, p.oh, p.ow));
}
// cpuDeferredFold(foldW, foldB | null, z, p0, p1, [C, H, W, oh, ow], activation dtype = 'float32') -> the fold of a
// weight whose SGD is deferred, prepared for that dtype's activations (ops.h, cpu_deferred_fold)
Napi::Value CpuDeferredFold(const Napi::CallbackInfo& info) {
  const char* op = "deferredFold";
  const Tensor fw = cpu_tensor(arg(info, 0), "deferredFold: the anchor's fold");
  const Tensor fb = unwrap_optional(arg(info, 1), "deferredFold: the anchor momentum's fold");
  VGG_CHECK(!fb.defined() || fb.device() == Device::CPU, "%s: runs on the CPU", op);
  const Tensor z = cpu_tensor(arg(info, 2), "deferredFold: z");
  const double p0 = get_finite(arg(info, 3), "deferredFold: p0"), p1 = get_finite(arg(info, 4), "deferredFold: p1");
  const Napi::Value av = info.Length() > 6 ? info[6] : info.Env().Undefined();
  const DType act = av.IsUndefined() ? DType::F32 : dtype_from_name(get_string(av, "deferredFold: activation dtype"));
  return wrap(info.Env(), cpu_deferred_fold(fw, fb, z, p0, p1, pool_geometry(arg(info, 5), "deferredFold: geometry"), act));
}
// cpuDeferredMaterialise(wOut | null, bOut | null, anchorW, anchorB | null, zW, zB | null, [p00, p01, p10, p11],
// [C, H, W, oh, ow]) (ops.h, cpu_deferred_materialise)
Napi::Value CpuDeferredMaterialise(const Napi::CallbackInfo& info) {
  const char* op = "deferredMaterialise";
  Tensor w = unwrap_optional(arg(info, 0), "deferredMaterialise: weight");
  Tensor b = unwrap_optional(arg(info, 1), "deferredMaterialise: momentum");
  const Tensor aw = cpu_tensor(arg(info, 2), "deferredMaterialise: the weight's anchor");
  const Tensor ab = unwrap_optional(arg(info, 3), "deferredMaterialise: the momentum's anchor");
  const Tensor zw = cpu_tensor(arg(info, 4), "deferredMaterialise: z of the weight");
  const Tensor zb = unwrap_optional(arg(info, 5), "deferredMaterialise: z of the momentum");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&w, &b, &ab, &zb})
    VGG_CHECK(!t->defined() || t->device() == Device::CPU, "%s: runs on the CPU", op);
  VGG_CHECK_TYPE(arg(info, 6).IsArray() && arg(info, 6).As<Napi::Array>().Length() == 4,
                 "%s: coefficients must be [p00, p01, p10, p11]", op);
  double p[4];
  for (uint32_t k = 0; k < 4; k++) p[k] = get_finite(arg(info, 6).As<Napi::Array>().Get(k), "deferredMaterialise: coefficient");
  cpu_deferred_materialise(w, b, aw, ab, zw, zb, p, pool_geometry(arg(info, 7), "deferredMaterialise: geometry"));
  return info.Env().Undefined();
}
// tensorVersion(t) -> the tensor's write count (tensor.h, Tensor::version; PyTorch's tensor._version)
Napi::Value TensorVersion(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(unwrap(arg(info, 0), "tensorVersion: tensor").version()));
}
// cpuAbsMax(x) -> max |x| (NaN when x holds one)
Napi::Value CpuAbsMax(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu_abs_max(cpu_tensor(arg(info, 0), "absMax: input")));
}

// setNumThreads(n): the CPU backend's thread count (OpenMP, which oneDNN shares); getNumThreads().
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = get_int(arg(info, 0), "setNumThreads");
  VGG_CHECK_RANGE(n >= 1 && n <= 4096, "setNumThreads: expected 1..4096 threads, got %lld", (long long)n);
#ifdef _OPENMP
  omp_set_num_threads(int(n));
#endif
  return info.Env().Undefined();
}
Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
#ifdef _OPENMP
  return Napi::Number::New(info.Env(), omp_get_max_threads());
#else
  return Napi::Number::New(info.Env(), 1);
#endif
}

}  // namespace

void init_ops(Napi::Env env, Napi::Object exports) {
  auto def = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    define(env, exports, name, fn);
  };
  def("conv2dForward", Conv2dForward);
  def("conv2dBackwardData", Conv2dBackwardData);
  def("conv2dBackwardWeights", Conv2dBackwardWeights);
  def("reluForward", ReluForward);
  def("reluBackward", ReluBackward);
  def("maxpool2dForward", Maxpool2dForward);
  def("maxpool2dBackward", Maxpool2dBackward);
  def("adaptiveAvgpool2dForward", AdaptiveAvgpool2dForward);
  def("adaptiveAvgpool2dBackward", AdaptiveAvgpool2dBackward);
  def("batchnormForward", BatchnormForward);
  def("batchnormBackward", BatchnormBackward);
  def("linearWeights", LinearWeights);
  def("linearForward", LinearForward);
  def("linearBackwardData", LinearBackwardData);
  def("linearBackwardWeights", LinearBackwardWeights);
  def("dropoutForward", DropoutForward);
  def("dropoutBackward", DropoutBackward);
  def("crossEntropy", CrossEntropy);
  def("sgdStep", SgdStep);
  def("fill", Fill);
  def("fillRandom", FillRandom);
  def("add_", Add);
  def("cast", Cast);
  def("toLayout", ToLayout);
  def("synchronize", Synchronize);
  def("memoryStats", MemoryStatsJs);
  def("resetPeakMemory", ResetPeak);
  def("emptyCache", EmptyCache);
  def("deferMemoryReports", DeferMemoryReports);
  def("flushMemoryReports", FlushMemoryReports);
  def("buildInfo", BuildInfo);
  def("setCudaMathMode", SetCudaMathMode);
  def("cpuIsaInfo", CpuIsaInfoJs);
  def("cpuPeakGflops", CpuPeakGflopsJs);
  def("cpuKernelsUsed", CpuKernelsUsedJs);
  def("setNumThreads", SetNumThreads);
  def("setCpuWinograd", SetCpuWinograd);
  def("cpuWinograd", CpuWinogradJs);
  def("getNumThreads", GetNumThreads);
  def("cpuInt8WeightMax", CpuInt8WeightMaxJs);
  def("cpuQuantize", CpuQuantize);
  def("cpuDequantizeU8", CpuDequantizeU8);
  def("cpuQuantizeConvWeights", CpuQuantizeConvWeights);
  def("cpuInt8Conv2dForward", CpuInt8Conv2dForward);
  def("cpuAbsMax", CpuAbsMax);
  def("cpuAdaptivePoolFold", CpuAdaptivePoolFold);
  def("cpuDeferredFold", CpuDeferredFold);
  def("cpuDeferredMaterialise", CpuDeferredMaterialise);
  def("tensorVersion", TensorVersion);
  def("cpuInt8Flatten", CpuInt8Flatten);
  def("cpuInt8LinearForward", CpuInt8LinearForward);
}

}  // namespace vgg::js
