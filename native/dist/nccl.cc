// The NCCL engine (engine.h): device buffers, collectives queued on the process group's communication stream. Built
// into the CUDA backend when CMake finds NCCL (VGG_WITH_NCCL); otherwise make_nccl says it is missing.
//
// The communicator is non-blocking (ncclConfig_t.blocking = 0) so that its set-up can be timed out: every NCCL call
// may answer ncclInProgress, and is then polled with ncclCommGetAsyncError until it settles or the deadline passes,
// when the communicator is aborted. Written against NCCL 2.28's API; compile-checked without a GPU
// (scripts/compile-cuda.sh), not yet run on one.
#include <chrono>
#include <thread>

#include "dist/engine.h"
#include "dist/store.h"
#include "tensor.h"

#ifndef VGG_WITH_NCCL
#define VGG_WITH_NCCL 0
#endif

#if VGG_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace vgg::dist {

bool nccl_built() { return VGG_WITH_NCCL != 0; }

#if VGG_WITH_NCCL
namespace {

std::string nccl_version_string() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "?";
  // Codes: X*10000 + Y*100 + Z since 2.9.
  return strprintf("%d.%d.%d", v / 10000, (v / 100) % 100, v % 100);
}

class NcclEngine : public Engine {
 public:
  NcclEngine(StoreClient& store, int rank, int world, std::chrono::milliseconds timeout) : timeout_(timeout) {
    ncclUniqueId id;
    if (rank == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      store.set("nccl/unique_id", std::vector<char>(id.internal, id.internal + NCCL_UNIQUE_ID_BYTES));
    } else {
      const std::vector<char> b = store.get("nccl/unique_id", timeout);
      VGG_CHECK(b.size() == NCCL_UNIQUE_ID_BYTES, "NCCL: the unique id in the rendezvous store has %zu bytes, not %d",
                b.size(), NCCL_UNIQUE_ID_BYTES);
      std::copy(b.begin(), b.end(), id.internal);
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&comm_, world, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      if (comm_) ncclCommAbort(comm_);
      comm_ = nullptr;
      throw Error(strprintf("NCCL: rank %d could not join the communicator of %d ranks: %s", rank, world,
                            ncclGetErrorString(r)));
    }
    settle(strprintf("NCCL communicator set-up of rank %d of %d", rank, world).c_str());
  }
  ~NcclEngine() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  const char* name() const override { return "nccl"; }
  std::string version() const override { return nccl_version_string(); }
  bool on_device() const override { return true; }
  void allreduce_sum(void* buf, size_t count, Elem e, void* stream) override {
    if (count == 0) return;
    const ncclDataType_t t = e == Elem::F64 ? ncclFloat64 : e == Elem::F32 ? ncclFloat32 : ncclBfloat16;
    issue(ncclAllReduce(buf, buf, count, t, ncclSum, comm_, static_cast<cudaStream_t>(stream)), "ncclAllReduce");
  }
  void broadcast(void* buf, size_t bytes, int root, void* stream) override {
    if (bytes == 0) return;
    issue(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, static_cast<cudaStream_t>(stream)), "ncclBroadcast");
  }
  std::string async_error() override {
    if (!comm_) return "the NCCL communicator was aborted";
    ncclResult_t r = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) return "ncclCommGetAsyncError failed";
    if (r == ncclSuccess || r == ncclInProgress) return {};
    const char* last = ncclGetLastError(comm_);
    return strprintf("%s%s%s", ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
  }
  void abort() noexcept override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

 private:
  void check(ncclResult_t r, const char* what) {
    if (r != ncclSuccess) throw Error(strprintf("NCCL: %s failed: %s", what, ncclGetErrorString(r)));
  }
  // A call on the non-blocking communicator: success, or in progress until it settles.
  void issue(ncclResult_t r, const char* what) {
    VGG_CHECK(comm_ != nullptr, "NCCL: %s: the communicator was aborted after an earlier failure", what);
    if (r == ncclInProgress) {
      settle(what);
      return;
    }
    if (r != ncclSuccess) {
      const std::string detail = async_error();
      throw Error(strprintf("NCCL: %s failed: %s%s%s", what, ncclGetErrorString(r), detail.empty() ? "" : " (",
                            detail.empty() ? "" : (detail + ")").c_str()));
    }
  }
  // Polls the communicator's state until it is no longer in progress; aborts it at the deadline.
  void settle(const char* what) {
    const auto deadline = Clock::now() + timeout_;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess) state = q;
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        const std::string detail = async_error();
        abort();
        throw Error(strprintf("%s failed: %s", what, detail.empty() ? ncclGetErrorString(state) : detail.c_str()));
      }
      if (Clock::now() >= deadline) {
        abort();
        throw Error(strprintf("%s did not complete within %.0f s (a rank is missing or stuck); the communicator was "
                              "aborted",
                              what, double(timeout_.count()) / 1000.0));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  ncclComm_t comm_ = nullptr;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::unique_ptr<Engine> make_nccl(StoreClient& store, int rank, int world, std::chrono::milliseconds timeout) {
  return std::make_unique<NcclEngine>(store, rank, world, timeout);
}

std::string nccl_version() { return nccl_version_string(); }

#else

std::unique_ptr<Engine> make_nccl(StoreClient&, int, int, std::chrono::milliseconds) {
  throw Error("the NCCL engine is not built into this addon (NCCL was not found next to CUDA at build time: set "
              "NCCL_ROOT/NCCL_HOME, or pip install nvidia-nccl-cu12, then npm run build:native); the gloo engine can "
              "train on CUDA tensors instead (--dist-backend gloo)");
}

std::string nccl_version() { return ""; }

#endif

}  // namespace vgg::dist
