// The fake CUDA runtime (see cuda_runtime.h), plus what memory.cc and graph.cc need from the rest of the addon.
#include "cuda_runtime.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "tensor.h"

namespace fake_cuda {
size_t budget = size_t(64) << 20;
size_t allocated = 0;
bool capturing = false, invalidated = false, fail_instantiate = false;
int mallocs = 0, frees = 0, launches = 0;
cudaStream_t capture_stream = nullptr;
}  // namespace fake_cuda
using namespace fake_cuda;

namespace {
std::map<void*, size_t> sizes;
cudaError_t last = cudaSuccess;
int next_token = 1;
template <class T>
T token() {
  return reinterpret_cast<T>(static_cast<uintptr_t>(0x1000 * next_token++));
}
// A call a real capture forbids: the capture is invalidated, the call fails.
cudaError_t forbidden() {
  if (!capturing) return cudaSuccess;
  invalidated = true;
  return last = cudaErrorStreamCaptureUnsupported;
}
}  // namespace

cudaError_t cudaMalloc(void** p, size_t n) {
  if (allocated + n > budget) return last = cudaErrorMemoryAllocation;
  *p = std::malloc(n);
  sizes[*p] = n;
  allocated += n;
  ++mallocs;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (cudaError_t e = forbidden()) return e;
  allocated -= sizes[p];
  sizes.erase(p);
  std::free(p);
  ++frees;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  cudaError_t e = last;
  last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return "fake error";
  }
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = budget - allocated;
  *total_b = budget;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return forbidden(); }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = token<cudaStream_t>();
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return forbidden(); }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
  if (kind != cudaMemcpyDeviceToDevice)
    if (cudaError_t e = forbidden()) return e;
  if (!capturing) std::memcpy(dst, src, n);  // captured: recorded, not run
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t) {
  if (!capturing) std::memset(dst, value, n);  // captured: recorded, not run
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned) {
  *p = std::malloc(n);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = token<cudaEvent_t>();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return forbidden(); }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return forbidden(); }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  if (capturing) return last = cudaErrorInvalidValue;
  capturing = true;
  invalidated = false;
  capture_stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  if (!capturing) return last = cudaErrorInvalidValue;
  capturing = false;
  if (invalidated) {
    *g = nullptr;
    return last = cudaErrorStreamCaptureInvalidated;
  }
  *g = token<cudaGraph_t>();
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t) { return cudaSuccess; }
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* e, cudaGraph_t, unsigned long long) {
  if (fail_instantiate) return last = cudaErrorInvalidValue;
  *e = token<cudaGraphExec_t>();
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) { return cudaSuccess; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t) {
  if (cudaError_t e = forbidden()) return e;
  ++launches;
  return cudaSuccess;
}

// ---- what memory.cc and graph.cc take from the rest of the addon
namespace vgg {
std::string strprintf(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}
const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }
}  // namespace vgg
