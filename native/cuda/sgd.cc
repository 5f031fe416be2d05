// The SGD step over every parameter in one launch (sgd.cu): each parameter table is uploaded once (backend.h);
// while captured, the learning rate comes from a graph slot and the step guard skips a non-finite loss.
#include <cstring>
#include <vector>

#include "backend.h"
#include "graph_memory.h"

namespace vgg::cuda {

void CudaBackend::sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, std::vector<Tensor>& bufs,
                           const SgdParams& p, bool first, const std::vector<PooledGrad>& pooled) {
  const char* op = "sgd_step";
  for (const PooledGrad& pg : pooled) VGG_CHECK(!pg.on(), "%s: a pooled gradient is for the CPU only", op);
  VGG_CHECK(grads.size() == params.size(), "%s: %zu parameters but %zu gradients", op, params.size(),
            grads.size());
  const bool mom = p.momentum != 0;
  if (mom && bufs.size() < params.size()) bufs.resize(params.size());
  std::vector<cuk::SgdTensor> table(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string what = strprintf("%s: parameter %zu", op, i);
    check_cuda_tensor(params[i], what.c_str());
    check_dtype(params[i], DType::F32, what.c_str());
    check_cuda_tensor(grads[i], (what + " gradient").c_str());
    check_dtype(grads[i], DType::F32, (what + " gradient").c_str());
    check_shape(grads[i], params[i].shape, (what + " gradient").c_str());
    if (mom) {
      if (!bufs[i].defined()) bufs[i] = Tensor::zeros(params[i].shape, DType::F32, Device::CUDA);
      check_cuda_tensor(bufs[i], (what + " momentum buffer").c_str());
      check_dtype(bufs[i], DType::F32, (what + " momentum buffer").c_str());
      VGG_CHECK(bufs[i].numel() == params[i].numel(), "%s momentum buffer: %s for parameter %s", what.c_str(),
                shape_str(bufs[i].shape).c_str(), shape_str(params[i].shape).c_str());
    }
    table[i] = cuk::SgdTensor{params[i].data<float>(), grads[i].data<float>(),
                              mom ? bufs[i].data<float>() : nullptr, params[i].numel()};
  }
  const size_t bytes = table.size() * sizeof(cuk::SgdTensor);
  const bool capturing = cuda_graph_capturing();
  std::string key(reinterpret_cast<const char*>(table.data()), bytes);
  auto it = sgd_plans_.find(key);
  if (it == sgd_plans_.end()) {
    VGG_CHECK(!capturing, "%s: these parameters were never stepped eagerly (a CUDA graph is captured only after "
              "eager warm-up steps over the same parameters)", op);
    if (sgd_plans_.size() >= kMaxSgdPlans) {
      auto lru = sgd_plans_.begin();
      for (auto j = sgd_plans_.begin(); j != sgd_plans_.end(); ++j)
        if (j->second.used < lru->second.used) lru = j;
      cuda_free(lru->second.plan.table, lru->second.plan.bytes);  // stream-ordered: earlier steps are queued first
      sgd_plans_.erase(lru);
    }
    it = sgd_plans_.emplace(std::move(key), SgdEntry{}).first;
    cuk::sgd_upload(it->second.plan, table.data(), int64_t(table.size()));
  }
  it->second.used = ++sgd_clock_;
  if (capturing) {
    cuda_pool_adopt(it->second.plan.table);  // the graph reads it: growing or freeing it later stays in its pool
    sgd_captured_ = it->first;
  }
  const cuk::SgdPlan& plan = it->second.plan;
  const float lr = float(p.lr);
  const float* lr_slot = nullptr;
  if (capturing)
    lr_slot = static_cast<const float*>(
        cuda_graph_slot(CudaGraphSlot::kLearningRate, CudaGraphSlot::from_float(lr)));
  cuk::sgd_step(plan, lr, float(p.momentum), float(p.dampening), float(p.weight_decay), p.nesterov, first,
                lr_slot, capturing ? cuda_graph_step_guard() : nullptr);
  for (size_t i = 0; i < params.size(); ++i) {  // Tensor::mark_written's contract (no derived values on the GPU)
    params[i].mark_written();
    if (i < bufs.size()) bufs[i].mark_written();
  }
}

}  // namespace vgg::cuda
