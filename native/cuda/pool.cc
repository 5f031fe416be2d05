// Max pooling (first max on ties, PyTorch's rule) and adaptive average pooling: our kernels (pool.cu).
#include "backend.h"

namespace vgg::cuda {

Tensor CudaBackend::maxpool2d_forward(const Tensor& x, const Pool2dParams& p, Saved* saved) {
  const char* op = "maxpool2d_forward";
  check_cuda_tensor(x, "maxpool2d_forward: x");
  check_float(x, "maxpool2d_forward: x");
  check_ndim(x, 4, "maxpool2d_forward: x");
  VGG_CHECK(p.kernel >= 1 && p.kernel <= 16 && p.stride >= 1 && p.pad >= 0 && 2 * p.pad <= p.kernel,
            "%s: unsupported kernel %d, stride %d, pad %d", op, p.kernel, p.stride, p.pad);
  check_nonzero_dims(x.shape, 1, "maxpool2d_forward: x");
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t P = conv_out_size(H, p.kernel, p.stride, p.pad, op), Q = conv_out_size(W, p.kernel, p.stride, p.pad, op);
  Tensor y = cuda_empty({N, C, P, Q}, x.dtype, x.layout);
  Tensor idx = cuda_empty({N, C, P, Q}, DType::U8, x.layout);
  cuk::maxpool_forward(y.raw(), idx.data<uint8_t>(), x.raw(), x.dtype, N, C, H, W, P, Q, p.kernel, p.stride, p.pad,
                       is_cl(x));
  if (saved) *saved = {idx};
  return y;
}
Tensor CudaBackend::maxpool2d_backward(const Tensor& dy_in, const Tensor& x, const Tensor& y, const Pool2dParams& p,
                                       const Saved& saved) {
  const char* op = "maxpool2d_backward";
  check_cuda_tensor(x, "maxpool2d_backward: x");
  check_ndim(x, 4, "maxpool2d_backward: x");
  VGG_CHECK(saved.size() == 1 && saved[0].defined() && saved[0].dtype == DType::U8,
            "%s: saved state is not from the CUDA maxpool2d_forward", op);
  const Tensor& idx = saved[0];
  VGG_CHECK(idx.layout == x.layout, "%s: x layout changed since forward", op);
  check_nonzero_dims(x.shape, 1, "maxpool2d_backward: x");
  VGG_CHECK(p.kernel >= 1 && p.kernel <= 16 && p.stride >= 1 && p.pad >= 0 && 2 * p.pad <= p.kernel,
            "%s: unsupported kernel %d, stride %d, pad %d", op, p.kernel, p.stride, p.pad);
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t P = conv_out_size(H, p.kernel, p.stride, p.pad, op), Q = conv_out_size(W, p.kernel, p.stride, p.pad, op);
  // The kernel writes dx where idx points: idx must be the forward's of an input of x's shape.
  check_shape(idx, {N, C, P, Q}, "maxpool2d_backward: saved indices");
  check_cuda_tensor(idx, "maxpool2d_backward: saved indices");
  check_cuda_tensor(dy_in, "maxpool2d_backward: dy");
  Tensor dy = conform(dy_in, x.dtype, x.layout, "maxpool2d_backward: dy");
  check_shape(dy, idx.shape, "maxpool2d_backward: dy");
  Tensor dx = cuda_empty(x.shape, x.dtype, x.layout);
  cuk::maxpool_backward(dx.raw(), dy.raw(), idx.data<uint8_t>(), x.dtype, N, C, H, W, P, Q, p.kernel, p.stride,
                        p.pad, is_cl(x));
  return dx;
}

Tensor CudaBackend::adaptive_avgpool2d_forward(const Tensor& x, int oh, int ow) {
  check_cuda_tensor(x, "adaptive_avgpool2d_forward: x");
  check_float(x, "adaptive_avgpool2d_forward: x");
  check_ndim(x, 4, "adaptive_avgpool2d_forward: x");
  VGG_CHECK(oh >= 1 && ow >= 1, "adaptive_avgpool2d_forward: output size %dx%d", oh, ow);
  check_nonzero_dims(x.shape, 1, "adaptive_avgpool2d_forward: x");
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = cuda_empty({N, C, oh, ow}, x.dtype, Layout::Contiguous);
  cuk::adaptive_avgpool_forward(y.raw(), x.raw(), x.dtype, N, C, H, W, oh, ow, is_cl(x));
  return y;
}
Tensor CudaBackend::adaptive_avgpool2d_backward(const Tensor& dy_in, const Shape& x_shape, Layout x_layout) {
  check_cuda_tensor(dy_in, "adaptive_avgpool2d_backward: dy");
  check_float(dy_in, "adaptive_avgpool2d_backward: dy");
  check_ndim(dy_in, 4, "adaptive_avgpool2d_backward: dy");
  VGG_CHECK(x_shape.size() == 4 && x_shape[0] == dy_in.dim(0) && x_shape[1] == dy_in.dim(1),
            "adaptive_avgpool2d_backward: x shape %s does not match dy %s", shape_str(x_shape).c_str(),
            shape_str(dy_in.shape).c_str());
  check_nonzero_dims(x_shape, 1, "adaptive_avgpool2d_backward: x shape");
  check_nonzero_dims(dy_in.shape, 1, "adaptive_avgpool2d_backward: dy");
  VGG_CHECK(!layout_block(x_layout), "adaptive_avgpool2d_backward: %s is the CPU backend's own layout", layout_name(x_layout));
  Tensor dy = conform(dy_in, dy_in.dtype, Layout::Contiguous, "adaptive_avgpool2d_backward: dy");
  Tensor dx = cuda_empty(x_shape, dy.dtype, x_layout);
  cuk::adaptive_avgpool_backward(dx.raw(), dy.raw(), dy.dtype, x_shape[0], x_shape[1], x_shape[2], x_shape[3],
                                 int(dy.dim(2)), int(dy.dim(3)), is_cl(dx));
  return dx;
}

}  // namespace vgg::cuda
