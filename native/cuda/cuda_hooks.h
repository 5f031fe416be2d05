// The plain-C++ surface of the CUDA backend that the rest of the native code calls (no CUDA headers here).
//
// Defined by native/cuda/*.cc|*.cu when the CUDA backend is built (VGG_WITH_CUDA), otherwise by native/cuda_stub.cc,
// where every function below throws vgg::Error("CUDA backend not built") except the queries, which answer
// "nothing": cuda_memory_stats() -> {}, cuda_math_mode() -> 0, cuda_info_json() -> "{\"built\":false}",
// cuda_graph_capturing() -> false, cuda_graph_step_guard() -> null (and cuda_graph_abort() does nothing).
//
// Also defined by the same files (declared in tensor.h / ops.h, NOT to be defined in tensor.cc):
//   bool vgg::cuda_built();            true only in the CUDA build
//   int  vgg::cuda_device_count();     0 when not built, no driver, or no device
//   Backend* vgg::cuda_backend_or_null();   null when not built or no usable device
//
// How tensor.cc uses them:
//   device_alloc(Device::CUDA, n)       -> cuda_alloc(n)
//   device_free(Device::CUDA, p, n)     -> cuda_free(p, n)
//   device_empty_cache(Device::CUDA)    -> cuda_empty_cache()
//   device_memory_stats(Device::CUDA)   -> cuda_memory_stats()
//   device_reset_peak(Device::CUDA)     -> cuda_reset_peak()
//   copy_bytes(dst, dd, src, sd, n)     -> cuda_copy(dst, dd, src, sd, n) whenever dd or sd is Device::CUDA
//                                          (CPU<->CPU stays memcpy in tensor.cc)
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../tensor.h"

namespace vgg {

// Caching allocator over cudaMalloc on the current device. Blocks are 256-byte aligned; freed blocks are kept by
// size and reused (all GPU work of the backend is queued on one stream, cuda_stream(), so reuse in stream order is
// safe; the non-blocking copies below order themselves with that stream by events). While a CUDA graph is being
// captured, and for as long as it lives, its blocks are kept apart (see cuda_graph_begin).
// Out of memory: first empties the cache and retries, then throws
//   vgg::Error("CUDA out of memory: asked N bytes, M free (of T), K cached by vggnet")
// nbytes == 0 returns nullptr.
void* cuda_alloc(size_t nbytes);
// Returns a block to the cache (never throws; p == nullptr is a no-op). nbytes must be what was asked.
void cuda_free(void* p, size_t nbytes) noexcept;

// Device memory for one op's temporaries from the caching allocator, returned at scope exit (its reuse is ordered
// on the compute stream with the kernels that use it).
struct CudaScratch {
  void* p = nullptr;
  size_t n = 0;
  explicit CudaScratch(size_t bytes) : p(cuda_alloc(bytes)), n(bytes) {}
  ~CudaScratch() { cuda_free(p, n); }
  CudaScratch(const CudaScratch&) = delete;
  CudaScratch& operator=(const CudaScratch&) = delete;
};
// Hands every cached (unused) block back to the driver.
void cuda_empty_cache();
// in_use: bytes handed out and not yet freed; cached: bytes held in the free lists; peak: max of in_use since
// start or the last cuda_reset_peak(). Sizes are the rounded block sizes.
MemoryStats cuda_memory_stats();
void cuda_reset_peak();

// Byte copy where dst and/or src is on the GPU (CPU<->CUDA, CUDA<->CUDA), queued on the compute stream after all
// queued backend work. A CUDA->CPU copy is complete on return; a CPU->CUDA source may be reused on return; a
// CUDA->CUDA copy is only queued (what reads dst is queued after it), so it may be captured into a graph.
void cuda_copy(void* dst, Device dd, const void* src, Device sd, size_t n);
// Zeroes n bytes of device memory, queued on the compute stream (Tensor::zeros).
void cuda_zero(void* dst, size_t n);

// Page-locked host memory for fast host->device batches (cudaHostAlloc); cuda_host_free(nullptr) is a no-op.
void* cuda_host_alloc(size_t nbytes);
void cuda_host_free(void* p) noexcept;

// Host->device copy that returns before the data has arrived (to('cuda', { nonBlocking: true })). dst: a block from
// cuda_alloc; src: any host memory, copied into a pinned staging buffer before return (so the caller may free or
// reuse it at once). The bytes go over on a separate non-blocking copy stream, which first waits for the work queued
// on the compute stream so far (dst may be a reused block still read by queued kernels). A staging buffer is reused
// only after its copy's event has completed.
// Returns the copy's completion (an event): the caller keeps it in dst's Storage::pending and hands it to
// cuda_order_after_copy before anything reads or frees dst. That queues cudaStreamWaitEvent on the compute stream,
// so only work queued from then on waits for the copy; the training step queued between starting the next batch's
// copy and using that batch runs alongside it (queuing the wait right after the copy would hold that step back).
std::shared_ptr<void> cuda_copy_to_device_async(void* dst, const void* src, size_t n);
// Queues the compute stream's wait for a copy returned by cuda_copy_to_device_async and clears `pending` (no-op when
// empty). The _noexcept form (destructors) falls back to waiting on the host when the wait cannot be queued.
void cuda_order_after_copy(std::shared_ptr<void>& pending);
void cuda_order_after_copy_noexcept(std::shared_ptr<void>& pending) noexcept;

// The one stream all backend work (kernels, cuDNN, cuBLAS, copies) is queued on, as a cudaStream_t, created on first
// use. Not the legacy default stream, which cannot be captured into a CUDA graph; created blocking, so anything
// still queued on the legacy stream (by a library, say) stays ordered with it, and breaks a capture loudly.
void* cuda_stream();

// ---- CUDA graphs (graph.cc): the training step captured once and replayed.
// Per-launch values the captured kernels read from device memory instead of baking the capture-time value in.
struct CudaGraphSlot {
  enum Kind : int { kDropoutOffset = 0, kLearningRate = 1 };
  Kind kind;
  uint64_t capture_value;  // dropout: the offset; learning rate: the float's bits (low 4 bytes, read as a float)
  static uint64_t from_float(float f) {
    uint32_t bits = 0;
    std::memcpy(&bits, &f, 4);
    return bits;
  }
  static float to_float(uint64_t v) {
    const uint32_t bits = uint32_t(v);
    float f = 0;
    std::memcpy(&f, &bits, 4);
    return f;
  }
};
class CudaGraph;
// Starts capturing the compute stream. From now until end/abort, device memory comes from (and, when freed, goes
// back to) a pool owned by the graph, so the addresses the graph uses are never handed to anyone else while it
// lives. Throws when a capture is already running.
void cuda_graph_begin();
bool cuda_graph_capturing();
// During a capture: registers a per-launch value and returns its device address (8 bytes) for a kernel to read.
const void* cuda_graph_slot(CudaGraphSlot::Kind kind, uint64_t capture_value);
// During a capture: the float32 loss the captured SGD step checks; a non-finite loss leaves parameters and momentum
// untouched at that replay (the eager Trainer stops before the update; the graph must not update either).
void cuda_graph_set_step_guard(const float* loss);
const float* cuda_graph_step_guard();
// Ends the capture and instantiates the graph. On failure (an operation not allowed in a capture, an error
// thrown by an op) the capture is discarded, its pool released, and the error thrown.
std::shared_ptr<CudaGraph> cuda_graph_end();
// Discards a running capture (a JS exception in the middle of one); no-op when none. Never throws.
void cuda_graph_abort() noexcept;
// Queues one replay on the compute stream; values: one per slot, in the order of cuda_graph_slots().
void cuda_graph_launch(CudaGraph& g, const std::vector<uint64_t>& values);
const std::vector<CudaGraphSlot>& cuda_graph_slots(const CudaGraph& g);

// Math mode of float32 work on the GPU, process-wide:
//   0 'fp32': true fp32 convs and GEMMs (no TF32),
//   1 'tf32': TF32 tensor-core math allowed for float32 convs and GEMMs,
//   2 'bf16': as 'tf32' for whatever still runs in float32 (bf16 activations always use bf16 tensor cores).
// Throws on any other value.
void cuda_set_math_mode(int mode);
int cuda_math_mode();

// JSON text describing the CUDA build and devices, for backends():
//   {"built":true,"runtime":"13.0","driver":"13.0","cudnn":"9.13.0","cublas":"13.0.2",
//    "devices":[{"index":0,"name":"NVIDIA H100 80GB HBM3","cc":"9.0","memory":85..,"sms":132}],"error":null}
// Never throws: a failing driver query is reported in "error" with an empty device list.
std::string cuda_info_json();

}  // namespace vgg
