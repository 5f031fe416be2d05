// Linked instead of native/cuda/ when the CUDA backend is not built: every CUDA entry point says so.
#include "cuda/cuda_hooks.h"
#include "data/augment.h"
#include "ops.h"

namespace vgg {

namespace {
[[noreturn]] void not_built() {
  throw Error("CUDA backend not built: this addon was built without CUDA (compiled CPU-only; rebuild where CUDA, "
              "cuDNN and cuBLAS are installed; see README)");
}
}  // namespace

void* cuda_alloc(size_t) { not_built(); }
void cuda_free(void*, size_t) noexcept {}
void cuda_empty_cache() {}
MemoryStats cuda_memory_stats() { return {}; }
void cuda_reset_peak() {}
void cuda_copy(void*, Device, const void*, Device, size_t) { not_built(); }
void cuda_zero(void*, size_t) { not_built(); }
void* cuda_host_alloc(size_t) { not_built(); }
void cuda_host_free(void*) noexcept {}
std::shared_ptr<void> cuda_copy_to_device_async(void*, const void*, size_t) { not_built(); }
void cuda_order_after_copy(std::shared_ptr<void>& pending) { pending.reset(); }
void cuda_order_after_copy_noexcept(std::shared_ptr<void>& pending) noexcept { pending.reset(); }
void* cuda_stream() { not_built(); }
void cuda_graph_begin() { not_built(); }
bool cuda_graph_capturing() { return false; }
const void* cuda_graph_slot(CudaGraphSlot::Kind, uint64_t) { not_built(); }
void cuda_graph_set_step_guard(const float*) { not_built(); }
const float* cuda_graph_step_guard() { return nullptr; }
std::shared_ptr<CudaGraph> cuda_graph_end() { not_built(); }
void cuda_graph_abort() noexcept {}
void cuda_graph_launch(CudaGraph&, const std::vector<uint64_t>&) { not_built(); }
const std::vector<CudaGraphSlot>& cuda_graph_slots(const CudaGraph&) { not_built(); }
void cuda_set_math_mode(int) { not_built(); }
int cuda_math_mode() { return 0; }
std::string cuda_info_json() { return "{\"built\":false}"; }
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
Backend* cuda_backend_or_null() { return nullptr; }

namespace data {
void augment_batch_cuda(void*, DType, bool, const uint8_t*, const float*, int64_t, const am::AugConst&) {
  not_built();
}
}  // namespace data

}  // namespace vgg
