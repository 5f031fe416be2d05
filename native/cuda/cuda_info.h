// backends() information of the CUDA build: see cuda_hooks.h for the JSON shape. Defined in backend.cc
// (CUDA build) or native/cuda_stub.cc (CPU-only build, returns "{\"built\":false}").
#pragma once
#include <string>

namespace vgg {
std::string cuda_info_json();
}  // namespace vgg
