// What the process group needs from CUDA, as plain C++ (no CUDA headers): its communication stream, events, copies,
// pinned memory and the gradient pack/unpack kernels (native/cuda/comm.cu). Defined by cuda_comm.cc: the real thing
// in CUDA builds (VGG_WITH_CUDA), otherwise functions that say the CUDA backend is not built.
//
// Streams: nullptr means the compute stream (cuda_stream(), where every op runs); comm_stream() is the process
// group's own, created non-blocking on first use so that all-reduces run beside the backward pass. Work moves between
// the two only through events (record on one, wait on the other), which is also how a CUDA graph capture of the
// compute stream takes the communication stream in with it (fork) and back (join).
#pragma once
#include <cstddef>
#include <cstdint>

#include "dist/engine.h"

namespace vgg::dist::gpu {

void* comm_stream();
void* event_new(bool timing);  // timing=false: cudaEventDisableTiming (cheaper; the only kind a capture needs)
void event_free(void* ev) noexcept;
void record(void* ev, void* stream);
void wait(void* stream, void* ev);
bool done(void* ev);  // cudaEventQuery: true when complete; throws on a CUDA error
float elapsed_ms(void* from, void* to);
bool capturing();     // a CUDA graph of the compute stream is being captured
// cudaMemcpyAsync (kind from the pointers) on `stream`.
void copy(void* dst, const void* src, size_t n, void* stream);
// dst[i] = src[i] as `e` (F32 or BF16), on `stream`.
void pack(void* dst, Elem e, const float* src, int64_t n, void* stream);
// dst[i] = scale * src[i] (src as `e`), on `stream`.
void unpack(float* dst, const void* src, Elem e, int64_t n, float scale, void* stream);
void* host_alloc(size_t n);
void host_free(void* p) noexcept;
void* device_alloc(size_t n);
void device_free(void* p, size_t n) noexcept;

}  // namespace vgg::dist::gpu
