// N-API bindings of distributed training (native/dist/): the process group as an External holding it, its set-up in
// an AsyncWorker (the rendezvous waits up to the timeout, off the JS thread), and its collectives. lib/dist/ is the
// typed side.
#include "bindings/bind_dist.h"

#include <cmath>
#include <memory>

#include "bindings/js_tensor.h"
#include "dist/engine.h"
#include "dist/process_group.h"

namespace vgg::js {

namespace {

using dist::ProcessGroup;

struct GroupHolder {
  std::shared_ptr<ProcessGroup> group;
};

ProcessGroup& group_arg(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsExternal(), "%s: expected a process group handle", what);
  GroupHolder* h = v.As<Napi::External<GroupHolder>>().Data();
  VGG_CHECK(h && h->group, "%s: the process group was destroyed", what);
  return *h->group;
}

std::vector<Tensor> tensors_arg(const Napi::Value& v, const char* what) {
  VGG_CHECK_TYPE(v.IsArray(), "%s: expected an array of tensors", what);
  Napi::Array a = v.As<Napi::Array>();
  std::vector<Tensor> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(unwrap(a.Get(i), what));
  return out;
}

class InitWorker : public Napi::AsyncWorker {
 public:
  InitWorker(Napi::Env env, dist::GroupOptions o)
      : Napi::AsyncWorker(env, "vggnet:distInit"), deferred_(Napi::Promise::Deferred::New(env)), o_(std::move(o)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      group_ = std::make_shared<ProcessGroup>(o_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto* h = new GroupHolder{std::move(group_)};
    deferred_.Resolve(Napi::External<GroupHolder>::New(env, h, [](Napi::Env, GroupHolder* p) { delete p; }));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  dist::GroupOptions o_;
  std::shared_ptr<ProcessGroup> group_;
};

// distInit({rank, world, masterAddr, masterPort, timeoutMs, engine, device, iface}) -> Promise<handle>
Napi::Value Init(const Napi::CallbackInfo& info) {
  const char* op = "distInit";
  VGG_CHECK_TYPE(arg(info, 0).IsObject(), "%s: expected options", op);
  Napi::Object o = arg(info, 0).As<Napi::Object>();
  dist::GroupOptions g;
  g.rank = int(get_int(o.Get("rank"), "distInit: rank"));
  g.world = int(get_int(o.Get("world"), "distInit: world"));
  g.master_addr = get_string(o.Get("masterAddr"), "distInit: masterAddr");
  g.master_port = int(get_int(o.Get("masterPort"), "distInit: masterPort"));
  g.timeout = dist::Millis(get_int(o.Get("timeoutMs"), "distInit: timeoutMs"));
  g.engine = get_string(o.Get("engine"), "distInit: engine");
  g.device = device_from_name(get_string(o.Get("device"), "distInit: device"));
  if (!o.Get("iface").IsUndefined()) g.iface = get_string(o.Get("iface"), "distInit: iface");
  auto* w = new InitWorker(info.Env(), g);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  ProcessGroup& g = group_arg(arg(info, 0), "distInfo");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("rank", g.rank());
  o.Set("world", g.world());
  o.Set("engine", g.engine_name());
  o.Set("engineVersion", g.engine_version());
  o.Set("master", g.master());
  o.Set("localAddress", g.local_ip());
  o.Set("device", device_name(g.device()));
  o.Set("capturable", g.capturable());
  return o;
}

// distReduceBucket(h, grads[], bf16)
Napi::Value ReduceBucket(const Napi::CallbackInfo& info) {
  ProcessGroup& g = group_arg(arg(info, 0), "distReduceBucket");
  std::vector<Tensor> grads = tensors_arg(arg(info, 1), "distReduceBucket: gradients");
  g.reduce_bucket(grads, get_bool(arg(info, 2), "distReduceBucket: bf16"));
  for (const Tensor& t : grads) t.mark_written();  // (reduced on the comm thread later; no value derives from grads)
  return info.Env().Undefined();
}
// distReduceExtras(h, loss, lossOut)
Napi::Value ReduceExtras(const Napi::CallbackInfo& info) {
  ProcessGroup& g = group_arg(arg(info, 0), "distReduceExtras");
  Tensor& loss = unwrap(arg(info, 1), "distReduceExtras: loss");
  Tensor& out = unwrap(arg(info, 2), "distReduceExtras: reduced loss");
  g.reduce_extras(loss, out);
  out.mark_written();
  return info.Env().Undefined();
}
Napi::Value Finish(const Napi::CallbackInfo& info) {
  group_arg(arg(info, 0), "distFinish").finish();
  return info.Env().Undefined();
}
Napi::Value RequestStop(const Napi::CallbackInfo& info) {
  group_arg(arg(info, 0), "distRequestStop").request_stop(get_bool(arg(info, 1), "distRequestStop"));
  return info.Env().Undefined();
}
Napi::Value StopVotes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), group_arg(arg(info, 0), "distStopVotes").stop_votes());
}
Napi::Value SyncDevice(const Napi::CallbackInfo& info) {
  group_arg(arg(info, 0), "distSyncDevice").sync_device();
  return info.Env().Undefined();
}
// distBroadcast(h, tensors[], root)
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  ProcessGroup& g = group_arg(arg(info, 0), "distBroadcast");
  std::vector<Tensor> ts = tensors_arg(arg(info, 1), "distBroadcast: tensors");
  g.broadcast(ts, int(get_int(arg(info, 2), "distBroadcast: root")));
  for (const Tensor& t : ts) t.mark_written();
  return info.Env().Undefined();
}
// distAllreduceHost(h, Float64Array): summed over the ranks, in place.
Napi::Value AllreduceHost(const Napi::CallbackInfo& info) {
  ProcessGroup& g = group_arg(arg(info, 0), "distAllreduceHost");
  Napi::Value v = arg(info, 1);
  VGG_CHECK_TYPE(v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array,
                 "distAllreduceHost: expected a Float64Array");
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  g.allreduce_host(a.Data(), a.ElementLength());
  return info.Env().Undefined();
}
// distAllGather(h, srcs[], dsts[], scales[]): every rank's srcs[k] into dsts[k] in rank order, times scales[k], in
// one collective (CPU groups).
Napi::Value AllGather(const Napi::CallbackInfo& info) {
  ProcessGroup& g = group_arg(arg(info, 0), "distAllGather");
  std::vector<Tensor> srcs = tensors_arg(arg(info, 1), "distAllGather: sources");
  std::vector<Tensor> dsts = tensors_arg(arg(info, 2), "distAllGather: outputs");
  Napi::Value sv = arg(info, 3);
  VGG_CHECK_TYPE(sv.IsArray(), "distAllGather: scales must be an array of numbers");
  Napi::Array sa = sv.As<Napi::Array>();
  std::vector<float> scales;
  for (uint32_t i = 0; i < sa.Length(); ++i) {
    const double s = get_number(sa.Get(i), "distAllGather: scale");
    VGG_CHECK_TYPE(std::isfinite(s), "distAllGather: scales must be finite");
    scales.push_back(float(s));
  }
  g.all_gather(srcs, dsts, scales);
  for (const Tensor& t : dsts) t.mark_written();
  return info.Env().Undefined();
}
Napi::Value Stats(const Napi::CallbackInfo& info) {
  const dist::GroupStats s = group_arg(arg(info, 0), "distStats").stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("steps", double(s.steps));
  o.Set("timedSteps", double(s.timed_steps));
  o.Set("buckets", double(s.buckets));
  o.Set("collectives", double(s.collectives));
  o.Set("bytes", s.bytes);
  o.Set("gatheredBytes", s.gathered_bytes);
  o.Set("commMs", s.comm_ms);
  o.Set("exposedMs", s.exposed_ms);
  o.Set("backwardMs", s.backward_ms);
  return o;
}
// distShutdown(h): goodbye to the store (rank 0 waits for the others'); the handle is unusable afterwards.
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  Napi::Value v = arg(info, 0);
  VGG_CHECK_TYPE(v.IsExternal(), "distShutdown: expected a process group handle");
  GroupHolder* h = v.As<Napi::External<GroupHolder>>().Data();
  if (h && h->group) {
    h->group->shutdown();
    h->group.reset();
  }
  return info.Env().Undefined();
}
Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  Napi::Env env = info.Env();
  o.Set("gloo", dist::gloo_built() ? Napi::Value(Napi::String::New(env, dist::gloo_version())) : env.Null());
  o.Set("nccl", dist::nccl_built() ? Napi::Value(Napi::String::New(env, dist::nccl_version())) : env.Null());
  return o;
}

}  // namespace

ReplicaSum* replica_sum_arg(const Napi::Value& v, const char* what) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return &group_arg(v, what);
}

void init_dist(Napi::Env env, Napi::Object exports) {
  auto def = [&](const char* name, Binding fn) { define(env, exports, name, fn); };
  def("distInit", Init);
  def("distInfo", Info);
  def("distReduceBucket", ReduceBucket);
  def("distReduceExtras", ReduceExtras);
  def("distFinish", Finish);
  def("distRequestStop", RequestStop);
  def("distStopVotes", StopVotes);
  def("distSyncDevice", SyncDevice);
  def("distBroadcast", Broadcast);
  def("distAllreduceHost", AllreduceHost);
  def("distAllGather", AllGather);
  def("distStats", Stats);
  def("distShutdown", Shutdown);
  def("distBuildInfo", BuildInfo);
}

}  // namespace vgg::js
