// The SGD step over every parameter in one launch (multi-tensor): a table of tensors and a table of blocks
// (tensor index, first element) are uploaded once per parameter set; each block updates kChunk elements of one
// tensor. torch.optim.SGD semantics, float32 throughout.
#include <cuda_runtime.h>

#include <vector>

#include "common.cuh"
#include "cuda_hooks.h"

namespace vgg::cuk {

constexpr int64_t kChunk = 65536;

struct SgdBlock {
  int32_t tensor;
  int32_t pad_;
  int64_t start;
};

__global__ void sgd_k(const SgdTensor* tensors, const SgdBlock* blocks, float lr, float momentum, float dampening,
                      float wd, bool nesterov, bool first, const float* lr_slot, const float* guard) {
  if (guard && !isfinite(*guard)) return;  // a diverged step: leave weights and momentum as they were
  if (lr_slot) lr = *lr_slot;
  const SgdBlock b = blocks[blockIdx.x];
  const SgdTensor t = tensors[b.tensor];
  int64_t end = b.start + kChunk;
  if (end > t.n) end = t.n;
  for (int64_t i = b.start + threadIdx.x; i < end; i += blockDim.x) {
    const float p = t.p[i];
    float d = t.g[i];
    if (wd != 0.f) d += wd * p;
    if (momentum != 0.f) {
      const float buf = first ? d : momentum * t.buf[i] + (1.f - dampening) * d;
      t.buf[i] = buf;
      d = nesterov ? d + momentum * buf : buf;
    }
    t.p[i] = p - lr * d;
  }
}

void sgd_upload(SgdPlan& plan, const SgdTensor* tensors, int64_t ntensors) {
  std::vector<SgdBlock> blocks;
  for (int64_t t = 0; t < ntensors; ++t)
    for (int64_t s = 0; s < tensors[t].n; s += kChunk) blocks.push_back(SgdBlock{int32_t(t), 0, s});
  const size_t tb = size_t(ntensors) * sizeof(SgdTensor), bb = blocks.size() * sizeof(SgdBlock);
  const size_t need = tb + bb;
  if (need > plan.bytes) {
    if (plan.table) cuda_free(plan.table, plan.bytes);
    plan.table = nullptr;
    plan.bytes = 0;
    plan.table = cuda_alloc(need);
    plan.bytes = need;
  }
  std::vector<char> host(need);
  if (tb) std::memcpy(host.data(), tensors, tb);
  if (bb) std::memcpy(host.data() + tb, blocks.data(), bb);
  cudaError_t e = cudaMemcpyAsync(plan.table, host.data(), need, cudaMemcpyHostToDevice, cuk::stream());
  if (e != cudaSuccess) throw Error(strprintf("sgd_step: uploading the tensor table failed: %s", cudaGetErrorString(e)));
  plan.ntensors = ntensors;
  plan.nblocks = int64_t(blocks.size());
}

void sgd_step(const SgdPlan& plan, float lr, float momentum, float dampening, float weight_decay, bool nesterov,
              bool first, const float* lr_slot, const float* guard) {
  if (plan.nblocks == 0) return;
  if (plan.nblocks > 2147483647LL) throw Error("sgd_step: too many parameters");
  const SgdTensor* tensors = static_cast<const SgdTensor*>(plan.table);
  const SgdBlock* blocks = reinterpret_cast<const SgdBlock*>(static_cast<const char*>(plan.table) +
                                                             size_t(plan.ntensors) * sizeof(SgdTensor));
  sgd_k<<<unsigned(plan.nblocks), 512, 0, cuk::stream()>>>(tensors, blocks, lr, momentum, dampening, weight_decay, nesterov, first,
                                                                 lr_slot, guard);
  check_launch("sgd_step");
}

}  // namespace vgg::cuk
