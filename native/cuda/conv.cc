// conv2d on cuDNN: forward (bias and ReLU fused where cuDNN can, else our bias/ReLU kernel), backward data, backward
// filter (+ our bias-gradient kernel). Plans (descriptors + the algorithm each direction's timed search chose) are
// kept per shape, dtype, layout and math mode (conv_plan.h). Channels-last convs run the weight as KRSC.
#include "backend.h"

namespace vgg::cuda {

SearchWorkspace::SearchWorkspace() {
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
SearchWorkspace::~SearchWorkspace() {
  if (p) cudaFree(p);
}

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

namespace {
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
  check_nonzero_dims(x.shape, 1, strprintf("%s: x", op).c_str());
  check_nonzero_dims(w.shape, 0, strprintf("%s: weight", op).c_str());
  VGG_CHECK(x.dim(1) == w.dim(1), "%s: input has %lld channels, weight expects %lld", op, (long long)x.dim(1),
            (long long)w.dim(1));
  if (b.defined()) check_param(b, w.dim(0), strprintf("%s: bias", op).c_str(), true);
}
}  // namespace

ConvPlan& CudaBackend::get_plan(const char* op, const Shape& xs, const Shape& ws, const Conv2dParams& p, DType dt,
                                bool cl) {
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

// The weight as the conv runs it: dtype dt, KRSC when channels-last (cuDNN's NHWC filter format).
Tensor CudaBackend::weight_for(const Tensor& w, DType dt, bool cl, const char* op) {
  if (!cl) return dt == DType::F32 ? w : cast(w, dt);
  Tensor t = cuda_empty(w.shape, dt, Layout::ChannelsLast);
  cuk::transpose(t.raw(), dt, w.raw(), DType::F32, w.dim(0), w.dim(1), w.dim(2) * w.dim(3), true, false);
  return t;
}

Tensor CudaBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                   bool relu) {
  const char* op = "conv2d_forward";
  check_conv_args(op, x, w, b);
  const DType dt = x.dtype;
  const bool cl = is_cl(x);
  const int64_t N = x.dim(0), H = x.dim(2), W = x.dim(3), K = w.dim(0), R = w.dim(2), S = w.dim(3);
  const int64_t P = conv_out_size(H, R, p.stride_h, p.pad_h, op), Q = conv_out_size(W, S, p.stride_w, p.pad_w, op);
  if (N == 0) return cuda_empty({0, K, P, Q}, dt, x.layout);  // cuDNN rejects N = 0: nothing to compute
  ConvPlan& plan = get_plan(op, x.shape, w.shape, p, dt, cl);
  Tensor wk = weight_for(w, dt, cl, op);
  Tensor y = cuda_empty({N, K, P, Q}, dt, x.layout);
  if (!plan.fwd.found)
    search_algorithm<cudnnConvolutionFwdAlgoPerf_t>(
        plan.fwd, plan, dt, op, "forward", "input", x.shape, [&](auto* perf, int* n, void* sw, size_t swn) {
          return cudnnFindConvolutionForwardAlgorithmEx(cudnn_, plan.x.d, x.raw(), plan.w.d, wk.raw(), plan.conv.d,
                                                        plan.y.d, y.raw(), 16, n, perf, sw, swn);
        });
  void* ws = workspace(plan.fwd.ws, op);
  const float one = 1.f, zero = 0.f;
  if (relu && b.defined() && dt == DType::F32 && plan.fused_ok) {
    CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.fwd.math));
    cudnnStatus_t s = cudnnConvolutionBiasActivationForward(
        cudnn_, &one, plan.x.d, x.raw(), plan.w.d, wk.raw(), plan.conv.d, plan.fwd.algo, ws, plan.fwd.ws, &zero,
        plan.y.d, y.raw(), plan.bias.d, b.raw(), plan.relu.d, plan.y.d, y.raw());
    if (s == CUDNN_STATUS_SUCCESS) return y;
    if (s != CUDNN_STATUS_NOT_SUPPORTED && s != CUDNN_STATUS_BAD_PARAM)
      check_cudnn(s, op, "cudnnConvolutionBiasActivationForward");
    plan.fused_ok = false;  // this shape runs unfused from now on
  }
  CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.fwd.math));
  CUDNN_OK(op, cudnnConvolutionForward(cudnn_, &one, plan.x.d, x.raw(), plan.w.d, wk.raw(), plan.conv.d,
                                       plan.fwd.algo, ws, plan.fwd.ws, &zero, plan.y.d, y.raw()));
  cuk::bias_act(y.raw(), dt, b.defined() ? b.data<float>() : nullptr, N, K, P * Q, cl, relu);
  return y;
}

Tensor CudaBackend::conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                                         const Conv2dParams& p) {
  const char* op = "conv2d_backward_data";
  check_cuda_tensor(dy, "conv2d_backward_data: dy");
  check_float(dy, "conv2d_backward_data: dy");
  check_ndim(dy, 4, "conv2d_backward_data: dy");
  check_weight(op, w);
  VGG_CHECK(x_shape.size() == 4 && x_shape[1] == w.dim(1), "%s: x shape %s does not match weight %s", op,
            shape_str(x_shape).c_str(), shape_str(w.shape).c_str());
  check_nonzero_dims(x_shape, 1, "conv2d_backward_data: x shape");
  check_nonzero_dims(w.shape, 0, "conv2d_backward_data: weight");
  const int64_t P = conv_out_size(x_shape[2], w.dim(2), p.stride_h, p.pad_h, op);
  const int64_t Q = conv_out_size(x_shape[3], w.dim(3), p.stride_w, p.pad_w, op);
  check_shape(dy, {x_shape[0], w.dim(0), P, Q}, "conv2d_backward_data: dy");
  const DType dt = dy.dtype;
  const bool cl = is_cl(dy);
  if (x_shape[0] == 0) return cuda_empty(x_shape, dt, dy.layout);
  ConvPlan& plan = get_plan(op, x_shape, w.shape, p, dt, cl);
  Tensor wk = weight_for(w, dt, cl, op);
  Tensor dx = cuda_empty(x_shape, dt, dy.layout);
  if (!plan.bwd_data.found)
    search_algorithm<cudnnConvolutionBwdDataAlgoPerf_t>(
        plan.bwd_data, plan, dt, op, "backward-data", "dy", dy.shape, [&](auto* perf, int* n, void* sw, size_t swn) {
          return cudnnFindConvolutionBackwardDataAlgorithmEx(cudnn_, plan.w.d, wk.raw(), plan.y.d, dy.raw(),
                                                             plan.conv.d, plan.x.d, dx.raw(), 16, n, perf, sw, swn);
        });
  void* ws = workspace(plan.bwd_data.ws, op);
  const float one = 1.f, zero = 0.f;
  CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.bwd_data.math));
  CUDNN_OK(op, cudnnConvolutionBackwardData(cudnn_, &one, plan.w.d, wk.raw(), plan.y.d, dy.raw(), plan.conv.d,
                                            plan.bwd_data.algo, ws, plan.bwd_data.ws, &zero, plan.x.d, dx.raw()));
  return dx;
}

void CudaBackend::conv2d_backward_weights(const Tensor& x, const Tensor& dy_in, const Conv2dParams& p, Tensor& dw, Tensor& db,
                                          bool accumulate) {
  const char* op = "conv2d_backward_weights";
  check_cuda_tensor(x, "conv2d_backward_weights: x");
  check_float(x, "conv2d_backward_weights: x");
  check_ndim(x, 4, "conv2d_backward_weights: x");
  check_weight(op, dw);
  check_nonzero_dims(x.shape, 1, "conv2d_backward_weights: x");
  check_nonzero_dims(dw.shape, 0, "conv2d_backward_weights: dw");
  VGG_CHECK(x.dim(1) == dw.dim(1), "%s: x has %lld channels, dw expects %lld", op, (long long)x.dim(1),
            (long long)dw.dim(1));
  const DType dt = x.dtype;
  const bool cl = is_cl(x);
  check_cuda_tensor(dy_in, "conv2d_backward_weights: dy");
  const int64_t N = x.dim(0), K = dw.dim(0), C = dw.dim(1), R = dw.dim(2), S = dw.dim(3);
  const int64_t P = conv_out_size(x.dim(2), R, p.stride_h, p.pad_h, op);
  const int64_t Q = conv_out_size(x.dim(3), S, p.stride_w, p.pad_w, op);
  check_shape(dy_in, {N, K, P, Q}, "conv2d_backward_weights: dy");
  if (db.defined()) {
    check_cuda_tensor(db, "conv2d_backward_weights: db");
    check_dtype(db, DType::F32, "conv2d_backward_weights: db");
    check_shape(db, {K}, "conv2d_backward_weights: db");
  }
  if (N == 0) return zero_grads_of_empty_batch(*this, dw, db, accumulate);
  Tensor dy = conform(dy_in, dt, x.layout, "conv2d_backward_weights: dy");
  ConvPlan& plan = get_plan(op, x.shape, dw.shape, p, dt, cl);
  const bool direct = dt == DType::F32 && !cl;  // cuDNN writes (and accumulates into) dw itself
  Tensor tmp = direct ? Tensor() : cuda_empty(dw.shape, dt, cl ? Layout::ChannelsLast : Layout::Contiguous);
  if (!plan.bwd_filter.found) {
    // The search writes its output: never into dw, which may hold gradients to accumulate onto.
    Tensor scratch = direct ? cuda_empty(dw.shape, dt) : tmp;
    search_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(
        plan.bwd_filter, plan, dt, op, "backward-filter", "input", x.shape,
        [&](auto* perf, int* n, void* sw, size_t swn) {
          return cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnn_, plan.x.d, x.raw(), plan.y.d, dy.raw(),
                                                               plan.conv.d, plan.w.d, scratch.raw(), 16, n, perf,
                                                               sw, swn);
        });
  }
  void* ws = workspace(plan.bwd_filter.ws, op);
  const float one = 1.f, zero = 0.f, beta = (direct && accumulate) ? 1.f : 0.f;
  CUDNN_OK(op, cudnnSetConvolutionMathType(plan.conv.d, plan.bwd_filter.math));
  CUDNN_OK(op, cudnnConvolutionBackwardFilter(cudnn_, &one, plan.x.d, x.raw(), plan.y.d, dy.raw(), plan.conv.d,
                                              plan.bwd_filter.algo, ws, plan.bwd_filter.ws, direct ? &beta : &zero,
                                              plan.w.d, direct ? dw.raw() : tmp.raw()));
  if (!direct) {
    if (cl)
      cuk::transpose(dw.raw(), DType::F32, tmp.raw(), dt, K, C, R * S, /*to_cl=*/false, accumulate);
    else
      cuk::accumulate_f32(dw.data<float>(), tmp.raw(), dt, dw.numel(), accumulate);
  }
  if (db.defined()) cuk::bias_grad(db.data<float>(), dy.raw(), dt, N, K, P * Q, cl, accumulate);
}

}  // namespace vgg::cuda
