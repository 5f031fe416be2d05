// CUDA graphs of the training step (cuda_hooks.h): capture on the compute stream, a memory pool per graph
// (graph_memory.h), per-replay values in device slots, replay. Only the CUDA runtime API is used here.
//
// Capture is in relaxed mode, so the allocator may still cudaMalloc while it runs; anything that would synchronise
// or touch the legacy stream still fails the capture, and cuda_graph_end reports it.
#include <cuda_runtime.h>

#include <mutex>

#include "cuda_hooks.h"
#include "graph_memory.h"
#include "kernels.h"

namespace vgg {

class CudaGraph {
 public:
  cudaGraphExec_t exec = nullptr;
  int pool = 0;
  uint64_t* slots_dev = nullptr;  // kMaxGraphSlots values, a block of the shared cache owned by the graph
  std::vector<CudaGraphSlot> slots;
  ~CudaGraph() {
    // An in-flight launch finishes first (cudaGraphExecDestroy frees asynchronously); the pool's blocks are reused
    // in compute-stream order, after it.
    if (exec) cudaGraphExecDestroy(exec);
    cudaGetLastError();
    cuda_free(slots_dev, sizeof(uint64_t) * cuk::kMaxGraphSlots);
    cuda_pool_release(pool);
  }
};

namespace {

struct Capture {
  std::mutex mu;
  bool active = false;
  int pool = 0;
  uint64_t* slots_dev = nullptr;
  std::vector<CudaGraphSlot> slots;
  const float* guard = nullptr;
};
Capture& capture() {
  static Capture* c = new Capture();
  return *c;
}

cudaStream_t stream() { return static_cast<cudaStream_t>(cuda_stream()); }

// Ends a running capture and drops whatever it recorded; leaves `c` idle. Returns the capture's error, if any.
cudaError_t finish_capture(Capture& c, cudaGraph_t* graph_out) {
  cudaGraph_t g = nullptr;
  cudaError_t e = cudaStreamEndCapture(stream(), &g);
  cuda_pool_close();
  c.active = false;
  if (graph_out && e == cudaSuccess) {
    *graph_out = g;
  } else if (g) {
    cudaGraphDestroy(g);
  }
  return e;
}

void reset(Capture& c) noexcept {
  if (c.pool) cuda_pool_release(c.pool);
  cuda_free(c.slots_dev, sizeof(uint64_t) * cuk::kMaxGraphSlots);
  c.pool = 0;
  c.slots_dev = nullptr;
  c.slots.clear();
  c.guard = nullptr;
}

}  // namespace

void cuda_graph_begin() {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  VGG_CHECK(!c.active, "CUDA graph: a capture is already running");
  // Allocated before the pool opens: a block of the shared cache the graph frees when it goes.
  c.slots_dev = static_cast<uint64_t*>(cuda_alloc(sizeof(uint64_t) * cuk::kMaxGraphSlots));
  try {
    c.pool = cuda_pool_open();
    cuda_backend_on_capture_begin();
    const cudaError_t e = cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw Error(strprintf("CUDA graph: cudaStreamBeginCapture failed: %s", cudaGetErrorString(e)));
    }
  } catch (...) {
    cuda_pool_close();
    reset(c);
    throw;
  }
  c.active = true;
}

bool cuda_graph_capturing() {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.active;
}

const void* cuda_graph_slot(CudaGraphSlot::Kind kind, uint64_t capture_value) {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  VGG_CHECK(c.active, "CUDA graph: a slot asked for outside a capture");
  VGG_CHECK(int(c.slots.size()) < cuk::kMaxGraphSlots, "CUDA graph: more than %d per-replay values in one step",
            cuk::kMaxGraphSlots);
  c.slots.push_back(CudaGraphSlot{kind, capture_value});
  return c.slots_dev + (c.slots.size() - 1);
}

void cuda_graph_set_step_guard(const float* loss) {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  VGG_CHECK(c.active, "CUDA graph: a step guard set outside a capture");
  c.guard = loss;
}

const float* cuda_graph_step_guard() {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.active ? c.guard : nullptr;
}

std::shared_ptr<CudaGraph> cuda_graph_end() {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  VGG_CHECK(c.active, "CUDA graph: no capture running");
  cudaGraph_t g = nullptr;
  cudaError_t e = finish_capture(c, &g);
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess) {
    e = cudaGraphInstantiateWithFlags(&exec, g, 0);
    cudaGraphDestroy(g);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    reset(c);
    throw Error(strprintf("CUDA graph: capturing the step failed: %s", cudaGetErrorString(e)));
  }
  cuda_backend_on_capture_end();
  auto graph = std::make_shared<CudaGraph>();
  graph->exec = exec;
  graph->pool = c.pool;
  graph->slots_dev = c.slots_dev;
  graph->slots = std::move(c.slots);
  c.pool = 0;
  c.slots_dev = nullptr;
  c.slots.clear();
  c.guard = nullptr;
  return graph;
}

void cuda_graph_abort() noexcept {
  Capture& c = capture();
  std::lock_guard<std::mutex> lock(c.mu);
  if (!c.active) return;
  finish_capture(c, nullptr);
  cudaGetLastError();
  reset(c);
}

void cuda_graph_launch(CudaGraph& g, const std::vector<uint64_t>& values) {
  VGG_CHECK(values.size() == g.slots.size(), "CUDA graph: %zu values for %zu slots", values.size(), g.slots.size());
  VGG_CHECK(!cuda_graph_capturing(), "CUDA graph: cannot replay a graph while capturing another");
  cuk::set_graph_slots(g.slots_dev, values.data(), int(values.size()));
  const cudaError_t e = cudaGraphLaunch(g.exec, stream());
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(strprintf("CUDA graph: cudaGraphLaunch failed: %s", cudaGetErrorString(e)));
  }
}

const std::vector<CudaGraphSlot>& cuda_graph_slots(const CudaGraph& g) { return g.slots; }

}  // namespace vgg
