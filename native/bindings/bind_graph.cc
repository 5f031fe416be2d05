// N-API bindings of CUDA graphs (cuda_hooks.h). A graph is an External holding the native graph; lib/ops.ts wraps
// these functions in a typed class, and lib/train/graph.ts drives them.
#include <napi.h>

#include <memory>

#include "cuda/cuda_hooks.h"
#include "bindings/js_tensor.h"

namespace vgg::js {

namespace {

// What the External points to: the graph until dispose() (or the finaliser) drops it.
struct GraphHolder {
  std::shared_ptr<CudaGraph> graph;
};

CudaGraph& graph_arg(const Napi::Value& v, const char* what) {
  VGG_CHECK(v.IsExternal(), "%s: expected a CUDA graph handle", what);
  GraphHolder* h = v.As<Napi::External<GraphHolder>>().Data();
  VGG_CHECK(h && h->graph, "%s: the CUDA graph was disposed", what);
  return *h->graph;
}

const char* slot_kind_name(CudaGraphSlot::Kind k) {
  return k == CudaGraphSlot::kLearningRate ? "learningRate" : "dropoutOffset";
}

Napi::Value Begin(const Napi::CallbackInfo& info) {
  cuda_graph_begin();
  return info.Env().Undefined();
}
Napi::Value Capturing(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), cuda_graph_capturing()); }
Napi::Value Abort(const Napi::CallbackInfo& info) {
  cuda_graph_abort();
  return info.Env().Undefined();
}
// cudaGraphStepGuard(loss): the captured SGD step updates nothing at a replay whose loss is not finite.
Napi::Value StepGuard(const Napi::CallbackInfo& info) {
  Tensor& loss = unwrap(arg(info, 0), "cudaGraphStepGuard: loss");
  VGG_CHECK(loss.device() == Device::CUDA && loss.dtype == DType::F32 && loss.numel() == 1,
            "cudaGraphStepGuard: loss must be one float32 on cuda, got %s", loss.describe().c_str());
  cuda_graph_set_step_guard(loss.data<float>());
  return info.Env().Undefined();
}
Napi::Value End(const Napi::CallbackInfo& info) {
  auto* h = new GraphHolder{cuda_graph_end()};
  return Napi::External<GraphHolder>::New(info.Env(), h, [](Napi::Env, GraphHolder* p) { delete p; });
}
// cudaGraphSlots(g): [{kind, value}] in launch order; value: bigint (dropout offset) or number (learning rate).
Napi::Value Slots(const Napi::CallbackInfo& info) {
  const auto& slots = cuda_graph_slots(graph_arg(arg(info, 0), "cudaGraphSlots"));
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env, slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("kind", slot_kind_name(slots[i].kind));
    if (slots[i].kind == CudaGraphSlot::kLearningRate) {
      o.Set("value", double(CudaGraphSlot::to_float(slots[i].capture_value)));
    } else {
      o.Set("value", Napi::BigInt::New(env, slots[i].capture_value));
    }
    a.Set(uint32_t(i), o);
  }
  return a;
}
// cudaGraphLaunch(g, values): one per slot, a bigint/integer offset or a number learning rate.
Napi::Value Launch(const Napi::CallbackInfo& info) {
  CudaGraph& g = graph_arg(arg(info, 0), "cudaGraphLaunch");
  Napi::Value v = arg(info, 1);
  VGG_CHECK_TYPE(v.IsArray(), "cudaGraphLaunch: expected an array of slot values");
  Napi::Array a = v.As<Napi::Array>();
  const auto& slots = cuda_graph_slots(g);
  VGG_CHECK(a.Length() == slots.size(), "cudaGraphLaunch: %u values for %zu slots", a.Length(), slots.size());
  std::vector<uint64_t> values(slots.size());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    if (slots[i].kind == CudaGraphSlot::kLearningRate) {
      values[i] = CudaGraphSlot::from_float(float(get_number(a.Get(i), "cudaGraphLaunch: learning rate")));
    } else {
      const int64_t off = get_int(a.Get(i), "cudaGraphLaunch: dropout offset");
      VGG_CHECK(off >= 0, "cudaGraphLaunch: dropout offset %lld is negative", (long long)off);
      values[i] = uint64_t(off);
    }
  }
  cuda_graph_launch(g, values);
  return info.Env().Undefined();
}
Napi::Value Dispose(const Napi::CallbackInfo& info) {
  Napi::Value v = arg(info, 0);
  VGG_CHECK(v.IsExternal(), "cudaGraphDispose: expected a CUDA graph handle");
  v.As<Napi::External<GraphHolder>>().Data()->graph.reset();
  return info.Env().Undefined();
}

}  // namespace

void init_graph(Napi::Env env, Napi::Object exports) {
  auto def = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    define(env, exports, name, fn);
  };
  def("cudaGraphBegin", Begin);
  def("cudaGraphCapturing", Capturing);
  def("cudaGraphAbort", Abort);
  def("cudaGraphStepGuard", StepGuard);
  def("cudaGraphEnd", End);
  def("cudaGraphSlots", Slots);
  def("cudaGraphLaunch", Launch);
  def("cudaGraphDispose", Dispose);
}

}  // namespace vgg::js
