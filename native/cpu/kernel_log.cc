// The kernel log behind cpu_kernels_used() (see kernel_log.h).
#include "kernel_log.h"

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "../ops.h"

namespace vgg {

namespace {
std::mutex mu;
std::map<std::pair<std::string, std::string>, CpuKernelUse>& log() {
  static std::map<std::pair<std::string, std::string>, CpuKernelUse> m;
  return m;
}
}  // namespace

namespace cpu {
void note_kernel(const char* op, const std::string& impl, double ms) {
  std::lock_guard<std::mutex> lock(mu);
  CpuKernelUse& u = log()[{op, impl}];
  if (u.calls == 0) u.op = op, u.impl = impl;
  u.calls++;
  u.ms += ms;
}
}  // namespace cpu

std::vector<CpuKernelUse> cpu_kernels_used() {
  std::lock_guard<std::mutex> lock(mu);
  std::vector<CpuKernelUse> out;
  for (auto& kv : log()) out.push_back(kv.second);
  log().clear();
  return out;
}

}  // namespace vgg
