// Registration only: each area's bindings live beside it (js_tensor.cc, bind_ops.cc, bind_graph.cc,
// data/bind_data.cc).
#include <napi.h>

#include "data/bind_data.h"
#include "js_tensor.h"

namespace vgg::js {
void init_ops(Napi::Env env, Napi::Object exports);
void init_random(Napi::Env env, Napi::Object exports);
void init_graph(Napi::Env env, Napi::Object exports);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vgg::js::init_tensor(env, exports);
  vgg::js::init_ops(env, exports);
  vgg::js::init_random(env, exports);
  vgg::js::init_graph(env, exports);
  vgg::js::init_data(env, exports);
  return exports;
}

NODE_API_MODULE(vggnet, Init)
