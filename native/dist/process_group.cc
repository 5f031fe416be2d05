// The process group (process_group.h).
#include "dist/process_group.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dist/cuda_comm.h"

namespace vgg::dist {

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// float32 <-> bfloat16 (round to nearest even; NaN stays NaN), for compressed buckets on the host.
inline uint16_t to_bf16(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f = 0;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string mb(size_t bytes) { return strprintf("%.2f MB", double(bytes) / 1e6); }

}  // namespace

struct ProcessGroup::Bucket {
  size_t bytes = 0;
  Tensor flat;               // the bucket's values: host memory (CPU) or device memory (CUDA)
  void* pinned = nullptr;    // staged (CUDA over gloo): the host copy the engine reduces
  void* ev_ready = nullptr;  // staged: the device->host copy is complete
  void* ev_start = nullptr;  // NCCL timing (eager steps)
  void* ev_end = nullptr;
  ~Bucket() {
    gpu::host_free(pinned);
    for (void* e : {ev_ready, ev_start, ev_end}) gpu::event_free(e);
  }
};

ProcessGroup::ProcessGroup(const GroupOptions& o) : o_(o) {
  VGG_CHECK_RANGE(o.world >= 1, "distributed: WORLD_SIZE must be >= 1, got %d", o.world);
  VGG_CHECK_RANGE(o.rank >= 0 && o.rank < o.world, "distributed: RANK must be in [0, %d), got %d", o.world, o.rank);
  VGG_CHECK_RANGE(o.master_port >= 1 && o.master_port <= 65535, "distributed: MASTER_PORT must be in 1..65535, got %d",
                  o.master_port);
  VGG_CHECK_RANGE(o.timeout.count() > 0, "distributed: the timeout must be positive");
  VGG_CHECK_RANGE(o.engine == "gloo" || o.engine == "nccl", "distributed: unknown engine '%s' (expected gloo or nccl)",
                  o.engine.c_str());
  if (o.device == Device::CUDA)
    VGG_CHECK(cuda_built(), "distributed training on CUDA tensors: this addon was built without the CUDA backend");
  VGG_CHECK(o.engine != "nccl" || o.device == Device::CUDA,
            "distributed: the NCCL engine reduces CUDA tensors; a model on the CPU uses gloo");
  if (o.rank == 0) server_ = std::make_unique<StoreServer>(o.master_port, o.world);
  store_ = std::make_unique<StoreClient>(o.master_addr, o.master_port, o.timeout);
  store_->hello(o.rank, o.world);
  const std::vector<int> missing = store_->wait_world(o.timeout);
  if (!missing.empty())
    throw Error(strprintf("the world did not fill within %.0f s: rank(s) %s of %d never reached the rendezvous store "
                          "at %s (were they started, with the same --master-addr/--master-port and world size? on "
                          "other machines: --nnodes and --node-rank right?)",
                          double(o.timeout.count()) / 1000.0, join_ranks(missing).c_str(), o.world,
                          store_->address().c_str()));
  engine_ = o.engine == "nccl" ? make_nccl(*store_, o.rank, o.world, o.timeout)
                               : make_gloo(*store_, o.rank, o.world, o.timeout, store_->local_ip(), o.iface);
  cuda_ = o.device == Device::CUDA;
  staged_ = cuda_ && !engine_->on_device();
  if (cuda_) {
    pinned_ = static_cast<float*>(gpu::host_alloc(4 * sizeof(float)));
    std::fill(pinned_, pinned_ + 4, 0.f);
    ev_fork_ = gpu::event_new(false);
    ev_join_ = gpu::event_new(false);
    ev_sync_ = gpu::event_new(false);
    ev_extras_ = gpu::event_new(false);
    ev_bwd_end_ = gpu::event_new(true);
    extras_dev_ = Tensor::empty({2}, DType::F32, Device::CUDA);
  }
  if (!engine_->on_device()) thread_ = std::thread([this] { thread_main(); });
  heartbeat_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(hb_mu_);
    while (!hb_cv_.wait_for(lock, Millis(1000), [this] { return hb_stop_; })) store_->progress(seq_.load());
  });
}

void ProcessGroup::stop_heartbeat() noexcept {
  {
    std::lock_guard<std::mutex> lock(hb_mu_);
    hb_stop_ = true;
  }
  hb_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

ProcessGroup::~ProcessGroup() {
  stop_heartbeat();
  bool busy = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    busy = pending_ > 0;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    if (busy) {
      // A collective still runs (the process is going down after an error): never wait on it here, and keep what it
      // uses alive.
      thread_.detach();
      (void)engine_.release();
      for (auto& b : buckets_) (void)b.release();
      return;
    }
    thread_.join();
  }
  buckets_.clear();
  gpu::host_free(pinned_);
  for (void* e : {ev_fork_, ev_join_, ev_sync_, ev_extras_, ev_bwd_end_}) gpu::event_free(e);
}

// ------------------------------------------------------------------------------------------------ comm thread

void ProcessGroup::thread_main() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    bool skip = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      skip = !failure_.empty();
    }
    if (!skip) {
      const int64_t n = next_seq();
      const auto t0 = Clock::now();
      try {
        job.fn();
      } catch (const std::exception& e) {
        const std::string why = explain(job.what, e.what(), n);
        std::lock_guard<std::mutex> lock(mu_);
        if (failure_.empty()) failure_ = why;
      }
      if (job.bucket) {
        std::lock_guard<std::mutex> lock(stats_mu_);
        step_comm_ms_ += ms_between(t0, Clock::now());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_;
    }
    cv_done_.notify_all();
  }
}

void ProcessGroup::enqueue(Job j) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    VGG_CHECK(failure_.empty(), "%s", failure_.c_str());
    VGG_CHECK(!stopping_, "distributed: the process group was shut down");
    jobs_.push_back(std::move(j));
    ++pending_;
  }
  cv_.notify_one();
}

void ProcessGroup::wait_all() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return pending_ == 0; });
  if (!failure_.empty()) throw Error(failure_);
}

void ProcessGroup::check_failed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.empty()) throw Error(failure_);
}

int64_t ProcessGroup::next_seq() {
  const int64_t n = ++seq_;
  store_->progress(n);
  return n;
}

// What went wrong, as far as the rendezvous store can tell: the rank whose connection closed (it exited or was
// killed), or the ranks that never started this collective (stuck), or rank 0 itself when its store is gone.
std::string ProcessGroup::explain(const std::string& what, const std::string& detail, int64_t seq) {
  std::string who;
  try {
    WorldStatus st;
    // A peer's death reaches the engine and the store at about the same moment: give the store a moment to see it.
    const auto deadline = Clock::now() + Millis(2000);
    for (;;) {
      st = store_->status(Millis(5000));
      st.lost.erase(std::remove(st.lost.begin(), st.lost.end(), o_.rank), st.lost.end());
      bool silent = false;
      for (int r = 0; r < int(st.silent_ms.size()); ++r) silent = silent || (r != o_.rank && st.silent_ms[size_t(r)] > 3000);
      if (!st.lost.empty() || silent || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(Millis(100));
    }
    std::vector<int> silent;
    for (int r = 0; r < int(st.silent_ms.size()); ++r)
      if (r != o_.rank && st.silent_ms[size_t(r)] > 3000) silent.push_back(r);
    if (!st.lost.empty()) {
      who = strprintf("rank %s %s gone: %s connection to the rendezvous store closed without a goodbye (the process "
                      "exited or was killed, or its machine went down)",
                      join_ranks(st.lost).c_str(), st.lost.size() > 1 ? "are" : "is",
                      st.lost.size() > 1 ? "their" : "its");
    } else if (!silent.empty()) {
      who = strprintf("rank %s %s not been heard from for %.0f s or more (stopped, hung in native code, or its machine "
                      "is unreachable)",
                      join_ranks(silent).c_str(), silent.size() > 1 ? "have" : "has",
                      double(st.silent_ms[size_t(silent[0])]) / 1000.0);
    } else {
      std::vector<int> behind, left;
      for (int r = 0; r < int(st.progress.size()); ++r) {
        if (r == o_.rank) continue;
        if (std::find(st.left.begin(), st.left.end(), r) != st.left.end()) left.push_back(r);
        else if (st.progress[size_t(r)] < seq) behind.push_back(r);
      }
      if (!left.empty())
        who = strprintf("rank %s already finished (said goodbye) while this rank still expected collectives from it",
                        join_ranks(left).c_str());
      else if (!behind.empty())
        who = strprintf("rank %s never started collective #%lld (hung, or stuck before it)", join_ranks(behind).c_str(),
                        (long long)seq);
      else
        who = "every rank is still connected to the rendezvous store";
    }
  } catch (const std::exception& e) {
    who = strprintf("rank 0 is gone (%s)", e.what());
  }
  return strprintf("rank %d: %s (collective #%lld) failed: %s. %s", o_.rank, what.c_str(), (long long)seq,
                   who.c_str(), detail.c_str());
}

void ProcessGroup::fail(const std::string& what, const std::string& detail, int64_t seq) {
  const std::string why = explain(what, detail, seq);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.empty()) failure_ = why;
  }
  engine_->abort();
  throw Error(why);
}

// ------------------------------------------------------------------------------------------------ CUDA helpers

void ProcessGroup::fork_to_comm() {
  gpu::record(ev_fork_, nullptr);
  gpu::wait(gpu::comm_stream(), ev_fork_);
}
void ProcessGroup::join_from_comm() {
  gpu::record(ev_join_, gpu::comm_stream());
  gpu::wait(nullptr, ev_join_);
}

ProcessGroup::Bucket& ProcessGroup::bucket(size_t index, size_t bytes) {
  while (buckets_.size() <= index) buckets_.push_back(std::make_unique<Bucket>());
  Bucket& b = *buckets_[index];
  if (b.bytes < bytes) {
    b.flat = Tensor::empty({int64_t(bytes)}, DType::U8, o_.device);
    if (staged_) {
      gpu::host_free(b.pinned);
      b.pinned = nullptr;
      b.pinned = gpu::host_alloc(bytes);
    }
    b.bytes = bytes;
  }
  if (cuda_ && !b.ev_start) {
    b.ev_start = gpu::event_new(true);
    b.ev_end = gpu::event_new(true);
    b.ev_ready = gpu::event_new(false);
  }
  return b;
}

// ------------------------------------------------------------------------------------------------ buckets

void ProcessGroup::reduce_bucket(const std::vector<Tensor>& grads, bool bf16) {
  check_failed();
  VGG_CHECK(!grads.empty(), "distributed: an empty gradient bucket");
  int64_t count = 0;
  for (const Tensor& g : grads) {
    VGG_CHECK_TYPE(g.defined() && g.dtype == DType::F32 && g.device() == o_.device && g.layout == Layout::Contiguous,
                   "distributed: gradients must be contiguous float32 on %s, got %s", device_name(o_.device),
                   g.defined() ? g.describe().c_str() : "undefined");
    count += g.numel();
  }
  const Elem e = bf16 ? Elem::BF16 : Elem::F32;
  const size_t esz = elem_size(e), bytes = size_t(count) * esz;
  const size_t index = step_buckets_++;
  if (index == 0) step_begin_ = Clock::now();
  Bucket& b = bucket(index, bytes);
  const float scale = 1.f / float(o_.world);
  const std::string what = strprintf("all-reduce of gradient bucket %zu (%zu tensors, %s)", index, grads.size(),
                                     mb(bytes).c_str());
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.buckets++;
    stats_.bytes += double(bytes);
  }
  if (!cuda_) {
    Bucket* bp = &b;
    enqueue({what, [this, grads, bp, e, count, scale] {
               char* flat = static_cast<char*>(bp->flat.raw());
               size_t off = 0;
               for (const Tensor& g : grads) {
                 const int64_t n = g.numel();
                 const float* src = g.data<float>();
                 if (e == Elem::BF16) {
                   uint16_t* d = reinterpret_cast<uint16_t*>(flat) + off;
                   for (int64_t i = 0; i < n; ++i) d[i] = to_bf16(src[i]);
                 } else {
                   std::memcpy(reinterpret_cast<float*>(flat) + off, src, size_t(n) * 4);
                 }
                 off += size_t(n);
               }
               engine_->allreduce_sum(flat, size_t(count), e, nullptr);
               off = 0;
               for (const Tensor& g : grads) {
                 const int64_t n = g.numel();
                 float* dst = g.data<float>();
                 if (e == Elem::BF16) {
                   const uint16_t* s = reinterpret_cast<const uint16_t*>(flat) + off;
                   for (int64_t i = 0; i < n; ++i) dst[i] = scale * from_bf16(s[i]);
                 } else {
                   const float* s = reinterpret_cast<const float*>(flat) + off;
                   for (int64_t i = 0; i < n; ++i) dst[i] = scale * s[i];
                 }
                 off += size_t(n);
               }
             },
             true});
    return;
  }
  // CUDA: pack on the communication stream, after what the compute stream has queued so far (the gradients).
  void* cs = gpu::comm_stream();
  const bool timed = !gpu::capturing();
  if (index == 0) step_timed_ = timed;
  fork_to_comm();
  char* flat = static_cast<char*>(b.flat.raw());
  size_t off = 0;
  for (const Tensor& g : grads) {
    gpu::pack(flat + off * esz, e, g.data<float>(), g.numel(), cs);
    off += size_t(g.numel());
  }
  auto unpack_all = [grads, flat, e, esz, scale, cs] {
    size_t o = 0;
    for (const Tensor& g : grads) {
      gpu::unpack(g.data<float>(), flat + o * esz, e, g.numel(), scale, cs);
      o += size_t(g.numel());
    }
  };
  if (!staged_) {
    const int64_t n = next_seq();
    try {
      if (step_timed_) gpu::record(b.ev_start, cs);
      engine_->allreduce_sum(flat, size_t(count), e, cs);
      if (step_timed_) gpu::record(b.ev_end, cs);
      unpack_all();
    } catch (const std::exception& ex) {
      fail(what, ex.what(), n);
    }
    return;
  }
  // Staged through pinned host memory for gloo.
  gpu::copy(b.pinned, flat, bytes, cs);
  gpu::record(b.ev_ready, cs);
  Bucket* bp = &b;
  enqueue({what, [this, bp, count, e, bytes, flat, cs, unpack_all] {
             while (!gpu::done(bp->ev_ready)) std::this_thread::sleep_for(std::chrono::microseconds(50));
             engine_->allreduce_sum(bp->pinned, size_t(count), e, nullptr);
             gpu::copy(flat, bp->pinned, bytes, cs);
             unpack_all();
           },
           true});
}

void ProcessGroup::reduce_extras(const Tensor& loss, Tensor& loss_out) {
  check_failed();
  VGG_CHECK_TYPE(loss.defined() && loss.dtype == DType::F32 && loss.numel() == 1 && loss.device() == o_.device,
                 "distributed: the loss must be one float32 on %s", device_name(o_.device));
  VGG_CHECK_TYPE(loss_out.defined() && loss_out.dtype == DType::F32 && loss_out.numel() == 1 &&
                     loss_out.device() == o_.device,
                 "distributed: the reduced loss must go to one float32 on %s", device_name(o_.device));
  const float scale = 1.f / float(o_.world);
  const std::string what = "all-reduce of the step's loss and stop votes";
  if (!cuda_) {
    const float lv = loss.data<float>()[0];
    Tensor out = loss_out;
    enqueue({what, [this, lv, out, scale] {
               float e[2] = {lv, stop_request_.load() ? 1.f : 0.f};
               engine_->allreduce_sum(e, 2, Elem::F32, nullptr);
               out.data<float>()[0] = e[0] * scale;
               stop_votes_ = e[1];
             }});
    return;
  }
  void* cs = gpu::comm_stream();
  fork_to_comm();
  float* ex = extras_dev_.data<float>();
  if (!staged_) {
    const int64_t n = next_seq();
    try {
      gpu::copy(ex, loss.raw(), 4, cs);
      gpu::copy(ex + 1, pinned_ + 0, 4, cs);  // this rank's vote, read when the copy runs (each replay too)
      engine_->allreduce_sum(ex, 2, Elem::F32, cs);
      gpu::unpack(loss_out.data<float>(), ex, Elem::F32, 1, scale, cs);
      gpu::copy(pinned_ + 1, ex + 1, 4, cs);
    } catch (const std::exception& e) {
      fail(what, e.what(), n);
    }
    return;
  }
  gpu::copy(pinned_ + 2, loss.raw(), 4, cs);
  gpu::record(ev_extras_, cs);
  void* ready = ev_extras_;
  Tensor out = loss_out;
  enqueue({what, [this, ready, out, scale, cs] {
             while (!gpu::done(ready)) std::this_thread::sleep_for(std::chrono::microseconds(50));
             pinned_[3] = stop_request_.load() ? 1.f : 0.f;
             engine_->allreduce_sum(pinned_ + 2, 2, Elem::F32, nullptr);
             stop_votes_ = pinned_[3];
             pinned_[2] *= scale;
             gpu::copy(out.raw(), pinned_ + 2, 4, cs);
           }});
}

void ProcessGroup::finish() {
  const auto t_call = Clock::now();
  const size_t nb = step_buckets_;
  step_buckets_ = 0;
  if (!cuda_ || staged_) wait_all();
  check_failed();
  if (cuda_) {
    if (step_timed_ && nb > 0) gpu::record(ev_bwd_end_, nullptr);
    join_from_comm();
  }
  if (nb == 0) return;
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.steps++;
  if (!cuda_) {
    const auto t_ret = Clock::now();
    stats_.timed_steps++;
    stats_.comm_ms += step_comm_ms_;
    stats_.exposed_ms += ms_between(t_call, t_ret);
    stats_.backward_ms += ms_between(step_begin_, t_call);
    step_comm_ms_ = 0;
  } else if (!step_timed_) {
    step_comm_ms_ = 0;
  } else {
    timed_buckets_ = nb;
  }
}

void ProcessGroup::request_stop(bool on) {
  stop_request_ = on;
  if (pinned_) pinned_[0] = on ? 1.f : 0.f;
}

double ProcessGroup::stop_votes() {
  if (cuda_ && !staged_) return pinned_[1];
  return stop_votes_;
}

void ProcessGroup::sync_device() {
  if (!cuda_) return;
  check_failed();
  gpu::record(ev_sync_, nullptr);
  const auto deadline = Clock::now() + o_.timeout;
  int spins = 0;
  while (!gpu::done(ev_sync_)) {
    const std::string err = engine_->async_error();
    if (!err.empty()) fail("the step's collectives", err, seq_.load());
    if (Clock::now() >= deadline)
      fail("the step's collectives", strprintf("they did not complete within %.0f s; the communicator was aborted",
                                               double(o_.timeout.count()) / 1000.0),
           seq_.load());
    if (++spins > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (staged_) wait_all();
  if (timed_buckets_ > 0 && step_timed_) {
    double comm = 0;
    for (size_t i = 0; i < timed_buckets_ && i < buckets_.size(); ++i)
      if (!staged_) comm += gpu::elapsed_ms(buckets_[i]->ev_start, buckets_[i]->ev_end);
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.timed_steps++;
    if (!staged_) {
      Bucket& last = *buckets_[timed_buckets_ - 1];
      stats_.comm_ms += comm;
      stats_.exposed_ms += std::max(0.f, gpu::elapsed_ms(ev_bwd_end_, last.ev_end));
      stats_.backward_ms += std::max(0.f, gpu::elapsed_ms(buckets_[0]->ev_start, ev_bwd_end_));
    }
  }
  timed_buckets_ = 0;
  step_timed_ = false;
}

// ------------------------------------------------------------------------------------------------ other collectives

void ProcessGroup::broadcast(std::vector<Tensor>& ts, int root) {
  check_failed();
  VGG_CHECK_RANGE(root >= 0 && root < o_.world, "distributed: broadcast root %d is outside the world of %d", root,
                  o_.world);
  for (const Tensor& t : ts)
    VGG_CHECK(t.defined() && t.device() == o_.device, "distributed: broadcast of a tensor not on %s",
              device_name(o_.device));
  if (!cuda_) {
    for (Tensor& t : ts) {
      Tensor tt = t;
      enqueue({strprintf("broadcast of %s from rank %d", tt.describe().c_str(), root),
               [this, tt, root] { engine_->broadcast(tt.raw(), tt.nbytes(), root, nullptr); }});
    }
    wait_all();
    return;
  }
  if (!staged_) {
    void* cs = gpu::comm_stream();
    fork_to_comm();
    const int64_t n = next_seq();
    try {
      for (Tensor& t : ts) engine_->broadcast(t.raw(), t.nbytes(), root, cs);
    } catch (const std::exception& e) {
      fail("broadcast of the parameters and buffers", e.what(), n);
    }
    join_from_comm();
    sync_device();
    return;
  }
  for (Tensor& t : ts) {
    std::vector<char> h(t.nbytes());
    copy_bytes(h.data(), Device::CPU, t.raw(), Device::CUDA, h.size());
    char* hp = h.data();
    const size_t nb = h.size();
    enqueue({strprintf("broadcast of %s from rank %d", t.describe().c_str(), root),
             [this, hp, nb, root] { engine_->broadcast(hp, nb, root, nullptr); }});
    wait_all();
    copy_bytes(t.raw(), Device::CUDA, h.data(), Device::CPU, h.size());
  }
}

void ProcessGroup::allreduce_host(double* p, size_t n) {
  check_failed();
  if (n == 0) return;
  if (!engine_->on_device()) {
    enqueue({strprintf("all-reduce of %zu host values", n), [this, p, n] { engine_->allreduce_sum(p, n, Elem::F64, nullptr); }});
    wait_all();
    return;
  }
  Tensor tmp = Tensor::empty({int64_t(n * sizeof(double))}, DType::U8, Device::CUDA);
  copy_bytes(tmp.raw(), Device::CUDA, p, Device::CPU, n * sizeof(double));
  fork_to_comm();
  const int64_t seq = next_seq();
  try {
    engine_->allreduce_sum(tmp.raw(), n, Elem::F64, gpu::comm_stream());
  } catch (const std::exception& e) {
    fail(strprintf("all-reduce of %zu host values", n), e.what(), seq);
  }
  join_from_comm();
  sync_device();
  copy_bytes(p, Device::CPU, tmp.raw(), Device::CUDA, n * sizeof(double));
}

void ProcessGroup::all_gather(const std::vector<Tensor>& srcs, std::vector<Tensor>& dsts,
                              const std::vector<float>& scales) {
  check_failed();
  VGG_CHECK(!cuda_, "distributed: all_gather reduces CPU tensors, this group reduces %s ones", device_name(o_.device));
  VGG_CHECK(!srcs.empty() && dsts.size() == srcs.size() && scales.size() == srcs.size(),
            "all_gather: %zu sources, %zu outputs and %zu scales; expected as many of each, at least one", srcs.size(),
            dsts.size(), scales.size());
  const DType dt = srcs[0].defined() ? srcs[0].dtype : DType::F32;
  size_t total = 0;  // elements of this rank's slot
  for (size_t k = 0; k < srcs.size(); ++k) {
    const Tensor& s = srcs[k];
    const Tensor& d = dsts[k];
    VGG_CHECK_TYPE(s.defined() && d.defined() && s.device() == Device::CPU && d.device() == Device::CPU,
                   "all_gather: CPU tensors expected");
    VGG_CHECK_TYPE((dt == DType::F32 || dt == DType::BF16) && s.dtype == dt && d.dtype == dt,
                   "all_gather: float32 or bfloat16 tensors of one dtype expected, got %s and %s", dtype_name(s.dtype),
                   dtype_name(d.dtype));
    VGG_CHECK(s.layout == Layout::Contiguous && d.layout == Layout::Contiguous && d.numel() == s.numel() * o_.world,
              "all_gather: plain tensors, the output holding %d × %lld elements, expected; it holds %lld", o_.world,
              (long long)s.numel(), (long long)d.numel());
    total += size_t(s.numel());
  }
  const bool bf16 = dt == DType::BF16;
  const size_t esz = bf16 ? 2 : 4, count = total * size_t(o_.world);
  // A sum over the ranks of buffers that are zero outside each rank's own slot: x + 0 is x, exactly.
  std::vector<char> buf(count * esz, 0);
  size_t off = size_t(o_.rank) * total * esz;
  for (const Tensor& s : srcs) {
    std::memcpy(buf.data() + off, s.raw(), size_t(s.numel()) * esz);
    off += size_t(s.numel()) * esz;
  }
  char* bp = buf.data();
  enqueue({strprintf("all-gather of %zu %s elements per rank", total, bf16 ? "bfloat16" : "float32"),
           [this, bp, count, bf16] { engine_->allreduce_sum(bp, count, bf16 ? Elem::BF16 : Elem::F32, nullptr); }});
  wait_all();
  size_t first = 0;  // srcs[k]'s first element within a slot
  for (size_t k = 0; k < srcs.size(); ++k) {
    const size_t n = size_t(srcs[k].numel());
    const float scale = scales[k];
    for (int r = 0; r < o_.world; ++r) {
      const size_t from = size_t(r) * total + first, to = size_t(r) * n;
      if (bf16) {
        const uint16_t* s = reinterpret_cast<const uint16_t*>(bp) + from;
        uint16_t* d = dsts[k].data<uint16_t>() + to;
        if (scale == 1.f) std::memcpy(d, s, n * 2);
        else for (size_t i = 0; i < n; ++i) d[i] = to_bf16(scale * from_bf16(s[i]));
      } else {
        const float* s = reinterpret_cast<const float*>(bp) + from;
        float* d = dsts[k].data<float>() + to;
        if (scale == 1.f) std::memcpy(d, s, n * 4);
        else for (size_t i = 0; i < n; ++i) d[i] = scale * s[i];
      }
    }
    first += n;
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.gathered_bytes += double(count * esz);
}

void ProcessGroup::sum(double* data, int64_t n, Device device) {
  check_failed();
  VGG_CHECK(device == o_.device, "SyncBatchNorm: tensors on %s, the process group reduces %s tensors",
            device_name(device), device_name(o_.device));
  const std::string what = strprintf("SyncBatchNorm all-reduce of %lld statistics", (long long)n);
  if (!cuda_) {
    enqueue({what, [this, data, n] { engine_->allreduce_sum(data, size_t(n), Elem::F64, nullptr); }});
    wait_all();
    return;
  }
  if (!staged_) {
    fork_to_comm();
    const int64_t seq = next_seq();
    try {
      engine_->allreduce_sum(data, size_t(n), Elem::F64, gpu::comm_stream());
    } catch (const std::exception& e) {
      fail(what, e.what(), seq);
    }
    join_from_comm();
    return;
  }
  std::vector<double> h(static_cast<size_t>(n));
  copy_bytes(h.data(), Device::CPU, data, Device::CUDA, h.size() * sizeof(double));
  double* hp = h.data();
  enqueue({what, [this, hp, n] { engine_->allreduce_sum(hp, size_t(n), Elem::F64, nullptr); }});
  wait_all();
  copy_bytes(data, Device::CUDA, h.data(), Device::CPU, h.size() * sizeof(double));
}

GroupStats ProcessGroup::stats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  GroupStats s = stats_;
  s.collectives = seq_.load();
  return s;
}

void ProcessGroup::shutdown() noexcept {
  if (shut_) return;
  shut_ = true;
  bool busy = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy = pending_ > 0;
    if (!busy) stopping_ = true;
  }
  cv_.notify_all();
  if (!busy && thread_.joinable()) thread_.join();
  stop_heartbeat();
  store_->bye();
  bool failed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed = !failure_.empty();
  }
  // The others may still be saying goodbye to rank 0's store; after a failure nobody waits for anyone.
  if (server_ && !failed) server_->drain(std::min<Millis>(o_.timeout, Millis(5000)));
}

}  // namespace vgg::dist
