// Backend selection and the device-independent helpers of ops.h.
#include "ops.h"

#include "cuda/cuda_hooks.h"

namespace vgg {

int64_t conv_out_size(int64_t in, int64_t k, int stride, int pad, const char* op) {
  VGG_CHECK_RANGE(stride >= 1 && pad >= 0, "%s: stride must be >= 1 and padding >= 0 (got stride %d, padding %d)", op,
            stride, pad);
  int64_t out = (in + 2 * pad - k) / stride + 1;
  VGG_CHECK(in + 2 * pad >= k && out >= 1, "%s: input size %lld with padding %d is smaller than the window %lld", op,
            (long long)in, pad, (long long)k);
  return out;
}

void check_nonzero_dims(const Shape& s, int from, const char* what) {
  for (size_t i = size_t(from); i < s.size(); ++i)
    VGG_CHECK_RANGE(s[i] >= 1, "%s %s has a zero-size dimension %zu (%s)", what, shape_str(s).c_str(), i,
              from == 0 ? "every size must be >= 1" : "only the batch may be empty");
}

void check_cross_entropy_sizes(const Shape& logits) {
  VGG_CHECK_RANGE(logits.size() != 2 || logits[0] >= 1,
            "cross_entropy: empty batch (logits %s): the mean loss over no samples is undefined",
            shape_str(logits).c_str());
  check_nonzero_dims(logits, 1, "cross_entropy: logits");
}

void zero_grads_of_empty_batch(Backend& be, Tensor& dw, Tensor& db, bool accumulate) {
  if (accumulate) return;  // adding the gradient of no samples changes nothing
  be.fill(dw, 0);
  if (db.defined()) be.fill(db, 0);
}

Backend& backend(Device d) {
  if (d == Device::CPU) return cpu_backend();
  Backend* b = cuda_backend_or_null();
  VGG_CHECK(b != nullptr, "%s",
            cuda_built() ? "CUDA backend: no usable GPU found" : "CUDA backend not built: this addon is CPU-only");
  return *b;
}

Tensor to_device(const Tensor& x, Device to) {
  check_defined(x, "to_device");
  if (x.device() == to) return x;
  // nchw8c/nchw16c are the CPU backend's own layouts: other devices get the tensor as plain NCHW.
  if (layout_block(x.layout)) return to_device(cpu_backend().to_layout(x, Layout::Contiguous), to);
  Tensor y = Tensor::empty(x.shape, x.dtype, to, x.layout);
  copy_bytes(y.raw(), to, x.raw(), x.device(), x.nbytes());
  return y;
}

Tensor to_device_async(const Tensor& x, Device to) {
  check_defined(x, "to_device");
  if (x.device() == to || !(x.device() == Device::CPU && to == Device::CUDA)) return to_device(x, to);
  if (layout_block(x.layout)) return to_device_async(cpu_backend().to_layout(x, Layout::Contiguous), to);
  Tensor y = Tensor::empty(x.shape, x.dtype, to, x.layout);
  y.storage->pending = cuda_copy_to_device_async(y.raw(), x.raw(), x.nbytes());
  return y;
}

Tensor to_host_contiguous(const Tensor& x) {
  check_defined(x, "to_host");
  Tensor h = to_device(x, Device::CPU);
  if (h.layout != Layout::Contiguous) h = cpu_backend().to_layout(h, Layout::Contiguous);
  return h;
}

}  // namespace vgg
