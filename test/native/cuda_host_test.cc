// Host-side logic of the CUDA backend's allocator pools and graph capture (native/cuda/memory.cc, graph.cc), run
// against the fake runtime in fake_cuda/ — no GPU needed. test/cuda_host.test.ts compiles and runs this; each CHECK
// that fails prints its line and the program exits 1.
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <vector>

#include "cuda/cuda_hooks.h"
#include "cuda/graph_memory.h"
#include "cuda/kernels.h"
#include "fake_cuda/cuda_runtime.h"

namespace {
int failures = 0;
#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
      ++failures;                                                       \
    }                                                                   \
  } while (0)
bool throws(const std::function<void()>& f, const char* part) {
  try {
    f();
  } catch (const vgg::Error& e) {
    if (std::strstr(e.what(), part)) return true;
    std::printf("  threw '%s', expected it to contain '%s'\n", e.what(), part);
    return false;
  }
  return false;
}

// Stand-ins for the backend and the slot kernel: what the graph code asks of them is recorded.
std::vector<uint64_t> slot_values;
int begins = 0, ends = 0;
void* backend_workspace = nullptr;  // a long-lived block, as the backend's conv workspace
}  // namespace

namespace vgg {
void cuda_backend_on_capture_begin() {
  ++begins;
  if (backend_workspace) cuda_pool_adopt(backend_workspace);
}
void cuda_backend_on_capture_end() noexcept { ++ends; }
namespace cuk {
void set_graph_slots(uint64_t*, const uint64_t* values, int n) { slot_values.assign(values, values + n); }
}  // namespace cuk
}  // namespace vgg

using namespace vgg;

void run() {
  const size_t MiB = size_t(1) << 20;

  // ---- the shared cache: a freed block of the same size comes back, and is counted as cached meanwhile
  void* a = cuda_alloc(MiB);
  cuda_free(a, MiB);
  CHECK(cuda_memory_stats().cached == MiB && cuda_memory_stats().in_use == 0);
  void* a2 = cuda_alloc(MiB);
  CHECK(a2 == a);
  cuda_free(a2, MiB);

  // ---- a capture: blocks it allocates and frees stay its own until the graph goes
  void* before = cuda_alloc(2 * MiB);  // allocated before the capture, freed during it (the step read it, say)
  CHECK(!cuda_graph_capturing());
  cuda_graph_begin();
  CHECK(cuda_graph_capturing() && fake_cuda::capturing && begins == 1);
  void* act = cuda_alloc(MiB);  // takes the cached block `a`...
  CHECK(act == a);
  cuda_free(act, MiB);  // ...and gives it to the pool, not the cache
  cuda_free(before, 2 * MiB);
  void* act2 = cuda_alloc(MiB);  // reuse inside the capture is fine (replays run in the same order)
  CHECK(act2 == a);
  void* out = cuda_alloc(4096);  // a static output: alive after the capture
  const void* s0 = cuda_graph_slot(CudaGraphSlot::kDropoutOffset, uint64_t(7) << 32);
  const void* s1 = cuda_graph_slot(CudaGraphSlot::kLearningRate, 0x3c23d70a);
  CHECK(s0 != s1 && static_cast<const char*>(s1) - static_cast<const char*>(s0) == 8);
  cuda_free(act2, MiB);
  std::shared_ptr<CudaGraph> g = cuda_graph_end();
  CHECK(!cuda_graph_capturing() && ends == 1);
  CHECK(cuda_graph_slots(*g).size() == 2 && cuda_graph_slots(*g)[0].capture_value == (uint64_t(7) << 32));
  CHECK(cuda_memory_stats().cached == 0);  // nothing the graph touched is free for others
  void* other = cuda_alloc(MiB);
  CHECK(other != a && other != before);
  void* other2 = cuda_alloc(2 * MiB);
  CHECK(other2 != a && other2 != before);
  cuda_free(other, MiB);
  cuda_free(other2, 2 * MiB);

  // ---- replays: the values go to the slot kernel in slot order; the wrong count is an error
  cuda_graph_launch(*g, {uint64_t(8) << 32, 0x3c23d70a});
  CHECK(fake_cuda::launches == 1 && slot_values.size() == 2 && slot_values[0] == (uint64_t(8) << 32));
  CHECK(throws([&] { cuda_graph_launch(*g, {1}); }, "1 values for 2 slots"));

  // ---- the static output freed while the graph lives goes back to the graph, not the cache
  const size_t cached_before = cuda_memory_stats().cached;
  cuda_free(out, 4096);
  CHECK(cuda_memory_stats().cached == cached_before);
  void* small = cuda_alloc(4096);
  CHECK(small != out);
  cuda_free(small, 4096);

  // ---- the graph goes: its blocks return to the cache, and in_use is back to what the cache does not hold
  const size_t in_use_live = cuda_memory_stats().in_use;
  g.reset();
  CHECK(cuda_memory_stats().in_use < in_use_live);
  std::set<void*> got;
  for (int i = 0; i < 2; ++i) got.insert(cuda_alloc(MiB));
  CHECK(got.count(a) == 1);  // `a` is reusable again
  for (void* p : got) cuda_free(p, MiB);
  void* b2 = cuda_alloc(2 * MiB);
  CHECK(b2 == before || b2 == other2);
  cuda_free(b2, 2 * MiB);
  CHECK(cuda_memory_stats().in_use == 0);

  // ---- a long-lived block adopted at capture (the conv workspace): freed after the capture, it stays the graph's
  backend_workspace = cuda_alloc(3 * MiB);
  cuda_graph_begin();
  std::shared_ptr<CudaGraph> g2 = cuda_graph_end();
  cuda_free(backend_workspace, 3 * MiB);  // the backend grew its workspace later
  void* ws2 = cuda_alloc(3 * MiB);
  CHECK(ws2 != backend_workspace);
  g2.reset();
  void* ws3 = cuda_alloc(3 * MiB);
  CHECK(ws3 == backend_workspace);  // released with the graph
  cuda_free(ws2, 3 * MiB);
  cuda_free(ws3, 3 * MiB);
  backend_workspace = nullptr;

  // ---- forbidden work inside a capture fails it: the error says so, nothing stays reserved
  cuda_graph_begin();
  void* x = cuda_alloc(MiB);
  std::vector<char> host(16);
  CHECK(throws([&] { cuda_copy(host.data(), Device::CPU, x, Device::CUDA, 16); }, "not permitted when stream is capturing"));
  CHECK(throws([&] { cuda_graph_end(); }, "capturing the step failed"));
  CHECK(!cuda_graph_capturing() && !fake_cuda::capturing);
  cuda_free(x, MiB);
  CHECK(cuda_memory_stats().in_use == 0);  // the failed capture's pool went back (the slot block too)

  // ---- abort (a JS exception mid-capture) leaves nothing behind; a second begin works
  cuda_graph_begin();
  void* y = cuda_alloc(MiB);
  cuda_graph_abort();
  CHECK(!cuda_graph_capturing() && !fake_cuda::capturing);
  cuda_free(y, MiB);
  CHECK(cuda_memory_stats().in_use == 0);
  CHECK(throws([] { cuda_graph_slot(CudaGraphSlot::kLearningRate, 0); }, "outside a capture"));
  cuda_graph_begin();
  CHECK(throws([] { cuda_graph_begin(); }, "already running"));
  cuda_graph_abort();

  // ---- instantiation failing: thrown, pool released
  fake_cuda::fail_instantiate = true;
  cuda_graph_begin();
  CHECK(throws([] { cuda_graph_end(); }, "capturing the step failed"));
  fake_cuda::fail_instantiate = false;
  CHECK(cuda_memory_stats().in_use == 0);

  // ---- out of memory inside a capture: an error naming the bytes, and no cudaFree (forbidden there)
  cuda_empty_cache();
  const int frees = fake_cuda::frees;
  void* big = cuda_alloc(8 * MiB);
  cuda_free(big, 8 * MiB);  // cached: a capture must not empty the cache to make room
  fake_cuda::budget = fake_cuda::allocated + 2 * MiB;
  cuda_graph_begin();
  CHECK(throws([&] { cuda_alloc(16 * MiB); }, "CUDA out of memory: asked 16777216 bytes"));
  CHECK(fake_cuda::frees == frees && !fake_cuda::invalidated);
  cuda_graph_abort();
  // outside a capture the cache is emptied and the allocation retried
  void* fits = cuda_alloc(9 * MiB);
  CHECK(fits != nullptr && fake_cuda::frees > frees);
  cuda_free(fits, 9 * MiB);

}

int main() {
  try {
    run();
  } catch (const std::exception& e) {
    std::printf("FAIL: unexpected exception: %s\n", e.what());
    ++failures;
  }
  std::printf("%s (%d failed checks)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
