// The one interface of the collective engines: PyTorch's own, never an algorithm of ours.
//   gloo (gloo.cc, VGG_WITH_GLOO): host memory over TCP; a call blocks the calling thread (the group's comm thread)
//        until done, failed or timed out.
//   NCCL (nccl.cc, VGG_WITH_NCCL): device memory; a call is queued on the given CUDA stream and returns at once.
// Both sum in place; every rank must issue the same calls in the same order (the process group's one queue, or
// its one communication stream, keeps that order).
#pragma once
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace vgg::dist {

class StoreClient;

enum class Elem { F32, BF16, F64 };
size_t elem_size(Elem e);

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;  // "gloo" | "nccl"
  virtual std::string version() const = 0;
  // True when buffers are device memory and calls are queued on `stream` (NCCL); false: host memory, blocking.
  virtual bool on_device() const = 0;
  virtual void allreduce_sum(void* buf, size_t count, Elem e, void* stream) = 0;
  virtual void broadcast(void* buf, size_t bytes, int root, void* stream) = 0;
  // NCCL: an asynchronous error of the communicator ("" when none). gloo reports errors by throwing.
  virtual std::string async_error() { return {}; }
  // Ends the communicator so that nothing waits on it any more (a timeout or a lost rank); never throws.
  virtual void abort() noexcept {}
};

// Which engines this build has; their versions ("" when not built; NCCL's is the loaded library's).
bool gloo_built();
bool nccl_built();
std::string gloo_version();
std::string nccl_version();

// Connects the full mesh of TCP pairs through the store (keys under "gloo/"). `iface` (GLOO_SOCKET_IFNAME) or, when
// empty, `hostname` (the address this machine reaches the master from) is what the pairs listen on.
std::unique_ptr<Engine> make_gloo(StoreClient& store, int rank, int world, std::chrono::milliseconds timeout,
                                  const std::string& hostname, const std::string& iface);
// Rank 0 makes NCCL's unique id and publishes it in the store; the others read it; all init their communicator
// (non-blocking, polled against the timeout) on the current CUDA device.
std::unique_ptr<Engine> make_nccl(StoreClient& store, int rank, int world, std::chrono::milliseconds timeout);

}  // namespace vgg::dist
