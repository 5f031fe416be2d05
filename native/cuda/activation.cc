// ReLU and dropout: our kernels (activation.cu). Dropout reads its offset from a graph slot while captured.
#include "backend.h"

namespace vgg::cuda {

Tensor CudaBackend::relu_forward(const Tensor& x) {
  check_cuda_tensor(x, "relu_forward: x");
  check_float(x, "relu_forward: x");
  Tensor y = cuda_empty(x.shape, x.dtype, x.layout);
  cuk::relu_forward(y.raw(), x.raw(), x.dtype, x.numel());
  return y;
}
Tensor CudaBackend::relu_backward(const Tensor& dy_in, const Tensor& y) {
  check_cuda_tensor(y, "relu_backward: y");
  check_float(y, "relu_backward: y");
  check_cuda_tensor(dy_in, "relu_backward: dy");
  Tensor dy = conform(dy_in, y.dtype, y.layout, "relu_backward: dy");
  check_shape(dy, y.shape, "relu_backward: dy");
  Tensor dx = cuda_empty(y.shape, y.dtype, y.layout);
  cuk::relu_backward(dx.raw(), dy.raw(), y.raw(), y.dtype, y.numel());
  return dx;
}

Tensor CudaBackend::dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, Saved* saved) {
  check_cuda_tensor(x, "dropout_forward: x");
  check_float(x, "dropout_forward: x");
  VGG_CHECK_RANGE(p >= 0 && p <= 1, "dropout_forward: p = %g is not in [0, 1]", p);
  const bool cl = is_cl(x);
  const int64_t n = x.numel();
  const int64_t N = cl ? x.dim(0) : 1, C = cl ? x.dim(1) : 1, HW = cl ? x.dim(2) * x.dim(3) : n;
  Tensor y = cuda_empty(x.shape, x.dtype, x.layout);
  Tensor mask = cuda_empty(x.shape, DType::U8, x.layout);
  const uint64_t* slot = cuda_graph_capturing() ? static_cast<const uint64_t*>(cuda_graph_slot(
                                                      CudaGraphSlot::kDropoutOffset, offset))
                                                : nullptr;
  cuk::dropout_forward(y.raw(), mask.data<uint8_t>(), x.raw(), x.dtype, N, C, HW, cl, float(p), seed, offset, slot);
  if (saved) *saved = {mask};
  return y;
}
Tensor CudaBackend::dropout_backward(const Tensor& dy_in, double p, const Saved& saved) {
  VGG_CHECK(saved.size() == 1 && saved[0].defined() && saved[0].dtype == DType::U8,
            "dropout_backward: saved state is not from the CUDA dropout_forward");
  const Tensor& mask = saved[0];
  check_cuda_tensor(dy_in, "dropout_backward: dy");
  check_float(dy_in, "dropout_backward: dy");
  Tensor dy = conform(dy_in, dy_in.dtype, mask.layout, "dropout_backward: dy");
  check_shape(dy, mask.shape, "dropout_backward: dy");
  Tensor dx = cuda_empty(dy.shape, dy.dtype, dy.layout);
  const float scale = p < 1 ? 1.f / (1.f - float(p)) : 0.f;
  cuk::dropout_backward(dx.raw(), dy.raw(), mask.data<uint8_t>(), dy.dtype, dy.numel(), scale);
  return dx;
}

}  // namespace vgg::cuda
