// Counter-based random numbers shared by the CPU and CUDA backends, so the same (seed, offset, index) gives the
// same value on every device and thread count. splitmix64 finaliser over a 64-bit counter.
#pragma once
#include <cstdint>

#include "hd.h"

namespace vgg {

VGG_HD uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Uniform in [0, 1) with 24 bits, exactly representable in float32.
VGG_HD float uniform01(uint64_t seed, uint64_t counter) {
  return float(mix64(mix64(seed) ^ counter) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace vgg
