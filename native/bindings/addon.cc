// Registration only. native/bindings/ holds every binding and nothing else: js_tensor.cc (NativeTensor and the
// argument helpers), bind_ops.cc (ops.h, devices, build info), bind_graph.cc (CUDA graphs), bind_data.cc (data/),
// bind_dist.cc (dist/: process groups).
#include <napi.h>

#include "bindings/bind_data.h"
#include "bindings/bind_dist.h"
#include "bindings/js_tensor.h"

namespace vgg::js {
void init_ops(Napi::Env env, Napi::Object exports);
void init_graph(Napi::Env env, Napi::Object exports);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vgg::js::init_tensor(env, exports);
  vgg::js::init_ops(env, exports);
  vgg::js::init_graph(env, exports);
  vgg::js::init_data(env, exports);
  vgg::js::init_dist(env, exports);
  return exports;
}

NODE_API_MODULE(vggnet, Init)
