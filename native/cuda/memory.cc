// CUDA memory hooks (see cuda_hooks.h): a caching allocator over cudaMalloc, byte copies, pinned host memory,
// device count and the process-wide math mode. Only the CUDA runtime API is used here.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cuda_hooks.h"

namespace vgg {
namespace {

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // block size -> pointer
  std::unordered_map<void*, size_t> live;    // pointer -> block size
  size_t in_use = 0, cached = 0, peak = 0;
};
Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: frees may come from finalisers at exit
  return *c;
}

size_t round_size(size_t n) {
  if (n <= (1u << 20)) return (n + 511) & ~size_t(511);
  return (n + (size_t(2) << 20) - 1) & ~((size_t(2) << 20) - 1);  // 2 MiB granules for large blocks
}

void release_cached_locked(Cache& c) {
  for (auto& kv : c.free_blocks) cudaFree(kv.second);
  c.free_blocks.clear();
  c.cached = 0;
}

std::string mib(size_t b) { return strprintf("%zu bytes (%.1f MiB)", b, double(b) / 1048576.0); }

}  // namespace

void* cuda_alloc(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const size_t sz = round_size(nbytes);
  // Best fit among cached blocks no more than 25% larger (fixed shapes reuse exact sizes).
  auto it = c.free_blocks.lower_bound(sz);
  if (it != c.free_blocks.end() && it->first <= sz + sz / 4) {
    void* p = it->second;
    const size_t bs = it->first;
    c.free_blocks.erase(it);
    c.cached -= bs;
    c.live[p] = bs;
    c.in_use += bs;
    c.peak = std::max(c.peak, c.in_use);
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, sz);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) allocation error
    release_cached_locked(c);
    e = cudaMalloc(&p, sz);
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      if (e == cudaErrorMemoryAllocation)
        throw Error(strprintf("CUDA out of memory: asked %zu bytes, %zu free (of %zu), %zu in use by vggnet",
                              nbytes, free_b, total_b, c.in_use));
      throw Error(strprintf("cudaMalloc of %s failed: %s", mib(nbytes).c_str(), cudaGetErrorString(e)));
    }
  }
  c.live[p] = sz;
  c.in_use += sz;
  c.peak = std::max(c.peak, c.in_use);
  return p;
}

void cuda_free(void* p, size_t nbytes) noexcept {
  if (!p) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(p);
  const size_t bs = it != c.live.end() ? it->second : round_size(nbytes);
  if (it != c.live.end()) c.live.erase(it);
  c.in_use -= std::min(c.in_use, bs);
  c.free_blocks.emplace(bs, p);
  c.cached += bs;
}

void cuda_empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  cudaDeviceSynchronize();  // blocks may still be read by queued work
  release_cached_locked(c);
}

MemoryStats cuda_memory_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  MemoryStats s;
  s.in_use = c.in_use;
  s.cached = c.cached;
  s.peak = c.peak;
  return s;
}

void cuda_reset_peak() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.peak = c.in_use;
}

void cuda_copy(void* dst, Device dd, const void* src, Device sd, size_t n) {
  if (n == 0) return;
  cudaMemcpyKind kind = cudaMemcpyDefault;
  if (dd == Device::CUDA && sd == Device::CPU) kind = cudaMemcpyHostToDevice;
  else if (dd == Device::CPU && sd == Device::CUDA) kind = cudaMemcpyDeviceToHost;
  else if (dd == Device::CUDA && sd == Device::CUDA) kind = cudaMemcpyDeviceToDevice;
  else kind = cudaMemcpyHostToHost;
  // Legacy default stream: ordered after every queued kernel; host copies are complete on return.
  cudaError_t e = cudaMemcpy(dst, src, n, kind);
  if (e != cudaSuccess)
    throw Error(strprintf("copy %s->%s of %zu bytes failed: %s", device_name(sd), device_name(dd), n,
                          cudaGetErrorString(e)));
}

void* cuda_host_alloc(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  void* p = nullptr;
  cudaError_t e = cudaHostAlloc(&p, nbytes, cudaHostAllocDefault);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(strprintf("cudaHostAlloc of %zu bytes failed: %s", nbytes, cudaGetErrorString(e)));
  }
  return p;
}

void cuda_host_free(void* p) noexcept {
  if (p) cudaFreeHost(p);
}

namespace {
std::atomic<int> g_math_mode{0};
}
void cuda_set_math_mode(int mode) {
  VGG_CHECK(mode >= 0 && mode <= 2, "cuda_set_math_mode: expected 0 (fp32), 1 (tf32) or 2 (bf16), got %d", mode);
  g_math_mode.store(mode);
}
int cuda_math_mode() { return g_math_mode.load(); }

bool cuda_built() { return true; }

int cuda_device_count() {
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

}  // namespace vgg
