// Batch norm over C: our kernels (batchnorm.cu), float32 statistics for float32 and bfloat16 activations. A fused
// ReLU is composed here from relu_forward/relu_backward (one more pass; the CPU backend folds it into its loops).
// SyncBatchNorm (sync != null): the bn_sync_* kernels, with the float64 per-channel sums added across replicas by
// `sync` between them (queued in stream order); saved = {mean, invstd, total count (I64), marker}.
#include "backend.h"

namespace vgg::cuda {

Tensor CudaBackend::batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                      Tensor& running_var, bool training, double momentum, double eps, Saved* saved,
                                      bool relu, ReplicaSum* sync) {
  const char* op = "batchnorm_forward";
  check_cuda_tensor(x, "batchnorm_forward: x");
  check_float(x, "batchnorm_forward: x");
  VGG_CHECK(x.ndim() == 4 || x.ndim() == 2, "batchnorm_forward: x must be (N,C,H,W) or (N,C), got %s",
            shape_str(x.shape).c_str());
  check_nonzero_dims(x.shape, 1, "batchnorm_forward: x");
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  const bool cl = is_cl(x);
  check_param(gamma, C, "batchnorm_forward: gamma", true);
  check_param(beta, C, "batchnorm_forward: beta", true);
  check_param(running_mean, C, "batchnorm_forward: running_mean", !training);
  check_param(running_var, C, "batchnorm_forward: running_var", !training);
  Tensor y = cuda_empty(x.shape, x.dtype, x.layout);
  Tensor ss = cuda_empty({2 * C}, DType::F32);
  float* scale = ss.data<float>();
  float* shift = scale + C;
  const float* g = gamma.defined() ? gamma.data<float>() : nullptr;
  const float* b = beta.defined() ? beta.data<float>() : nullptr;
  VGG_CHECK(training || !sync, "%s: cross-replica statistics (sync) are for training mode only", op);
  if (training && sync) {
    Tensor mean = cuda_empty({C}, DType::F32), invstd = cuda_empty({C}, DType::F32);
    Tensor count = cuda_empty({1}, DType::I64);
    CudaScratch sums(sizeof(double) * size_t(C + 1)), sq(sizeof(double) * size_t(C));
    double* sp = static_cast<double*>(sums.p);
    double* qp = static_cast<double*>(sq.p);
    cuk::bn_sync_sum(sp, x.raw(), x.dtype, N, C, HW, cl);
    sync->sum(sp, C + 1, Device::CUDA);
    cuk::bn_sync_sq(qp, sp, x.raw(), x.dtype, N, C, HW, cl);
    sync->sum(qp, C, Device::CUDA);
    cuk::bn_sync_finish(mean.data<float>(), invstd.data<float>(), count.data<int64_t>(),
                        running_mean.defined() ? running_mean.data<float>() : nullptr,
                        running_var.defined() ? running_var.data<float>() : nullptr, sp, qp, C, float(momentum),
                        float(eps));
    cuk::bn_scale_shift(scale, shift, g, b, mean.data<float>(), invstd.data<float>(), nullptr, float(eps), C);
    if (saved) *saved = {mean, invstd, count, cuda_empty({1}, DType::U8)};
  } else if (training) {
    VGG_CHECK(N * HW > 1, "%s: training needs more than one value per channel, got input %s", op,
              shape_str(x.shape).c_str());
    Tensor mean = cuda_empty({C}, DType::F32), invstd = cuda_empty({C}, DType::F32);
    cuk::bn_stats(mean.data<float>(), invstd.data<float>(),
                  running_mean.defined() ? running_mean.data<float>() : nullptr,
                  running_var.defined() ? running_var.data<float>() : nullptr, x.raw(), x.dtype, N, C, HW, cl,
                  float(momentum), float(eps));
    cuk::bn_scale_shift(scale, shift, g, b, mean.data<float>(), invstd.data<float>(), nullptr, float(eps), C);
    if (saved) *saved = {mean, invstd};
  } else {
    cuk::bn_scale_shift(scale, shift, g, b, running_mean.data<float>(), nullptr, running_var.data<float>(),
                        float(eps), C);
    if (saved) {
      // Eval mode with a backward to come: {running mean, 1/sqrt(running var + eps), eval marker}.
      Tensor mean = cuda_empty({C}, DType::F32), invstd = cuda_empty({C}, DType::F32), tmp = cuda_empty({C}, DType::F32);
      copy_bytes(mean.raw(), Device::CUDA, running_mean.raw(), Device::CUDA, size_t(C) * 4);
      cuk::bn_scale_shift(invstd.data<float>(), tmp.data<float>(), nullptr, nullptr, running_mean.data<float>(),
                          nullptr, running_var.data<float>(), float(eps), C);
      *saved = {mean, invstd, cuda_empty({1}, DType::U8)};
    }
  }
  cuk::bn_apply(y.raw(), x.raw(), x.dtype, scale, shift, N, C, HW, cl);
  // The fused ReLU is composed here (one more pass); the CPU backend folds it into its loop.
  return relu ? relu_forward(y) : y;
}
Tensor CudaBackend::batchnorm_backward(const Tensor& dy_in, const Tensor& x, const Tensor& gamma, double eps, const Saved& saved,
                                       Tensor& dgamma, Tensor& dbeta, bool accumulate, const Tensor& relu_y,
                                       ReplicaSum* sync) {
  const char* op = "batchnorm_backward";
  check_cuda_tensor(x, "batchnorm_backward: x");
  check_float(x, "batchnorm_backward: x");
  VGG_CHECK(saved.size() >= 2 && saved.size() <= 4, "%s: saved state is not from a CUDA batchnorm_forward", op);
  VGG_CHECK(x.ndim() == 4 || x.ndim() == 2, "batchnorm_backward: x must be (N,C,H,W) or (N,C), got %s",
            shape_str(x.shape).c_str());
  check_nonzero_dims(x.shape, 1, "batchnorm_backward: x");
  const bool synced = saved.size() == 4;
  VGG_CHECK(synced == (sync != nullptr),
            synced ? "%s: the forward synchronised its statistics across replicas; backward needs the same process group"
                   : "%s: the forward used this replica's statistics only; backward cannot synchronise",
            op);
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  check_param(gamma, C, "batchnorm_backward: gamma", false);
  check_param(dgamma, C, "batchnorm_backward: dgamma", false);
  check_param(dbeta, C, "batchnorm_backward: dbeta", false);
  check_param(saved[0], C, "batchnorm_backward: saved mean", true);
  check_param(saved[1], C, "batchnorm_backward: saved invstd", true);
  check_cuda_tensor(dy_in, "batchnorm_backward: dy");
  Tensor dy = conform(dy_in, x.dtype, x.layout, "batchnorm_backward: dy");
  check_shape(dy, x.shape, "batchnorm_backward: dy");
  if (relu_y.defined()) dy = relu_backward(dy, relu_y);  // the fused ReLU's backward, composed
  Tensor dx = cuda_empty(x.shape, x.dtype, x.layout);
  if (synced) {
    check_cuda_tensor(saved[2], "batchnorm_backward: saved count");
    CudaScratch sums(sizeof(double) * size_t(2 * C));
    double* sp = static_cast<double*>(sums.p);
    cuk::bn_sync_backward_reduce(sp, dgamma.defined() ? dgamma.data<float>() : nullptr,
                                 dbeta.defined() ? dbeta.data<float>() : nullptr, dy.raw(), x.raw(), x.dtype,
                                 saved[0].data<float>(), saved[1].data<float>(), N, C, HW, is_cl(x), accumulate);
    sync->sum(sp, 2 * C, Device::CUDA);
    cuk::bn_sync_backward_dx(dx.raw(), dy.raw(), x.raw(), x.dtype, gamma.defined() ? gamma.data<float>() : nullptr,
                             saved[0].data<float>(), saved[1].data<float>(), sp, saved[2].data<int64_t>(), N, C, HW,
                             is_cl(x));
    return dx;
  }
  if (N == 0) {  // eval-mode forward of an empty batch (unsynced training refuses N*H*W <= 1): no kernel to run
    if (!accumulate) {
      if (dgamma.defined()) fill(dgamma, 0);
      if (dbeta.defined()) fill(dbeta, 0);
    }
    return dx;
  }
  Tensor sums = cuda_empty({2 * C}, DType::F32);
  cuk::bn_backward(dx.raw(), dgamma.defined() ? dgamma.data<float>() : nullptr,
                   dbeta.defined() ? dbeta.data<float>() : nullptr, dy.raw(), x.raw(), x.dtype,
                   gamma.defined() ? gamma.data<float>() : nullptr, saved[0].data<float>(), saved[1].data<float>(),
                   sums.data<float>(), N, C, HW, is_cl(x), accumulate, saved.size() == 2);
  return dx;
}

}  // namespace vgg::cuda
