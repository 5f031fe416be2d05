// The process group's CUDA helpers (cuda_comm.h): the real ones in CUDA builds, "not built" errors otherwise.
#include "dist/cuda_comm.h"

#include "tensor.h"

#if VGG_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/cuda_hooks.h"
#include "cuda/kernels.h"
#endif

namespace vgg::dist::gpu {

#if VGG_WITH_CUDA
namespace {
cudaStream_t S(void* stream) {
  return static_cast<cudaStream_t>(stream ? stream : cuda_stream());
}
void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(strprintf("distributed: %s failed: %s", what, cudaGetErrorString(e)));
  }
}
}  // namespace

void* comm_stream() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    // Non-blocking: never implicitly ordered with the legacy stream; the compute stream is joined by events only.
    ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (communication stream)");
    return st;
  }();
  return s;
}
void* event_new(bool timing) {
  cudaEvent_t e = nullptr;
  ok(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming), "cudaEventCreate");
  return e;
}
void event_free(void* ev) noexcept {
  if (ev) cudaEventDestroy(static_cast<cudaEvent_t>(ev));
}
void record(void* ev, void* stream) { ok(cudaEventRecord(static_cast<cudaEvent_t>(ev), S(stream)), "cudaEventRecord"); }
void wait(void* stream, void* ev) {
  ok(cudaStreamWaitEvent(S(stream), static_cast<cudaEvent_t>(ev), 0), "cudaStreamWaitEvent");
}
bool done(void* ev) {
  const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(ev));
  if (e == cudaErrorNotReady) return false;
  ok(e, "cudaEventQuery");
  return true;
}
float elapsed_ms(void* from, void* to) {
  float ms = 0;
  ok(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(from), static_cast<cudaEvent_t>(to)), "cudaEventElapsedTime");
  return ms;
}
bool capturing() { return cuda_graph_capturing(); }
void copy(void* dst, const void* src, size_t n, void* stream) {
  if (n) ok(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, S(stream)), "cudaMemcpyAsync");
}
void pack(void* dst, Elem e, const float* src, int64_t n, void* stream) {
  cuk::comm_pack(dst, e == Elem::BF16, src, n, S(stream));
}
void unpack(float* dst, const void* src, Elem e, int64_t n, float scale, void* stream) {
  cuk::comm_unpack(dst, src, e == Elem::BF16, n, scale, S(stream));
}
void* host_alloc(size_t n) { return cuda_host_alloc(n); }
void host_free(void* p) noexcept { cuda_host_free(p); }
void* device_alloc(size_t n) { return cuda_alloc(n); }
void device_free(void* p, size_t n) noexcept { cuda_free(p, n); }

#else

namespace {
[[noreturn]] void not_built() {
  throw Error("distributed training on CUDA tensors: this addon was built without the CUDA backend");
}
}  // namespace
void* comm_stream() { not_built(); }
void* event_new(bool) { not_built(); }
void event_free(void*) noexcept {}
void record(void*, void*) { not_built(); }
void wait(void*, void*) { not_built(); }
bool done(void*) { not_built(); }
float elapsed_ms(void*, void*) { not_built(); }
bool capturing() { return false; }
void copy(void*, const void*, size_t, void*) { not_built(); }
void pack(void*, Elem, const float*, int64_t, void*) { not_built(); }
void unpack(float*, const void*, Elem, int64_t, float, void*) { not_built(); }
void* host_alloc(size_t) { not_built(); }
void host_free(void*) noexcept {}
void* device_alloc(size_t) { not_built(); }
void device_free(void*, size_t) noexcept {}

#endif

}  // namespace vgg::dist::gpu
