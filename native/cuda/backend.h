// The CUDA backend: ops.h on cuDNN (convolutions), cuBLAS (linear) and our own kernels (kernels.h) for the rest.
// Each op family's methods are defined in the file of that name (conv.cc, linear.cc, pool.cc, batchnorm.cc,
// activation.cc, loss.cc, sgd.cc, tensor_ops.cc), as in native/cpu/; the kernels beside them in the .cu of the same
// stem. All work is queued on one compute stream (cuda_stream()), so ops, copies and the caching allocator are
// ordered without events; the one exception, non-blocking host->device copies on their own stream, is ordered with
// it by events in memory.cc. Every cuDNN/cuBLAS/CUDA status is checked and becomes a vgg::Error naming the op.
//
// CUDA graphs (graph.cc): while the step is captured, nothing here may synchronise or search (algorithms are found
// by the eager warm-up steps, and an op that would search says so), dropout offsets and the learning rate are read
// from per-replay slots, and the SGD step skips its update when the captured loss is not finite.
//
// Precision: activations are float32 or bfloat16 (an op computes in its input's dtype); weights are float32 and
// are cast (and for channels-last, transposed to KRSC) into a temporary inside the op; accumulation is float32;
// parameter gradients are float32. cuda_math_mode() decides whether float32 convs/GEMMs may use TF32.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "common.h"
#include "conv_plan.h"
#include "kernels.h"

namespace vgg::cuda {

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  const char* name() const override { return "cuda"; }

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

  // Graph capture (graph_memory.h): the conv workspace joins the capture's pool at the start (sgd_step adopts the
  // table it reads); at the end that SGD table (data the graph reads) becomes the graph's, and the workspace stays
  // shared scratch.
  void on_capture_begin();
  void on_capture_end() noexcept;

 private:
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  static constexpr size_t kCublasWorkspace = size_t(32) << 20;  // what cuBLAS asks for on Hopper
  void* cublas_ws_ = nullptr;
  void* ws_ = nullptr;  // the convolutions' workspace, grown to the largest an algorithm asked for
  size_t ws_size_ = 0;
  std::map<std::string, std::unique_ptr<ConvPlan>> plans_;
  // The SGD launch tables, one per parameter table (its bytes as the key): each uploaded at its first eager step, so
  // two models trained in turn (or a reference beside a captured runner) neither re-upload nor break a capture.
  // The one a capture reads becomes the graph's at its end; the least recently used go beyond kMaxSgdPlans.
  struct SgdEntry {
    cuk::SgdPlan plan;
    uint64_t used = 0;
  };
  static constexpr size_t kMaxSgdPlans = 8;
  std::map<std::string, SgdEntry> sgd_plans_;
  uint64_t sgd_clock_ = 0;
  std::string sgd_captured_;  // the key of the table the running capture reads, or empty

  // A gradient as the tensor it belongs to is stored: same dtype and layout (conv.cc uses it too).
  Tensor conform(const Tensor& t, DType dt, Layout layout, const char* what);
  void* workspace(size_t n, const char* op);
  // conv.cc
  ConvPlan& get_plan(const char* op, const Shape& xs, const Shape& ws, const Conv2dParams& p, DType dt, bool cl);
  Tensor weight_for(const Tensor& w, DType dt, bool cl, const char* op);
  // linear.cc: C(m,n) = op(A) op(B) + beta C in cuBLAS's column-major terms.
  void gemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
            const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, Tensor& C, int64_t ldc, float beta);
};

}  // namespace vgg::cuda
