// The CPU backend: ops.h on oneDNN 2.6 (convolutions, matmuls, pooling) and plain C++/OpenMP (batch norm, adaptive
// pooling, elementwise ops, loss, SGD). Each op family's methods are defined in the file of that name (conv.cc,
// linear.cc, pool.cc, batchnorm.cc, activation.cc, loss.cc, sgd.cc, tensor_ops.cc), as in native/cuda/.
#pragma once
#include "common.h"

namespace vgg::cpu {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu (oneDNN)"; }
  Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                        bool relu) override;
  Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                              const Conv2dParams& p) override;
  void conv2d_backward_weights(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db,
                               bool accumulate) override;
  Tensor relu_forward(const Tensor& x) override;
  Tensor relu_backward(const Tensor& dy, const Tensor& y) override;
  Tensor maxpool2d_forward(const Tensor& x, const Pool2dParams& p, Saved* saved) override;
  Tensor maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, const Pool2dParams& p,
                            const Saved& saved) override;
  Tensor adaptive_avgpool2d_forward(const Tensor& x, int oh, int ow) override;
  Tensor adaptive_avgpool2d_backward(const Tensor& dy, const Shape& x_shape, Layout x_layout) override;
  Tensor batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                           Tensor& running_var, bool training, double momentum, double eps, Saved* saved,
                           bool relu, ReplicaSum* sync) override;
  Tensor batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps, const Saved& saved,
                            Tensor& dgamma, Tensor& dbeta, bool accumulate, const Tensor& relu_y,
                            ReplicaSum* sync) override;
  Tensor linear_weights(const Tensor& w, DType activation) override;
  Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, bool w_prepared) override;
  Tensor linear_backward_data(const Tensor& dy, const Tensor& w, bool w_prepared) override;
  void linear_backward_weights(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor& db, bool accumulate) override;
  Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, Saved* saved) override;
  Tensor dropout_backward(const Tensor& dy, double p, const Saved& saved) override;
  void cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss, Tensor& dlogits) override;
  void sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, std::vector<Tensor>& bufs,
                const SgdParams& p, bool first, const std::vector<PooledGrad>& pooled) override;
  void fill(Tensor& t, double value) override;
  void add_(Tensor& dst, const Tensor& src, double alpha) override;
  Tensor cast(const Tensor& x, DType dtype) override;
  Tensor to_layout(const Tensor& x, Layout layout) override;
  void fill_random(Tensor& t, RandomKind kind, double a, double b, uint64_t seed) override;
  void synchronize() override;
};

}  // namespace vgg::cpu
