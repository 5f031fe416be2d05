// N-API registration of the data layer: STL10 / in-memory image sources, transforms and batch assembly on worker
// threads. Defined in bind_data.cc; called once from addon.cc.
#pragma once
#include <napi.h>

namespace vgg::js {
void init_data(Napi::Env env, Napi::Object exports);
}  // namespace vgg::js
