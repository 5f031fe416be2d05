// fill, add_, cast, to_layout (our kernels in tensor_ops.cu) and the seeded random fill of initialisation.
#include "backend.h"

namespace vgg::cuda {

void CudaBackend::fill(Tensor& t, double value) {
  check_cuda_tensor(t, "fill: tensor");
  cuk::fill(t.raw(), t.dtype, t.numel(), value);
}
void CudaBackend::add_(Tensor& dst, const Tensor& src_in, double alpha) {
  check_cuda_tensor(dst, "add_: dst");
  check_float(dst, "add_: dst");
  check_cuda_tensor(src_in, "add_: src");
  check_float(src_in, "add_: src");
  check_shape(src_in, dst.shape, "add_: src");
  Tensor src = conform(src_in, src_in.dtype, dst.layout, "add_: src");
  cuk::add_(dst.raw(), dst.dtype, src.raw(), src.dtype, dst.numel(), alpha);
}
Tensor CudaBackend::cast(const Tensor& x, DType dtype) {
  check_cuda_tensor(x, "cast: x");
  if (x.dtype == dtype) return x;
  VGG_CHECK(is_float(dtype), "cast: to %s is not supported on CUDA", dtype_name(dtype));
  Tensor y = cuda_empty(x.shape, dtype, x.layout);
  cuk::cast(y.raw(), dtype, x.raw(), x.dtype, x.numel());
  return y;
}
Tensor CudaBackend::to_layout(const Tensor& x, Layout layout) {
  check_cuda_tensor(x, "to_layout: x");
  if (x.layout == layout) return x;
  if (x.ndim() != 4) {  // layouts only differ for 4-D tensors
    Tensor y = x;
    y.layout = Layout::Contiguous;
    return y;
  }
  check_float(x, "to_layout: x");
  Tensor y = cuda_empty(x.shape, x.dtype, layout);
  cuk::transpose(y.raw(), x.dtype, x.raw(), x.dtype, x.dim(0), x.dim(1), x.dim(2) * x.dim(3),
                 layout == Layout::ChannelsLast, false);
  return y;
}

// On the host through the CPU backend, then copied: bit-equal to a CPU model's initialisation.
void CudaBackend::fill_random(Tensor& t, RandomKind kind, double a, double b, uint64_t seed) {
  check_cuda_tensor(t, "fill_random: tensor");
  check_dtype(t, DType::F32, "fill_random: tensor");
  Tensor h = Tensor::empty(t.shape, DType::F32, Device::CPU);
  cpu_backend().fill_random(h, kind, a, b, seed);
  if (t.layout != Layout::Contiguous) h = cpu_backend().to_layout(h, t.layout);
  copy_bytes(t.raw(), Device::CUDA, h.raw(), Device::CPU, t.nbytes());
}

}  // namespace vgg::cuda
