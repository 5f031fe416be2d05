// CUDA memory hooks (see cuda_hooks.h): the compute stream, a caching allocator over cudaMalloc with the pools of
// CUDA graphs (graph_memory.h), byte copies (on the compute stream, and non-blocking host->device through pinned
// staging buffers on a copy stream), pinned host memory, device count and the process-wide math mode. Only the
// CUDA runtime API is used here.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_hooks.h"
#include "graph_memory.h"

namespace vgg {
namespace {

struct Block {
  size_t size;
  int pool;  // 0: the shared cache; else the graph pool it returns to when freed
};
// A CUDA graph's blocks: free ones are reused only by its own capture, and by nobody until it is released.
struct Pool {
  std::multimap<size_t, void*> free_blocks;
  size_t free_bytes = 0;
};
struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // block size -> pointer
  std::unordered_map<void*, Block> live;     // pointer -> block
  std::map<int, Pool> pools;
  int open_pool = 0, next_pool = 1;  // open_pool: the capturing graph's, 0 when none
  // in_use counts the blocks of pools, free or not: nobody else can have them.
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

// Best fit among free blocks no more than 25% larger (fixed shapes reuse exact sizes); null when none.
void* take_fit(std::multimap<size_t, void*>& blocks, size_t sz, size_t* got) {
  auto it = blocks.lower_bound(sz);
  if (it == blocks.end() || it->first > sz + sz / 4) return nullptr;
  void* p = it->second;
  *got = it->first;
  blocks.erase(it);
  return p;
}

}  // namespace

void* cuda_alloc(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const size_t sz = round_size(nbytes);
  size_t bs = 0;
  if (c.open_pool) {
    Pool& pl = c.pools[c.open_pool];
    if (void* p = take_fit(pl.free_blocks, sz, &bs)) {  // still counted in in_use
      pl.free_bytes -= bs;
      c.live[p] = Block{bs, c.open_pool};
      return p;
    }
  }
  if (void* p = take_fit(c.free_blocks, sz, &bs)) {
    c.cached -= bs;
    c.live[p] = Block{bs, c.open_pool};
    c.in_use += bs;
    c.peak = std::max(c.peak, c.in_use);
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, sz);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) allocation error
    if (!c.open_pool) {  // (cudaFree is not allowed during a capture: no emptying the cache then)
      release_cached_locked(c);
      e = cudaMalloc(&p, sz);
      if (e != cudaSuccess) cudaGetLastError();
    }
    if (e != cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      if (e == cudaErrorMemoryAllocation)
        throw Error(strprintf("CUDA out of memory: asked %zu bytes, %zu free (of %zu), %zu in use by vggnet",
                              nbytes, free_b, total_b, c.in_use));
      throw Error(strprintf("cudaMalloc of %s failed: %s", mib(nbytes).c_str(), cudaGetErrorString(e)));
    }
  }
  c.live[p] = Block{sz, c.open_pool};
  c.in_use += sz;
  c.peak = std::max(c.peak, c.in_use);
  return p;
}

void cuda_free(void* p, size_t nbytes) noexcept {
  if (!p) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(p);
  Block b{round_size(nbytes), 0};
  if (it != c.live.end()) {
    b = it->second;
    c.live.erase(it);
  }
  // During a capture every free goes to the graph: the captured work may read the block (it was allocated before
  // the capture, say), and the graph replays that read later.
  const int pool = c.open_pool ? c.open_pool : b.pool;
  auto pl = pool ? c.pools.find(pool) : c.pools.end();
  if (pl != c.pools.end()) {  // stays counted in in_use: nobody else may have it
    pl->second.free_blocks.emplace(b.size, p);
    pl->second.free_bytes += b.size;
    return;
  }
  c.in_use -= std::min(c.in_use, b.size);
  c.free_blocks.emplace(b.size, p);
  c.cached += b.size;
}

int cuda_pool_open() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  VGG_CHECK(c.open_pool == 0, "CUDA graph: a capture is already running");
  const int id = c.next_pool++;
  c.pools[id];
  c.open_pool = id;
  return id;
}

void cuda_pool_close() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.open_pool = 0;
}

void cuda_pool_adopt(void* p) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(p);
  if (it != c.live.end() && c.open_pool) it->second.pool = c.open_pool;
}

void cuda_pool_release(int id) noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.open_pool == id) c.open_pool = 0;
  auto pl = c.pools.find(id);
  if (pl == c.pools.end()) return;
  for (auto& kv : pl->second.free_blocks) c.free_blocks.emplace(kv.first, kv.second);
  c.in_use -= std::min(c.in_use, pl->second.free_bytes);
  c.cached += pl->second.free_bytes;
  c.pools.erase(pl);
  for (auto& kv : c.live)
    if (kv.second.pool == id) kv.second.pool = 0;
}

void cuda_empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.open_pool) return;  // no synchronising (nor cudaFree) in the middle of a capture
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

void* cuda_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t st = nullptr;
    const cudaError_t e = cudaStreamCreate(&st);  // blocking: ordered with the legacy stream
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw Error(strprintf("cudaStreamCreate (the compute stream) failed: %s", cudaGetErrorString(e)));
    }
    return st;
  }();
  return stream;
}

void cuda_copy(void* dst, Device dd, const void* src, Device sd, size_t n) {
  if (n == 0) return;
  cudaMemcpyKind kind = cudaMemcpyDefault;
  if (dd == Device::CUDA && sd == Device::CPU) kind = cudaMemcpyHostToDevice;
  else if (dd == Device::CPU && sd == Device::CUDA) kind = cudaMemcpyDeviceToHost;
  else if (dd == Device::CUDA && sd == Device::CUDA) kind = cudaMemcpyDeviceToDevice;
  else kind = cudaMemcpyHostToHost;
  const cudaStream_t st = static_cast<cudaStream_t>(cuda_stream());
  // On the compute stream: ordered after every queued kernel. From pageable host memory the call returns once the
  // source has been staged; to the host it must be waited for.
  cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, st);
  if (e == cudaSuccess && dd == Device::CPU) e = cudaStreamSynchronize(st);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(strprintf("copy %s->%s of %zu bytes failed: %s", device_name(sd), device_name(dd), n,
                          cudaGetErrorString(e)));
  }
}

void cuda_zero(void* dst, size_t n) {
  if (n == 0) return;
  cudaError_t e = cudaMemsetAsync(dst, 0, n, static_cast<cudaStream_t>(cuda_stream()));
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(strprintf("zeroing %zu bytes of GPU memory failed: %s", n, cudaGetErrorString(e)));
  }
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

// ---------------------------------------------------------------- non-blocking host->device copies
namespace {

void check_cuda(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) throw Error(strprintf("%s: %s failed: %s", op, what, cudaGetErrorString(e)));
}
#define CUDA_OK(op, call) check_cuda((call), op, #call)

// A pinned buffer the host bytes are staged in; `done` is recorded on the copy stream after the copy out of it.
struct Staging {
  void* p = nullptr;
  size_t cap = 0;
  cudaEvent_t done = nullptr;
  uint64_t stamp = 0;  // when it was last used (0: never)
};
struct CopyEngine {
  std::mutex mu;
  cudaStream_t stream = nullptr;  // cudaStreamNonBlocking: ordered with the compute stream by events only
  cudaEvent_t queued = nullptr;   // re-recorded on the compute stream at each copy: "the work queued so far"
  std::vector<Staging> slots;
  uint64_t clock = 0;
  // Events handed out as "copy done" tokens, back here once the compute stream's wait is queued (a wait captures the
  // event's state when queued, so the event may be recorded again right after).
  std::vector<cudaEvent_t> free_events;
};
CopyEngine& copy_engine() {
  static CopyEngine* e = new CopyEngine();  // never destroyed, like the allocator's cache
  return *e;
}
// Images and labels of the batch being trained on and of the one in flight, with room to spare; when all are busy
// the oldest copy is waited for.
constexpr size_t kMaxStaging = 8;

// Whether the slot's last copy has completed (so its buffer may be overwritten).
bool staging_idle(const Staging& s, const char* op) {
  if (s.stamp == 0) return true;
  const cudaError_t e = cudaEventQuery(s.done);
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) {
    // "not ready" is an answer, not a failure: keep it from being reported by the next launch check.
    if (cudaPeekAtLastError() == cudaErrorNotReady) cudaGetLastError();
    return false;
  }
  check_cuda(e, op, "cudaEventQuery(staging copy done)");
  return false;
}

void grow(Staging& s, size_t n) {
  cuda_host_free(s.p);  // idle: its copy has completed
  s.p = nullptr;
  s.cap = 0;
  const size_t granule = size_t(1) << 20;
  const size_t cap = std::max<size_t>((n + granule - 1) / granule * granule, granule);
  s.p = cuda_host_alloc(cap);
  s.cap = cap;
}

// An idle staging buffer of at least n bytes (the smallest such), a new one, or the oldest after waiting for it.
Staging& pick_staging(CopyEngine& ce, size_t n, const char* op) {
  Staging *fit = nullptr, *small = nullptr, *oldest = nullptr;
  for (Staging& s : ce.slots) {
    const bool idle = staging_idle(s, op);
    if (idle && s.cap >= n && (!fit || s.cap < fit->cap)) fit = &s;
    if (idle && s.cap < n && !small) small = &s;
    if (!oldest || s.stamp < oldest->stamp) oldest = &s;
  }
  if (fit) return *fit;
  if (ce.slots.size() < kMaxStaging) {
    Staging s;
    CUDA_OK(op, cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    try {
      grow(s, n);
    } catch (...) {
      cudaEventDestroy(s.done);
      throw;
    }
    ce.slots.push_back(s);
    return ce.slots.back();
  }
  Staging& s = small ? *small : *oldest;
  if (!small) CUDA_OK(op, cudaEventSynchronize(s.done));
  if (s.cap < n) grow(s, n);
  return s;
}

// A "copy done" token: an event of the pool, returned to it when the last reference goes.
std::shared_ptr<void> make_token(CopyEngine& ce, const char* op) {
  cudaEvent_t ev = nullptr;
  if (!ce.free_events.empty()) {
    ev = ce.free_events.back();
    ce.free_events.pop_back();
  } else {
    CUDA_OK(op, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  }
  return std::shared_ptr<void>(static_cast<void*>(ev), [](void* e) {
    CopyEngine& c = copy_engine();
    std::lock_guard<std::mutex> lock(c.mu);
    c.free_events.push_back(static_cast<cudaEvent_t>(e));
  });
}

}  // namespace

std::shared_ptr<void> cuda_copy_to_device_async(void* dst, const void* src, size_t n) {
  const char* op = "copy cpu->cuda (non-blocking)";
  if (n == 0) return nullptr;
  CopyEngine& ce = copy_engine();
  std::shared_ptr<void> token;
  std::lock_guard<std::mutex> lock(ce.mu);
  if (!ce.stream) {
    cudaStream_t st = nullptr;
    cudaEvent_t ev = nullptr;
    CUDA_OK(op, cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e != cudaSuccess) {
      cudaStreamDestroy(st);
      check_cuda(e, op, "cudaEventCreateWithFlags(&queued, cudaEventDisableTiming)");
    }
    ce.stream = st;
    ce.queued = ev;
  }
  Staging& s = pick_staging(ce, n, op);
  {
    // made before anything is queued; its deleter takes ce.mu, so it must not be released while the lock is held
    std::shared_ptr<void> t = make_token(ce, op);
    token.swap(t);
  }
  std::memcpy(s.p, src, n);  // the caller's memory is free again once this returns
  // dst is a caching-allocator block, reused in compute-stream order: kernels queued before now may still use it.
  CUDA_OK(op, cudaEventRecord(ce.queued, static_cast<cudaStream_t>(cuda_stream())));
  CUDA_OK(op, cudaStreamWaitEvent(ce.stream, ce.queued, 0));
  CUDA_OK(op, cudaMemcpyAsync(dst, s.p, n, cudaMemcpyHostToDevice, ce.stream));
  try {
    CUDA_OK(op, cudaEventRecord(s.done, ce.stream));
    s.stamp = ++ce.clock;
    CUDA_OK(op, cudaEventRecord(static_cast<cudaEvent_t>(token.get()), ce.stream));
  } catch (...) {
    // The copy may be in flight with no usable event: finish it so neither buffer is reused under it.
    cudaStreamSynchronize(ce.stream);
    cudaGetLastError();
    throw;  // `token` is released after the lock (declared before it)
  }
  return token;
}

void cuda_order_after_copy(std::shared_ptr<void>& pending) {
  if (!pending) return;
  // Work queued on the compute stream from now on (the ops that read the tensor) waits for the copy; work queued
  // before does not, and ran alongside it.
  CUDA_OK("copy cpu->cuda (non-blocking)",
          cudaStreamWaitEvent(static_cast<cudaStream_t>(cuda_stream()), static_cast<cudaEvent_t>(pending.get()), 0));
  pending.reset();
}

void cuda_order_after_copy_noexcept(std::shared_ptr<void>& pending) noexcept {
  if (!pending) return;
  const cudaEvent_t ev = static_cast<cudaEvent_t>(pending.get());
  if (cudaStreamWaitEvent(static_cast<cudaStream_t>(cuda_stream()), ev, 0) != cudaSuccess) {
    cudaGetLastError();
    cudaEventSynchronize(ev);  // cannot queue the wait: wait here, so the block is never reused under the copy
    cudaGetLastError();
  }
  pending.reset();
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
