// A process group: this rank's membership of a distributed job (PyTorch's c10d::ProcessGroup with DDP's reducer
// folded in, for the few collectives data-parallel training needs).
//
// Set-up (the constructor, blocking up to the timeout): rank 0 serves the rendezvous store (store.h); every rank
// joins it, waits for the world to fill, then connects its engine (engine.h: gloo or NCCL).
//
// Gradient buckets: reduce_bucket() is called during backward as soon as a bucket's gradients are written; it packs
// them into the bucket's flat buffer (float32, or bfloat16 when compressed), all-reduces it and writes the average
// back, without waiting. finish() is where the step needs them all: it returns once they are averaged (host
// engines), or makes the compute stream wait for them (CUDA).
//   CPU tensors, gloo:   a comm thread runs the queued collectives in order, beside the backward pass.
//   CUDA tensors, NCCL:  everything is queued on the group's communication stream, forked from the compute stream by
//                        an event at each bucket and joined back at finish(): no host synchronisation, so the whole
//                        step, collectives included, can be captured as one CUDA graph.
//   CUDA tensors, gloo:  the bucket is packed on the communication stream and copied to pinned host memory; the comm
//                        thread waits for that copy, all-reduces on the host, and queues the copy back and the unpack.
//                        Host waits: not capturable.
// reduce_extras() all-reduces the step's loss (its mean over the ranks) and the ranks' stop votes (a rank asked to
// stop: Ctrl-C) in one small collective, so every rank logs the same loss and stops after the same step.
//
// Failures: every collective has the group's timeout (gloo's own, or a host-side watchdog over NCCL). The first
// failure is kept and every later call fails with it; its message names the rank that is gone or stuck, as the
// rendezvous store sees it (a closed connection, or a collective count behind the others').
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/engine.h"
#include "dist/store.h"
#include "replica_sum.h"
#include "tensor.h"

namespace vgg::dist {

struct GroupOptions {
  int rank = 0, world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  Millis timeout{300000};
  std::string engine = "gloo";  // "gloo" | "nccl"
  Device device = Device::CPU;  // where the tensors it reduces live
  std::string iface;            // GLOO_SOCKET_IFNAME
};

struct GroupStats {
  int64_t steps = 0;        // finish() calls that had buckets
  int64_t timed_steps = 0;  // of which timed (CUDA: eager steps only; captured replays are not)
  int64_t buckets = 0, collectives = 0;
  double bytes = 0;         // bucket bytes all-reduced
  double gathered_bytes = 0;  // bytes all_gather() received (world × each rank's)
  double comm_ms = 0;       // time inside bucket all-reduces (timed steps)
  double exposed_ms = 0;    // time the step waited for them after backward ended (timed steps)
  double backward_ms = 0;   // from the first bucket's launch to the end of backward (timed steps)
};

class ProcessGroup final : public ReplicaSum {
 public:
  explicit ProcessGroup(const GroupOptions& o);
  ~ProcessGroup() override;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return o_.rank; }
  int world() const { return o_.world; }
  Device device() const { return o_.device; }
  const char* engine_name() const { return engine_->name(); }
  std::string engine_version() const { return engine_->version(); }
  const std::string& master() const { return store_->address(); }
  const std::string& local_ip() const { return store_->local_ip(); }
  // Whether a training step using this group can be captured as a CUDA graph (NCCL on CUDA).
  bool capturable() const { return o_.device == Device::CUDA && engine_->on_device(); }

  void reduce_bucket(const std::vector<Tensor>& grads, bool bf16);
  void reduce_extras(const Tensor& loss, Tensor& loss_out);
  void finish();
  void request_stop(bool on);
  // How many ranks voted to stop in the last step's extras (CUDA: valid after sync_device()).
  double stop_votes();
  // CUDA: waits on the host until the compute stream has passed everything queued so far, polling the engine's
  // errors, within the timeout. Nothing on the CPU.
  void sync_device();

  void broadcast(std::vector<Tensor>& ts, int root);
  void allreduce_host(double* p, size_t n);
  // CPU groups: every rank's srcs[k] (float32 or bfloat16, one dtype, the same sizes on every rank) into dsts[k]
  // (world × srcs[k]'s elements, that dtype), in rank order, each element times scales[k], in one collective; returns
  // when done (DDP's classifier gradients: a layer's input and output gradient gathered instead of its weight
  // gradients all-reduced).
  void all_gather(const std::vector<Tensor>& srcs, std::vector<Tensor>& dsts, const std::vector<float>& scales);
  void sum(double* data, int64_t n, Device device) override;  // SyncBatchNorm

  GroupStats stats();
  // Orderly exit: BYE to the store; rank 0 waits (briefly) for the others' BYE before closing the store.
  void shutdown() noexcept;

 private:
  struct Bucket;
  struct Job {
    std::string what;
    std::function<void()> fn;
    bool bucket = false;
  };
  void enqueue(Job j);
  void wait_all();
  void thread_main();
  void stop_heartbeat() noexcept;
  void check_failed();
  [[noreturn]] void fail(const std::string& what, const std::string& detail, int64_t seq);
  std::string explain(const std::string& what, const std::string& detail, int64_t seq);
  int64_t next_seq();
  Bucket& bucket(size_t index, size_t bytes);
  void fork_to_comm();
  void join_from_comm();

  GroupOptions o_;
  std::unique_ptr<StoreServer> server_;
  std::unique_ptr<StoreClient> store_;
  std::unique_ptr<Engine> engine_;
  bool cuda_ = false, staged_ = false;

  std::thread thread_;
  std::thread heartbeat_;  // tells the store every second that this process is alive (a stopped one falls silent)
  std::mutex hb_mu_;
  std::condition_variable hb_cv_;
  bool hb_stop_ = false;
  std::mutex mu_;
  std::condition_variable cv_, cv_done_;
  std::deque<Job> jobs_;
  size_t pending_ = 0;
  bool stopping_ = false;
  std::string failure_;  // the first failure; sticky
  std::atomic<int64_t> seq_{0};
  bool shut_ = false;

  std::vector<std::unique_ptr<Bucket>> buckets_;
  size_t step_buckets_ = 0;  // buckets reduced since the last finish()
  std::atomic<bool> stop_request_{false};
  double stop_votes_ = 0;
  // CUDA: pinned [stop vote in, stop votes out, staged extras x2]; device extras [2]; events.
  float* pinned_ = nullptr;
  Tensor extras_dev_;
  void* ev_fork_ = nullptr;
  void* ev_join_ = nullptr;
  void* ev_sync_ = nullptr;
  void* ev_extras_ = nullptr;   // staged: the loss has reached pinned memory
  void* ev_bwd_end_ = nullptr;  // timing
  bool step_timed_ = false;
  size_t timed_buckets_ = 0;

  // Host timing of the step (host engines).
  std::mutex stats_mu_;
  GroupStats stats_;
  double step_comm_ms_ = 0;
  std::chrono::steady_clock::time_point step_begin_;
};

}  // namespace vgg::dist
