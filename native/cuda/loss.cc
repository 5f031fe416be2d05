// Softmax cross-entropy with mean reduction: our kernel (loss.cu).
#include <vector>

#include "backend.h"

namespace vgg::cuda {

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss, Tensor& dlogits) {
  check_cuda_tensor(logits, "cross_entropy: logits");
  check_float(logits, "cross_entropy: logits");
  check_ndim(logits, 2, "cross_entropy: logits");
  check_cuda_tensor(labels, "cross_entropy: labels");
  check_dtype(labels, DType::I32, "cross_entropy: labels");
  check_shape(labels, {logits.dim(0)}, "cross_entropy: labels");
  check_cross_entropy_sizes(logits.shape);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  if (!cuda_graph_capturing()) {
    // Validate labels on the host (N ints). The kernel never reads past a row: an out-of-range label gives a NaN
    // loss, which is all a captured step (no host copies there) reports; the Trainer checks labels on the host.
    std::vector<int32_t> h(static_cast<size_t>(N));
    copy_bytes(h.data(), Device::CPU, labels.raw(), Device::CUDA, size_t(N) * 4);
    for (int64_t i = 0; i < N; ++i)
      VGG_CHECK_RANGE(h[i] >= 0 && h[i] < C, "cross_entropy: label at index %lld is %d, out of range [0, %lld)",
                (long long)i, h[i], (long long)C);
  }
  if (!loss.defined() || loss.device() != Device::CUDA || loss.dtype != DType::F32 || loss.numel() != 1)
    loss = cuda_empty({1}, DType::F32);
  if (!dlogits.defined() || dlogits.device() != Device::CUDA || dlogits.dtype != DType::F32 ||
      dlogits.shape != logits.shape)
    dlogits = cuda_empty(logits.shape, DType::F32);
  Tensor rows = cuda_empty({N}, DType::F32);
  cuk::cross_entropy(loss.data<float>(), dlogits.data<float>(), rows.data<float>(), logits.raw(), logits.dtype,
                     labels.data<int32_t>(), N, C);
}

}  // namespace vgg::cuda
