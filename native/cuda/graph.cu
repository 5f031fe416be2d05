// The one kernel of CUDA graphs: writes the per-replay values (dropout offsets, learning rate) into the slots the
// captured kernels read, queued on the compute stream just before the graph's launch. The values travel as kernel
// arguments, so the host may change them for the next replay at once.
#include "common.cuh"

namespace vgg::cuk {

struct SlotValues {
  uint64_t v[kMaxGraphSlots];
};

__global__ void set_graph_slots_k(uint64_t* dst, SlotValues values, int n) {
  if (int(threadIdx.x) < n) dst[threadIdx.x] = values.v[threadIdx.x];
}

void set_graph_slots(uint64_t* dst, const uint64_t* values, int n) {
  if (n <= 0) return;
  if (n > kMaxGraphSlots) throw Error(strprintf("CUDA graph: %d slots, at most %d", n, kMaxGraphSlots));
  SlotValues sv{};
  for (int i = 0; i < n; ++i) sv.v[i] = values[i];
  set_graph_slots_k<<<1, kMaxGraphSlots, 0, cuk::stream()>>>(dst, sv, n);
  check_launch("CUDA graph: setting the replay's values");
}

}  // namespace vgg::cuk
