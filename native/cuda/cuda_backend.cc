// The CUDA backend: ops.h on cuDNN (convolutions), cuBLAS (linear) and our own kernels (kernels.h) for the rest.
// All work is queued on one compute stream (cuda_stream()), so ops, copies and the caching allocator are ordered
// without events; the one exception, non-blocking host->device copies on their own stream, is ordered with it by
// events in memory.cc. Every cuDNN/cuBLAS/CUDA status is checked and becomes a vgg::Error naming the op.
//
// CUDA graphs (graph.cc): while the step is captured, nothing here may synchronise or search (algorithms are found
// by the eager warm-up steps, and an op that would search says so), dropout offsets and the learning rate are read
// from per-replay slots, and the SGD step skips its update when the captured loss is not finite.
//
// Precision: activations are float32 or bfloat16 (an op computes in its input's dtype); weights are float32 and
// are cast (and for channels-last, transposed to KRSC) into a temporary inside the op; accumulation is float32;
// parameter gradients are float32. cuda_math_mode() decides whether float32 convs/GEMMs may use TF32.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../ops.h"
#include "cuda_hooks.h"
#include "cuda_info.h"
#include "graph_memory.h"
#include "kernels.h"

namespace vgg {
namespace {

// ---------------------------------------------------------------- status checks
void check_cuda(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) throw Error(strprintf("%s: %s failed: %s", op, what, cudaGetErrorString(e)));
}
void check_cudnn(cudnnStatus_t s, const char* op, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw Error(strprintf("%s: %s failed: %s", op, what, cudnnGetErrorString(s)));
}
const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}
void check_cublas(cublasStatus_t s, const char* op, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(strprintf("%s: %s failed: %s (%d)", op, what, cublas_status_name(s), int(s)));
}
#define CUDNN_OK(op, call) check_cudnn((call), op, #call)
#define CUBLAS_OK(op, call) check_cublas((call), op, #call)
#define CUDA_OK(op, call) check_cuda((call), op, #call)

// ---------------------------------------------------------------- small helpers
bool is_cl(const Tensor& t) { return t.layout == Layout::ChannelsLast && t.ndim() == 4; }
bool is_float(DType d) { return d == DType::F32 || d == DType::BF16; }
int to_int(int64_t v, const char* op, const char* what) {
  VGG_CHECK(v >= 0 && v <= 2147483647LL, "%s: %s = %lld does not fit the CUDA libraries' int", op, what,
            (long long)v);
  return int(v);
}
Tensor cuda_empty(const Shape& s, DType dt, Layout l = Layout::Contiguous) {
  return Tensor::empty(s, dt, Device::CUDA, l);
}
void check_cuda_tensor(const Tensor& t, const char* what) {
  check_defined(t, what);
  check_device(t, Device::CUDA, what);
}
void check_float(const Tensor& t, const char* what) {
  VGG_CHECK(is_float(t.dtype), "%s: expected float32 or bfloat16, got %s", what, dtype_name(t.dtype));
}
cudnnDataType_t cudnn_dtype(DType d) { return d == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }
cudaDataType_t blas_dtype(DType d) { return d == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// ---------------------------------------------------------------- cuDNN descriptor owners
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { CUDNN_OK("cudnn", cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { if (d) cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { CUDNN_OK("cudnn", cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { if (d) cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { CUDNN_OK("cudnn", cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { if (d) cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};
struct ActDesc {
  cudnnActivationDescriptor_t d = nullptr;
  ActDesc() { CUDNN_OK("cudnn", cudnnCreateActivationDescriptor(&d)); }
  ~ActDesc() { if (d) cudnnDestroyActivationDescriptor(d); }
  ActDesc(const ActDesc&) = delete;
  ActDesc& operator=(const ActDesc&) = delete;
};

// One convolution shape (with dtype, layout and math mode): descriptors and the algorithms found for it.
struct ConvPlan {
  TensorDesc x, y, bias;
  FilterDesc w;
  ConvDesc conv;
  ActDesc relu;
  bool fwd_found = false, bwd_data_found = false, bwd_filter_found = false;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  cudnnMathType_t fwd_math{}, bwd_data_math{}, bwd_filter_math{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  bool fused_ok = true;  // cleared when cudnnConvolutionBiasActivationForward says NOT_SUPPORTED
};

// Memory for an algorithm search, straight from cudaMalloc (not kept by the cache): as large as fits, up to 1 GiB.
struct SearchWorkspace {
  void* p = nullptr;
  size_t n = 0;
  SearchWorkspace() {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      cudaGetLastError();
      free_b = 0;
    }
    size_t want = free_b / 2;
    if (want > (size_t(1) << 30)) want = size_t(1) << 30;
    for (; want >= (size_t(1) << 20); want /= 2) {
      if (cudaMalloc(&p, want) == cudaSuccess) {
        n = want;
        return;
      }
      cudaGetLastError();
      p = nullptr;
    }
  }
  ~SearchWorkspace() {
    if (p) cudaFree(p);
  }
};

cudnnMathType_t requested_math(DType dt) {
  if (dt == DType::BF16) return CUDNN_TENSOR_OP_MATH;
  return cuda_math_mode() == 0 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

std::string algo_failures(const char* what, const int* status, int n) {
  std::string s = strprintf("no %s algorithm succeeded", what);
  for (int i = 0; i < n; ++i) s += strprintf("%s%s", i ? ", " : " (", cudnnGetErrorString(cudnnStatus_t(status[i])));
  if (n) s += ")";
  return s;
}

// ================================================================ the backend
class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    CUDA_OK("cuda backend", cudaSetDevice(0));
    CUDNN_OK("cuda backend", cudnnCreate(&cudnn_));
    CUBLAS_OK("cuda backend", cublasCreate(&cublas_));
    CUBLAS_OK("cuda backend", cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
    const cudaStream_t st = static_cast<cudaStream_t>(cuda_stream());
    CUDNN_OK("cuda backend", cudnnSetStream(cudnn_, st));
    CUBLAS_OK("cuda backend", cublasSetStream(cublas_, st));  // (resets the workspace: set it after)
    // A workspace of our own, kept for the life of the process: cuBLAS then never allocates, which a graph
    // capture could not take.
    cublas_ws_ = cuda_alloc(kCublasWorkspace);
    CUBLAS_OK("cuda backend", cublasSetWorkspace(cublas_, cublas_ws_, kCublasWorkspace));
  }
  ~CudaBackend() override {
    // The process is exiting or the addon unloading: release quietly, never throw.
    if (ws_) cuda_free(ws_, ws_size_);
    if (cublas_ws_) cuda_free(cublas_ws_, kCublasWorkspace);
    if (sgd_plan_.table) cuda_free(sgd_plan_.table, sgd_plan_.bytes);
    plans_.clear();
    if (cublas_) cublasDestroy(cublas_);
    if (cudnn_) cudnnDestroy(cudnn_);
  }
  const char* name() const override { return "cuda"; }

  // The long-lived buffers join the capture's pool (graph_memory.h).
  void on_capture_begin() {
    if (ws_) cuda_pool_adopt(ws_);
    if (sgd_plan_.table) cuda_pool_adopt(sgd_plan_.table);
  }
  // The workspace is scratch (eager ops and replays take turns on one stream); the SGD table is data the graph reads.
  void on_capture_end() noexcept {
    if (sgd_plan_.table) cuda_free(sgd_plan_.table, sgd_plan_.bytes);  // into the graph's pool
    sgd_plan_ = cuk::SgdPlan{};
    sgd_last_.clear();
  }

  // ---------------------------------------------------------------- conv2d
  Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                        bool relu) override {
    const char* op = "conv2d_forward";
    check_conv_args(op, x, w, b);
    const DType dt = x.dtype;
    const bool cl = is_cl(x);
    const int64_t N = x.dim(0), H = x.dim(2), W = x.dim(3), K = w.dim(0), R = w.dim(2), S = w.dim(3);
    const int64_t P = conv_out_size(H, R, p.stride_h, p.pad_h, op), Q = conv_out_size(W, S, p.stride_w, p.pad_w, op);
    ConvPlan& plan = get_plan(op, x.shape, w.shape, p, dt, cl);
    Tensor wk = weight_for(w, dt, cl, op);
    Tensor y = cuda_empty({N, K, P, Q}, dt, x.layout);
    if (!plan.fwd_found) find_fwd(plan, x, wk, y, op);
    void* ws = workspace(plan.fwd_ws, op);
    const float one = 1.f, zero = 0.f;
    if (relu && b.defined() && dt == DType::F32 && plan.fused_ok) {
      CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.fwd_math));
      cudnnStatus_t s = cudnnConvolutionBiasActivationForward(
          cudnn_, &one, plan.x.d, x.raw(), plan.w.d, wk.raw(), plan.conv.d, plan.fwd_algo, ws, plan.fwd_ws, &zero,
          plan.y.d, y.raw(), plan.bias.d, b.raw(), plan.relu.d, plan.y.d, y.raw());
      if (s == CUDNN_STATUS_SUCCESS) return y;
      if (s != CUDNN_STATUS_NOT_SUPPORTED && s != CUDNN_STATUS_BAD_PARAM)
        check_cudnn(s, op, "cudnnConvolutionBiasActivationForward");
      plan.fused_ok = false;  // this shape runs unfused from now on
    }
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.fwd_math));
    CUDNN_OK(op, cudnnConvolutionForward(cudnn_, &one, plan.x.d, x.raw(), plan.w.d, wk.raw(), plan.conv.d,
                                         plan.fwd_algo, ws, plan.fwd_ws, &zero, plan.y.d, y.raw()));
    cuk::bias_act(y.raw(), dt, b.defined() ? b.data<float>() : nullptr, N, K, P * Q, cl, relu);
    return y;
  }

  Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                              const Conv2dParams& p) override {
    const char* op = "conv2d_backward_data";
    check_cuda_tensor(dy, "conv2d_backward_data: dy");
    check_float(dy, "conv2d_backward_data: dy");
    check_ndim(dy, 4, "conv2d_backward_data: dy");
    check_weight(op, w);
    VGG_CHECK(x_shape.size() == 4 && x_shape[1] == w.dim(1), "%s: x shape %s does not match weight %s", op,
              shape_str(x_shape).c_str(), shape_str(w.shape).c_str());
    const int64_t P = conv_out_size(x_shape[2], w.dim(2), p.stride_h, p.pad_h, op);
    const int64_t Q = conv_out_size(x_shape[3], w.dim(3), p.stride_w, p.pad_w, op);
    check_shape(dy, {x_shape[0], w.dim(0), P, Q}, "conv2d_backward_data: dy");
    const DType dt = dy.dtype;
    const bool cl = is_cl(dy);
    ConvPlan& plan = get_plan(op, x_shape, w.shape, p, dt, cl);
    Tensor wk = weight_for(w, dt, cl, op);
    Tensor dx = cuda_empty(x_shape, dt, dy.layout);
    if (!plan.bwd_data_found) find_bwd_data(plan, wk, dy, dx, op);
    void* ws = workspace(plan.bwd_data_ws, op);
    const float one = 1.f, zero = 0.f;
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.bwd_data_math));
    CUDNN_OK(op, cudnnConvolutionBackwardData(cudnn_, &one, plan.w.d, wk.raw(), plan.y.d, dy.raw(), plan.conv.d,
                                              plan.bwd_data_algo, ws, plan.bwd_data_ws, &zero, plan.x.d, dx.raw()));
    return dx;
  }

  void conv2d_backward_weights(const Tensor& x, const Tensor& dy_in, const Conv2dParams& p, Tensor& dw, Tensor& db,
                               bool accumulate) override {
    const char* op = "conv2d_backward_weights";
    check_cuda_tensor(x, "conv2d_backward_weights: x");
    check_float(x, "conv2d_backward_weights: x");
    check_ndim(x, 4, "conv2d_backward_weights: x");
    check_weight(op, dw);
    VGG_CHECK(x.dim(1) == dw.dim(1), "%s: x has %lld channels, dw expects %lld", op, (long long)x.dim(1),
              (long long)dw.dim(1));
    const DType dt = x.dtype;
    const bool cl = is_cl(x);
    check_cuda_tensor(dy_in, "conv2d_backward_weights: dy");
    Tensor dy = conform(dy_in, dt, x.layout, "conv2d_backward_weights: dy");
    const int64_t N = x.dim(0), K = dw.dim(0), C = dw.dim(1), R = dw.dim(2), S = dw.dim(3);
    const int64_t P = conv_out_size(x.dim(2), R, p.stride_h, p.pad_h, op);
    const int64_t Q = conv_out_size(x.dim(3), S, p.stride_w, p.pad_w, op);
    check_shape(dy, {N, K, P, Q}, "conv2d_backward_weights: dy");
    if (db.defined()) {
      check_cuda_tensor(db, "conv2d_backward_weights: db");
      check_dtype(db, DType::F32, "conv2d_backward_weights: db");
      check_shape(db, {K}, "conv2d_backward_weights: db");
    }
    ConvPlan& plan = get_plan(op, x.shape, dw.shape, p, dt, cl);
    const bool direct = dt == DType::F32 && !cl;  // cuDNN writes (and accumulates into) dw itself
    Tensor tmp = direct ? Tensor() : cuda_empty(dw.shape, dt, cl ? Layout::ChannelsLast : Layout::Contiguous);
    if (!plan.bwd_filter_found) {
      // The search writes its output: never into dw, which may hold gradients to accumulate onto.
      Tensor scratch = direct ? cuda_empty(dw.shape, dt) : tmp;
      find_bwd_filter(plan, x, dy, scratch, op);
    }
    void* ws = workspace(plan.bwd_filter_ws, op);
    const float one = 1.f, zero = 0.f, beta = (direct && accumulate) ? 1.f : 0.f;
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.bwd_filter_math));
    CUDNN_OK(op, cudnnConvolutionBackwardFilter(cudnn_, &one, plan.x.d, x.raw(), plan.y.d, dy.raw(), plan.conv.d,
                                                plan.bwd_filter_algo, ws, plan.bwd_filter_ws, direct ? &beta : &zero,
                                                plan.w.d, direct ? dw.raw() : tmp.raw()));
    if (!direct) {
      if (cl)
        cuk::transpose(dw.raw(), DType::F32, tmp.raw(), dt, K, C, R * S, /*to_cl=*/false, accumulate);
      else
        cuk::accumulate_f32(dw.data<float>(), tmp.raw(), dt, dw.numel(), accumulate);
    }
    if (db.defined()) cuk::bias_grad(db.data<float>(), dy.raw(), dt, N, K, P * Q, cl, accumulate);
  }

  // ---------------------------------------------------------------- relu
  Tensor relu_forward(const Tensor& x) override {
    check_cuda_tensor(x, "relu_forward: x");
    check_float(x, "relu_forward: x");
    Tensor y = cuda_empty(x.shape, x.dtype, x.layout);
    cuk::relu_forward(y.raw(), x.raw(), x.dtype, x.numel());
    return y;
  }
  Tensor relu_backward(const Tensor& dy_in, const Tensor& y) override {
    check_cuda_tensor(y, "relu_backward: y");
    check_float(y, "relu_backward: y");
    check_cuda_tensor(dy_in, "relu_backward: dy");
    Tensor dy = conform(dy_in, y.dtype, y.layout, "relu_backward: dy");
    check_shape(dy, y.shape, "relu_backward: dy");
    Tensor dx = cuda_empty(y.shape, y.dtype, y.layout);
    cuk::relu_backward(dx.raw(), dy.raw(), y.raw(), y.dtype, y.numel());
    return dx;
  }

  // ---------------------------------------------------------------- max pool
  Tensor maxpool2d_forward(const Tensor& x, const Pool2dParams& p, Saved* saved) override {
    const char* op = "maxpool2d_forward";
    check_cuda_tensor(x, "maxpool2d_forward: x");
    check_float(x, "maxpool2d_forward: x");
    check_ndim(x, 4, "maxpool2d_forward: x");
    VGG_CHECK(p.kernel >= 1 && p.kernel <= 16 && p.stride >= 1 && p.pad >= 0 && 2 * p.pad <= p.kernel,
              "%s: unsupported kernel %d, stride %d, pad %d", op, p.kernel, p.stride, p.pad);
    const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    const int64_t P = conv_out_size(H, p.kernel, p.stride, p.pad, op), Q = conv_out_size(W, p.kernel, p.stride, p.pad, op);
    Tensor y = cuda_empty({N, C, P, Q}, x.dtype, x.layout);
    Tensor idx = cuda_empty({N, C, P, Q}, DType::U8, x.layout);
    cuk::maxpool_forward(y.raw(), idx.data<uint8_t>(), x.raw(), x.dtype, N, C, H, W, P, Q, p.kernel, p.stride, p.pad,
                         is_cl(x));
    if (saved) *saved = {idx};
    return y;
  }
  Tensor maxpool2d_backward(const Tensor& dy_in, const Tensor& x, const Tensor& y, const Pool2dParams& p,
                            const Saved& saved) override {
    const char* op = "maxpool2d_backward";
    check_cuda_tensor(x, "maxpool2d_backward: x");
    check_ndim(x, 4, "maxpool2d_backward: x");
    VGG_CHECK(saved.size() == 1 && saved[0].defined() && saved[0].dtype == DType::U8,
              "%s: saved state is not from the CUDA maxpool2d_forward", op);
    const Tensor& idx = saved[0];
    VGG_CHECK(idx.layout == x.layout, "%s: x layout changed since forward", op);
    check_cuda_tensor(dy_in, "maxpool2d_backward: dy");
    Tensor dy = conform(dy_in, x.dtype, x.layout, "maxpool2d_backward: dy");
    check_shape(dy, idx.shape, "maxpool2d_backward: dy");
    const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), P = dy.dim(2), Q = dy.dim(3);
    Tensor dx = cuda_empty(x.shape, x.dtype, x.layout);
    cuk::maxpool_backward(dx.raw(), dy.raw(), idx.data<uint8_t>(), x.dtype, N, C, H, W, P, Q, p.kernel, p.stride,
                          p.pad, is_cl(x));
    return dx;
  }

  // ---------------------------------------------------------------- adaptive average pool
  Tensor adaptive_avgpool2d_forward(const Tensor& x, int oh, int ow) override {
    check_cuda_tensor(x, "adaptive_avgpool2d_forward: x");
    check_float(x, "adaptive_avgpool2d_forward: x");
    check_ndim(x, 4, "adaptive_avgpool2d_forward: x");
    VGG_CHECK(oh >= 1 && ow >= 1, "adaptive_avgpool2d_forward: output size %dx%d", oh, ow);
    const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    Tensor y = cuda_empty({N, C, oh, ow}, x.dtype, Layout::Contiguous);
    cuk::adaptive_avgpool_forward(y.raw(), x.raw(), x.dtype, N, C, H, W, oh, ow, is_cl(x));
    return y;
  }
  Tensor adaptive_avgpool2d_backward(const Tensor& dy_in, const Shape& x_shape, Layout x_layout) override {
    check_cuda_tensor(dy_in, "adaptive_avgpool2d_backward: dy");
    check_float(dy_in, "adaptive_avgpool2d_backward: dy");
    check_ndim(dy_in, 4, "adaptive_avgpool2d_backward: dy");
    VGG_CHECK(x_shape.size() == 4 && x_shape[0] == dy_in.dim(0) && x_shape[1] == dy_in.dim(1),
              "adaptive_avgpool2d_backward: x shape %s does not match dy %s", shape_str(x_shape).c_str(),
              shape_str(dy_in.shape).c_str());
    Tensor dy = conform(dy_in, dy_in.dtype, Layout::Contiguous, "adaptive_avgpool2d_backward: dy");
    Tensor dx = cuda_empty(x_shape, dy.dtype, x_layout);
    cuk::adaptive_avgpool_backward(dx.raw(), dy.raw(), dy.dtype, x_shape[0], x_shape[1], x_shape[2], x_shape[3],
                                   int(dy.dim(2)), int(dy.dim(3)), is_cl(dx));
    return dx;
  }

  // ---------------------------------------------------------------- batch norm
  Tensor batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                           Tensor& running_var, bool training, double momentum, double eps, Saved* saved,
                           bool relu) override {
    const char* op = "batchnorm_forward";
    check_cuda_tensor(x, "batchnorm_forward: x");
    check_float(x, "batchnorm_forward: x");
    VGG_CHECK(x.ndim() == 4 || x.ndim() == 2, "batchnorm_forward: x must be (N,C,H,W) or (N,C), got %s",
              shape_str(x.shape).c_str());
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
    if (training) {
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
  Tensor batchnorm_backward(const Tensor& dy_in, const Tensor& x, const Tensor& gamma, double eps, const Saved& saved,
                            Tensor& dgamma, Tensor& dbeta, bool accumulate, const Tensor& relu_y) override {
    const char* op = "batchnorm_backward";
    check_cuda_tensor(x, "batchnorm_backward: x");
    check_float(x, "batchnorm_backward: x");
    VGG_CHECK(saved.size() == 2 || saved.size() == 3, "%s: saved state is not from a CUDA batchnorm_forward", op);
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
    Tensor sums = cuda_empty({2 * C}, DType::F32);
    cuk::bn_backward(dx.raw(), dgamma.defined() ? dgamma.data<float>() : nullptr,
                     dbeta.defined() ? dbeta.data<float>() : nullptr, dy.raw(), x.raw(), x.dtype,
                     gamma.defined() ? gamma.data<float>() : nullptr, saved[0].data<float>(), saved[1].data<float>(),
                     sums.data<float>(), N, C, HW, is_cl(x), accumulate, saved.size() == 2);
    return dx;
  }

  // ---------------------------------------------------------------- linear (cuBLAS, column-major view)
  // Row-major y(N,M) = x(N,K) w(M,K)^T  <=>  column-major y^T(M,N) = w^T... as cuBLAS sees the same bytes:
  // gemm(T, N, m=M, n=N, k=K, A=w (lda K), B=x (ldb K), C=y (ldc M)).
  Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu) override {
    const char* op = "linear_forward";
    check_cuda_tensor(x, "linear_forward: x");
    check_float(x, "linear_forward: x");
    check_ndim(x, 2, "linear_forward: x");
    check_linear_weight(op, w, x.dim(1));
    const int64_t N = x.dim(0), K = x.dim(1), M = w.dim(0);
    if (b.defined()) check_param(b, M, "linear_forward: bias", true);
    const DType dt = x.dtype;
    Tensor wk = dt == DType::F32 ? w : cast(w, dt);
    Tensor y = cuda_empty({N, M}, dt);
    gemm(op, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, wk, K, x, K, y, M, 0.f);
    cuk::bias_act(y.raw(), dt, b.defined() ? b.data<float>() : nullptr, N, M, 1, true, relu);
    return y;
  }
  // dx(N,K) = dy(N,M) w(M,K):  column-major dx^T(K,N) = w^T(K,M) dy^T(M,N): gemm(N, N, K, N, M, w, K, dy, M, dx, K)
  Tensor linear_backward_data(const Tensor& dy, const Tensor& w) override {
    const char* op = "linear_backward_data";
    check_cuda_tensor(dy, "linear_backward_data: dy");
    check_float(dy, "linear_backward_data: dy");
    check_ndim(dy, 2, "linear_backward_data: dy");
    check_cuda_tensor(w, "linear_backward_data: w");
    check_dtype(w, DType::F32, "linear_backward_data: w");
    check_ndim(w, 2, "linear_backward_data: w");
    VGG_CHECK(dy.dim(1) == w.dim(0), "%s: dy has %lld features, weight has %lld outputs", op, (long long)dy.dim(1),
              (long long)w.dim(0));
    const int64_t N = dy.dim(0), M = dy.dim(1), K = w.dim(1);
    const DType dt = dy.dtype;
    Tensor wk = dt == DType::F32 ? w : cast(w, dt);
    Tensor dx = cuda_empty({N, K}, dt);
    gemm(op, CUBLAS_OP_N, CUBLAS_OP_N, K, N, M, wk, K, dy, M, dx, K, 0.f);
    return dx;
  }
  // dw(M,K) = dy^T(M,N) x(N,K):  column-major dw^T(K,M) = x^T(K,N) dy(N,M): gemm(N, T, K, M, N, x, K, dy, M, dw, K)
  void linear_backward_weights(const Tensor& x, const Tensor& dy_in, Tensor& dw, Tensor& db,
                               bool accumulate) override {
    const char* op = "linear_backward_weights";
    check_cuda_tensor(x, "linear_backward_weights: x");
    check_float(x, "linear_backward_weights: x");
    check_ndim(x, 2, "linear_backward_weights: x");
    check_cuda_tensor(dy_in, "linear_backward_weights: dy");
    Tensor dy = conform(dy_in, x.dtype, Layout::Contiguous, "linear_backward_weights: dy");
    check_ndim(dy, 2, "linear_backward_weights: dy");
    VGG_CHECK(dy.dim(0) == x.dim(0), "%s: dy has %lld rows, x has %lld", op, (long long)dy.dim(0),
              (long long)x.dim(0));
    const int64_t N = x.dim(0), K = x.dim(1), M = dy.dim(1);
    check_cuda_tensor(dw, "linear_backward_weights: dw");
    check_dtype(dw, DType::F32, "linear_backward_weights: dw");
    check_shape(dw, {M, K}, "linear_backward_weights: dw");
    if (db.defined()) check_param(db, M, "linear_backward_weights: db", true);
    gemm(op, CUBLAS_OP_N, CUBLAS_OP_T, K, M, N, x, K, dy, M, dw, K, accumulate ? 1.f : 0.f);
    if (db.defined()) cuk::bias_grad(db.data<float>(), dy.raw(), dy.dtype, N, M, 1, true, accumulate);
  }

  // ---------------------------------------------------------------- dropout
  Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, Saved* saved) override {
    check_cuda_tensor(x, "dropout_forward: x");
    check_float(x, "dropout_forward: x");
    VGG_CHECK(p >= 0 && p <= 1, "dropout_forward: p = %g is not in [0, 1]", p);
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
  Tensor dropout_backward(const Tensor& dy_in, double p, const Saved& saved) override {
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

  // ---------------------------------------------------------------- loss
  void cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss, Tensor& dlogits) override {
    check_cuda_tensor(logits, "cross_entropy: logits");
    check_float(logits, "cross_entropy: logits");
    check_ndim(logits, 2, "cross_entropy: logits");
    check_cuda_tensor(labels, "cross_entropy: labels");
    check_dtype(labels, DType::I32, "cross_entropy: labels");
    check_shape(labels, {logits.dim(0)}, "cross_entropy: labels");
    const int64_t N = logits.dim(0), C = logits.dim(1);
    if (!cuda_graph_capturing()) {
      // Validate labels on the host (N ints). The kernel never reads past a row: an out-of-range label gives a NaN
      // loss, which is all a captured step (no host copies there) reports; the Trainer checks labels on the host.
      std::vector<int32_t> h(static_cast<size_t>(N));
      copy_bytes(h.data(), Device::CPU, labels.raw(), Device::CUDA, size_t(N) * 4);
      for (int64_t i = 0; i < N; ++i)
        VGG_CHECK(h[i] >= 0 && h[i] < C, "cross_entropy: label at index %lld is %d, out of range [0, %lld)",
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

  // ---------------------------------------------------------------- SGD
  void sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, std::vector<Tensor>& bufs,
                const SgdParams& p, bool first) override {
    const char* op = "sgd_step";
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
    if (bytes != sgd_last_.size() || (bytes && std::memcmp(sgd_last_.data(), table.data(), bytes) != 0)) {
      VGG_CHECK(!capturing, "%s: the parameter table changed since the last eager step (a CUDA graph is captured "
                "only after eager warm-up steps over the same parameters)", op);
      cuk::sgd_upload(sgd_plan_, table.data(), int64_t(table.size()));
      sgd_last_.assign(reinterpret_cast<const char*>(table.data()), reinterpret_cast<const char*>(table.data()) + bytes);
    }
    const float lr = float(p.lr);
    const float* lr_slot = nullptr;
    if (capturing)
      lr_slot = static_cast<const float*>(
          cuda_graph_slot(CudaGraphSlot::kLearningRate, CudaGraphSlot::from_float(lr)));
    cuk::sgd_step(sgd_plan_, lr, float(p.momentum), float(p.dampening), float(p.weight_decay), p.nesterov, first,
                  lr_slot, capturing ? cuda_graph_step_guard() : nullptr);
  }

  // ---------------------------------------------------------------- elementwise helpers
  void fill(Tensor& t, double value) override {
    check_cuda_tensor(t, "fill: tensor");
    cuk::fill(t.raw(), t.dtype, t.numel(), value);
  }
  void add_(Tensor& dst, const Tensor& src_in, double alpha) override {
    check_cuda_tensor(dst, "add_: dst");
    check_float(dst, "add_: dst");
    check_cuda_tensor(src_in, "add_: src");
    check_float(src_in, "add_: src");
    check_shape(src_in, dst.shape, "add_: src");
    Tensor src = conform(src_in, src_in.dtype, dst.layout, "add_: src");
    cuk::add_(dst.raw(), dst.dtype, src.raw(), src.dtype, dst.numel(), alpha);
  }
  Tensor cast(const Tensor& x, DType dtype) override {
    check_cuda_tensor(x, "cast: x");
    if (x.dtype == dtype) return x;
    VGG_CHECK(is_float(dtype), "cast: to %s is not supported on CUDA", dtype_name(dtype));
    Tensor y = cuda_empty(x.shape, dtype, x.layout);
    cuk::cast(y.raw(), dtype, x.raw(), x.dtype, x.numel());
    return y;
  }
  Tensor to_layout(const Tensor& x, Layout layout) override {
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
  void fill_random(Tensor& t, RandomKind kind, double a, double b, uint64_t seed) override {
    check_cuda_tensor(t, "fill_random: tensor");
    check_dtype(t, DType::F32, "fill_random: tensor");
    Tensor h = Tensor::empty(t.shape, DType::F32, Device::CPU);
    cpu_backend().fill_random(h, kind, a, b, seed);
    if (t.layout != Layout::Contiguous) h = cpu_backend().to_layout(h, t.layout);
    copy_bytes(t.raw(), Device::CUDA, h.raw(), Device::CPU, t.nbytes());
  }
  void synchronize() override {
    CUDA_OK("synchronize", cudaDeviceSynchronize());
    CUDA_OK("synchronize", cudaGetLastError());
  }

 private:
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  static constexpr size_t kCublasWorkspace = size_t(32) << 20;  // what cuBLAS asks for on Hopper
  void* cublas_ws_ = nullptr;
  void* ws_ = nullptr;
  size_t ws_size_ = 0;
  std::map<std::string, std::unique_ptr<ConvPlan>> plans_;
  cuk::SgdPlan sgd_plan_;
  std::string sgd_last_;

  // dst-compatible view of a gradient: same dtype and layout as the tensor it belongs to.
  Tensor conform(const Tensor& t, DType dt, Layout layout, const char* what) {
    check_float(t, what);
    Tensor r = t;
    if (r.dtype != dt) r = cast(r, dt);
    if (r.ndim() == 4 && r.layout != layout) r = to_layout(r, layout);
    return r;
  }

  void check_weight(const char* op, const Tensor& w) {
    const std::string what = strprintf("%s: weight", op);
    check_cuda_tensor(w, what.c_str());
    check_dtype(w, DType::F32, what.c_str());
    check_ndim(w, 4, what.c_str());
    VGG_CHECK(w.layout == Layout::Contiguous, "%s: weight must be contiguous (K,C,R,S)", op);
  }
  void check_conv_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& b) {
    check_cuda_tensor(x, strprintf("%s: x", op).c_str());
    check_float(x, strprintf("%s: x", op).c_str());
    check_ndim(x, 4, strprintf("%s: x", op).c_str());
    check_weight(op, w);
    VGG_CHECK(x.dim(1) == w.dim(1), "%s: input has %lld channels, weight expects %lld", op, (long long)x.dim(1),
              (long long)w.dim(1));
    if (b.defined()) check_param(b, w.dim(0), strprintf("%s: bias", op).c_str(), true);
  }
  void check_linear_weight(const char* op, const Tensor& w, int64_t K) {
    check_cuda_tensor(w, strprintf("%s: weight", op).c_str());
    check_dtype(w, DType::F32, strprintf("%s: weight", op).c_str());
    check_ndim(w, 2, strprintf("%s: weight", op).c_str());
    VGG_CHECK(w.dim(1) == K, "%s: input has %lld features, weight expects %lld", op, (long long)K,
              (long long)w.dim(1));
  }
  // A per-channel float32 parameter of C elements on the GPU; `required` = must be defined.
  void check_param(const Tensor& t, int64_t C, const char* what, bool required) {
    if (!t.defined()) {
      VGG_CHECK(!required, "%s: missing", what);
      return;
    }
    check_device(t, Device::CUDA, what);
    check_dtype(t, DType::F32, what);
    VGG_CHECK(t.numel() == C, "%s: expected %lld elements, got %s", what, (long long)C, shape_str(t.shape).c_str());
  }

  // The weight as the conv runs it: dtype dt, KRSC when channels-last (cuDNN's NHWC filter format).
  Tensor weight_for(const Tensor& w, DType dt, bool cl, const char* op) {
    if (!cl) return dt == DType::F32 ? w : cast(w, dt);
    Tensor t = cuda_empty(w.shape, dt, Layout::ChannelsLast);
    cuk::transpose(t.raw(), dt, w.raw(), DType::F32, w.dim(0), w.dim(1), w.dim(2) * w.dim(3), true, false);
    return t;
  }

  // An algorithm search runs and times kernels, synchronising: impossible inside a graph capture.
  static void refuse_search_in_capture(const char* op) {
    VGG_CHECK(!cuda_graph_capturing(), "%s: no algorithm has been chosen for this shape yet, and a CUDA graph "
              "capture cannot search (capture only after eager warm-up steps on the same shapes)", op);
  }

  void* workspace(size_t n, const char* op) {
    if (n > ws_size_) {
      if (ws_) cuda_free(ws_, ws_size_);
      ws_ = nullptr;
      ws_size_ = 0;
      ws_ = cuda_alloc(n);
      ws_size_ = n;
    }
    return ws_;
  }

  ConvPlan& get_plan(const char* op, const Shape& xs, const Shape& ws, const Conv2dParams& p, DType dt, bool cl) {
    const int math = dt == DType::BF16 ? 2 : (cuda_math_mode() == 0 ? 0 : 1);
    const std::string key = strprintf("%s/%s/%d/%d/%d,%d,%d,%d", shape_str(xs).c_str(), shape_str(ws).c_str(),
                                      int(dt), int(cl), math, p.stride_h, p.stride_w, p.pad_h * 1000 + p.pad_w);
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    auto plan = std::make_unique<ConvPlan>();
    const cudnnDataType_t cdt = cudnn_dtype(dt);
    const cudnnTensorFormat_t fmt = cl ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    const int N = to_int(xs[0], op, "N"), C = to_int(xs[1], op, "C"), H = to_int(xs[2], op, "H"),
              W = to_int(xs[3], op, "W");
    const int K = to_int(ws[0], op, "K"), R = to_int(ws[2], op, "R"), S = to_int(ws[3], op, "S");
    const int P = int(conv_out_size(H, R, p.stride_h, p.pad_h, op)), Q = int(conv_out_size(W, S, p.stride_w, p.pad_w, op));
    CUDNN_OK(op, cudnnSetTensor4dDescriptor(plan->x.d, fmt, cdt, N, C, H, W));
    CUDNN_OK(op, cudnnSetTensor4dDescriptor(plan->y.d, fmt, cdt, N, K, P, Q));
    CUDNN_OK(op, cudnnSetTensor4dDescriptor(plan->bias.d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, K, 1, 1));
    CUDNN_OK(op, cudnnSetFilter4dDescriptor(plan->w.d, cdt, fmt, K, C, R, S));
    CUDNN_OK(op, cudnnSetConvolution2dDescriptor(plan->conv.d, p.pad_h, p.pad_w, p.stride_h, p.stride_w, 1, 1,
                                                 CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan->conv.d, requested_math(dt)));
    CUDNN_OK(op, cudnnSetActivationDescriptor(plan->relu.d, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    // Output size as cuDNN computes it must agree with ours.
    int on = 0, oc = 0, oh = 0, ow = 0;
    CUDNN_OK(op, cudnnGetConvolution2dForwardOutputDim(plan->conv.d, plan->x.d, plan->w.d, &on, &oc, &oh, &ow));
    VGG_CHECK(on == N && oc == K && oh == P && ow == Q, "%s: cuDNN output %dx%dx%dx%d, expected %dx%dx%dx%d", op, on,
              oc, oh, ow, N, K, P, Q);
    ConvPlan& ref = *plan;
    plans_.emplace(key, std::move(plan));
    return ref;
  }

  void find_fwd(ConvPlan& plan, const Tensor& x, const Tensor& w, Tensor& y, const char* op) {
    refuse_search_in_capture(op);
    SearchWorkspace sw;
    cudnnConvolutionFwdAlgoPerf_t perf[16];
    int n = 0;
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, requested_math(x.dtype)));
    CUDNN_OK(op, cudnnFindConvolutionForwardAlgorithmEx(cudnn_, plan.x.d, x.raw(), plan.w.d, w.raw(), plan.conv.d,
                                                        plan.y.d, y.raw(), 16, &n, perf, sw.p, sw.n));
    int status[16];
    for (int i = 0; i < n; ++i) {
      status[i] = int(perf[i].status);
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= sw.n) {
        plan.fwd_algo = perf[i].algo;
        plan.fwd_ws = perf[i].memory;
        plan.fwd_math = perf[i].mathType;
        plan.fwd_found = true;
        return;
      }
    }
    throw Error(strprintf("%s: %s for input %s", op, algo_failures("forward", status, n).c_str(),
                          shape_str(x.shape).c_str()));
  }
  void find_bwd_data(ConvPlan& plan, const Tensor& w, const Tensor& dy, Tensor& dx, const char* op) {
    refuse_search_in_capture(op);
    SearchWorkspace sw;
    cudnnConvolutionBwdDataAlgoPerf_t perf[16];
    int n = 0;
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, requested_math(dy.dtype)));
    CUDNN_OK(op, cudnnFindConvolutionBackwardDataAlgorithmEx(cudnn_, plan.w.d, w.raw(), plan.y.d, dy.raw(),
                                                             plan.conv.d, plan.x.d, dx.raw(), 16, &n, perf, sw.p,
                                                             sw.n));
    int status[16];
    for (int i = 0; i < n; ++i) {
      status[i] = int(perf[i].status);
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= sw.n) {
        plan.bwd_data_algo = perf[i].algo;
        plan.bwd_data_ws = perf[i].memory;
        plan.bwd_data_math = perf[i].mathType;
        plan.bwd_data_found = true;
        return;
      }
    }
    throw Error(strprintf("%s: %s for dy %s", op, algo_failures("backward-data", status, n).c_str(),
                          shape_str(dy.shape).c_str()));
  }
  void find_bwd_filter(ConvPlan& plan, const Tensor& x, const Tensor& dy, Tensor& dw, const char* op) {
    refuse_search_in_capture(op);
    SearchWorkspace sw;
    cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
    int n = 0;
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, requested_math(x.dtype)));
    CUDNN_OK(op, cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnn_, plan.x.d, x.raw(), plan.y.d, dy.raw(),
                                                               plan.conv.d, plan.w.d, dw.raw(), 16, &n, perf, sw.p,
                                                               sw.n));
    int status[16];
    for (int i = 0; i < n; ++i) {
      status[i] = int(perf[i].status);
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= sw.n) {
        plan.bwd_filter_algo = perf[i].algo;
        plan.bwd_filter_ws = perf[i].memory;
        plan.bwd_filter_math = perf[i].mathType;
        plan.bwd_filter_found = true;
        return;
      }
    }
    throw Error(strprintf("%s: %s for input %s", op, algo_failures("backward-filter", status, n).c_str(),
                          shape_str(x.shape).c_str()));
  }

  // C(m,n) = alpha op(A) op(B) + beta C in cuBLAS's column-major terms; A and B in the same dtype, C float32 or
  // that dtype; float32 accumulation (TF32 allowed for float32 inputs when the math mode says so).
  void gemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
            const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, Tensor& C, int64_t ldc, float beta) {
    VGG_CHECK(A.dtype == B.dtype, "%s: operands in %s and %s", op, dtype_name(A.dtype), dtype_name(B.dtype));
    if (m == 0 || n == 0) return;
    const float alpha = 1.f;
    const cublasComputeType_t ct = (A.dtype == DType::F32 && cuda_math_mode() != 0) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                   : CUBLAS_COMPUTE_32F;
    CUBLAS_OK(op, cublasGemmEx(cublas_, ta, tb, to_int(m, op, "m"), to_int(n, op, "n"), to_int(k, op, "k"), &alpha,
                               A.raw(), blas_dtype(A.dtype), to_int(lda, op, "lda"), B.raw(), blas_dtype(B.dtype),
                               to_int(ldb, op, "ldb"), &beta, C.raw(), blas_dtype(C.dtype), to_int(ldc, op, "ldc"),
                               ct, CUBLAS_GEMM_DEFAULT));
  }
};

std::string g_init_error;

std::string json_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      r += '\\';
      r += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      r += strprintf("\\u%04x", c);
    } else {
      r += c;
    }
  }
  return r;
}

}  // namespace

void cuda_backend_on_capture_begin() {
  if (Backend* b = cuda_backend_or_null()) static_cast<CudaBackend*>(b)->on_capture_begin();
}
void cuda_backend_on_capture_end() noexcept {
  if (Backend* b = cuda_backend_or_null()) static_cast<CudaBackend*>(b)->on_capture_end();
}

Backend* cuda_backend_or_null() {
  static std::once_flag once;
  static CudaBackend* instance = nullptr;
  std::call_once(once, [] {
    if (cuda_device_count() <= 0) {
      g_init_error = "no CUDA device";
      return;
    }
    try {
      instance = new CudaBackend();  // kept for the life of the process
    } catch (const std::exception& e) {
      g_init_error = e.what();
      instance = nullptr;
    }
  });
  return instance;
}

std::string cuda_info_json() {
  std::ostringstream o;
  o << "{\"built\":true";
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) cudaGetLastError();
  if (cudaDriverGetVersion(&drv) != cudaSuccess) cudaGetLastError();
  o << ",\"runtime\":\"" << rt / 1000 << "." << (rt % 1000) / 10 << "\"";
  o << ",\"driver\":\"" << drv / 1000 << "." << (drv % 1000) / 10 << "\"";
  const size_t cv = cudnnGetVersion();
  if (cv >= 90000)
    o << ",\"cudnn\":\"" << cv / 10000 << "." << (cv % 10000) / 100 << "." << cv % 100 << "\"";
  else
    o << ",\"cudnn\":\"" << cv / 1000 << "." << (cv % 1000) / 100 << "." << cv % 100 << "\"";
  o << ",\"cudnnHeader\":\"" << CUDNN_MAJOR << "." << CUDNN_MINOR << "." << CUDNN_PATCHLEVEL << "\"";
  int bmaj = 0, bmin = 0, bpatch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &bmaj) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &bmin) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &bpatch) == CUBLAS_STATUS_SUCCESS)
    o << ",\"cublas\":\"" << bmaj << "." << bmin << "." << bpatch << "\"";
  else
    o << ",\"cublas\":null";
  o << ",\"mathMode\":" << cuda_math_mode();
  o << ",\"devices\":[";
  std::string err;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    err = cudaGetErrorString(e);
    cudaGetLastError();
    n = 0;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop;
    std::memset(&prop, 0, sizeof(prop));
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      err = strprintf("cudaGetDeviceProperties(%d): %s", i, cudaGetErrorString(cudaGetLastError()));
      continue;
    }
    o << (i ? "," : "") << "{\"index\":" << i << ",\"name\":\"" << json_escape(prop.name) << "\",\"cc\":\""
      << prop.major << "." << prop.minor << "\",\"memory\":" << prop.totalGlobalMem
      << ",\"sms\":" << prop.multiProcessorCount << "}";
  }
  o << "]";
  if (err.empty() && !g_init_error.empty()) err = g_init_error;
  if (err.empty())
    o << ",\"error\":null";
  else
    o << ",\"error\":\"" << json_escape(err) << "\"";
  o << "}";
  return o.str();
}

}  // namespace vgg
