// Which oneDNN implementation each CPU op ran, with calls and wall time (cpu_kernels_used() in ops.h reads and
// clears it): the CPU bench prints it per case, and tests check that a fixed rule (Winograd, the GEMM paths) picked
// the kernel it meant to. A mutex and a map update per primitive call: nothing next to the ops it counts.
#pragma once
#include <chrono>
#include <string>

namespace vgg::cpu {

void note_kernel(const char* op, const std::string& impl, double ms);

// Times its scope (a primitive's execute and the stream wait) and notes it under (op, impl) when it ends.
class KernelTimer {
 public:
  KernelTimer(const char* op, std::string impl)
      : op_(op), impl_(std::move(impl)), t0_(std::chrono::steady_clock::now()) {}
  ~KernelTimer() {
    note_kernel(op_, impl_, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count());
  }
  KernelTimer(const KernelTimer&) = delete;
  KernelTimer& operator=(const KernelTimer&) = delete;

 private:
  const char* op_;
  std::string impl_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace vgg::cpu
