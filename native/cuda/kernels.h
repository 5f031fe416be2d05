// Launchers of our own CUDA kernels (native/cuda/*.cu, one section per file). Plain C++ so that the backend (.cc)
// can call them without CUDA headers. Every launcher queues its kernels on the compute stream (cuda_stream(), the one stream the backend uses),
// checks the launch and throws vgg::Error naming `op` on failure. Pointers are device pointers.
//
// Activation dtypes are F32 or BF16 ("float types"); per-channel parameters are always F32.
// Image tensors are described by (N, C, HW) plus `cl` = channels-last (NHWC) or NCHW.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace vgg::cuk {

// ---- tensor ops (tensor_ops.cu)
void fill(void* p, DType dt, int64_t n, double value);  // F32, BF16, I32, I64, U8
// dst[i] += alpha * src[i]; dst F32/BF16, src F32/BF16.
void add_(void* dst, DType dt, const void* src, DType st, int64_t n, double alpha);
// dst[i] = convert(src[i]); any of F32, BF16, I32, U8 -> F32, BF16 (and same-type copies of any dtype).
void cast(void* dst, DType dt, const void* src, DType st, int64_t n);
// Layout change of a 4-D tensor seen as (N, C, HW), with dtype conversion (float types):
//   to_cl: dst[n][hw][c] = src[n][c][hw]     else: dst[n][c][hw] = src[n][hw][c]
// accumulate: dst += converted src (dst must be F32 then).
void transpose(void* dst, DType dt, const void* src, DType st, int64_t N, int64_t C, int64_t HW, bool to_cl,
               bool accumulate);
// dst = (accumulate ? dst : 0) + convert(src), dst F32, src float type (same element order).
void accumulate_f32(float* dst, const void* src, DType st, int64_t n, bool accumulate);

// ---- relu (activation.cu)
void relu_forward(void* y, const void* x, DType dt, int64_t n);
void relu_backward(void* dx, const void* dy, const void* y, DType dt, int64_t n);  // all three in dt

// ---- bias of conv and linear layers (bias.cu)
// In place: y = y + bias[c] (bias may be null), then max(0, .) when relu.
void bias_act(void* y, DType dt, const float* bias, int64_t N, int64_t C, int64_t HW, bool cl, bool relu);
// db[c] = (accumulate ? db[c] : 0) + sum over n, hw of dy.
void bias_grad(float* db, const void* dy, DType dt, int64_t N, int64_t C, int64_t HW, bool cl, bool accumulate);

// ---- dropout (activation.cu). Element with logical (NCHW/row-major) index i is kept when
// uniform01(seed, offset + i) >= p (rng.h); kept elements are scaled by 1/(1-p). mask[i] (physical order) = kept.
// offset_slot (device, may be null): read the offset there instead (a CUDA graph slot, set at each replay).
void dropout_forward(void* y, uint8_t* mask, const void* x, DType dt, int64_t N, int64_t C, int64_t HW, bool cl,
                     float p, uint64_t seed, uint64_t offset, const uint64_t* offset_slot = nullptr);
void dropout_backward(void* dx, const void* dy, const uint8_t* mask, DType dt, int64_t n, float scale);

// ---- pooling (pool.cu). x (N,C,H,W) -> y (N,C,P,Q), same layout cl for x, y and idx.
// idx (U8, y's element count) = position of the arg-max inside its window (kh*k + kw); first max on ties.
void maxpool_forward(void* y, uint8_t* idx, const void* x, DType dt, int64_t N, int64_t C, int64_t H, int64_t W,
                     int64_t P, int64_t Q, int k, int stride, int pad, bool cl);
void maxpool_backward(void* dx, const void* dy, const uint8_t* idx, DType dt, int64_t N, int64_t C, int64_t H,
                      int64_t W, int64_t P, int64_t Q, int k, int stride, int pad, bool cl);
// Adaptive average pool: x in layout cl, y always NCHW contiguous (N,C,OH,OW); backward writes dx in layout cl.
void adaptive_avgpool_forward(void* y, const void* x, DType dt, int64_t N, int64_t C, int64_t H, int64_t W, int OH,
                              int OW, bool cl);
void adaptive_avgpool_backward(void* dx, const void* dy, DType dt, int64_t N, int64_t C, int64_t H, int64_t W,
                               int OH, int OW, bool cl);

// ---- batch norm (batchnorm.cu), per channel over N*HW, fp32 statistics.
// mean[c], invstd[c] = 1/sqrt(biased var + eps) of x; running stats updated with momentum (unbiased variance).
void bn_stats(float* mean, float* invstd, float* running_mean, float* running_var, const void* x, DType dt,
              int64_t N, int64_t C, int64_t HW, bool cl, float momentum, float eps);
// scale[c] = gamma[c] * invstd[c]; shift[c] = beta[c] - mean[c] * scale[c], where invstd comes from `invstd`, or,
// when invstd is null, from var (1/sqrt(var + eps)).
void bn_scale_shift(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                    const float* invstd, const float* var, float eps, int64_t C);
// y = x * scale[c] + shift[c]
void bn_apply(void* y, const void* x, DType dt, const float* scale, const float* shift, int64_t N, int64_t C,
              int64_t HW, bool cl);
// Training-mode backward: dgamma/dbeta (accumulated or overwritten), dx in dt.
// sums: scratch of 2*C floats.
void bn_backward(void* dx, float* dgamma, float* dbeta, const void* dy, const void* x, DType dt,
                 const float* gamma, const float* mean, const float* invstd, float* sums, int64_t N, int64_t C,
                 int64_t HW, bool cl, bool accumulate, bool batch_stats);

// SyncBatchNorm (training, statistics across replicas; the caller sums the float64 buffers across replicas between
// the launches): bn_sync_sum: sums[c] = sum x, sums[C] = N*HW; bn_sync_sq: sq[c] = sum (x - sums[c]/sums[C])^2;
// bn_sync_finish: mean, invstd, count[0] = total count, running stats (unbiased variance over the total count).
void bn_sync_sum(double* sums, const void* x, DType dt, int64_t N, int64_t C, int64_t HW, bool cl);
void bn_sync_sq(double* sq, const double* sums, const void* x, DType dt, int64_t N, int64_t C, int64_t HW, bool cl);
void bn_sync_finish(float* mean, float* invstd, int64_t* count, float* running_mean, float* running_var,
                    const double* sums, const double* sq, int64_t C, float momentum, float eps);
// Backward: sums[c] = sum dy, sums[C + c] = sum dy * xhat (this replica's; dgamma/dbeta from them), then, from the
// global sums and count, dx = gamma * invstd * (dy - sums[c]/count - xhat * sums[C + c]/count).
void bn_sync_backward_reduce(double* sums, float* dgamma, float* dbeta, const void* dy, const void* x, DType dt,
                             const float* mean, const float* invstd, int64_t N, int64_t C, int64_t HW, bool cl,
                             bool accumulate);
void bn_sync_backward_dx(void* dx, const void* dy, const void* x, DType dt, const float* gamma, const float* mean,
                         const float* invstd, const double* sums, const int64_t* count, int64_t N, int64_t C,
                         int64_t HW, bool cl);

// ---- softmax cross-entropy (loss.cu): logits (N,C) in dt, labels I32; loss[0] = mean over rows (F32);
// dlogits (N,C) F32 = (softmax - onehot) / N. row_loss: scratch of N floats. A label outside [0,C) gives NaN.
void cross_entropy(float* loss, float* dlogits, float* row_loss, const void* logits, DType dt,
                   const int32_t* labels, int64_t N, int64_t C);

// ---- SGD (sgd.cu): one launch over every parameter, PyTorch's torch.optim.SGD semantics (see ops.h).
struct SgdTensor {
  float* p;
  const float* g;
  float* buf;  // null when momentum == 0
  int64_t n;
};
// `table` is device memory made by sgd_upload; `nblocks` its block count.
struct SgdPlan {
  void* table = nullptr;  // device: [tensors][blocks]
  int64_t ntensors = 0, nblocks = 0;
  size_t bytes = 0;
};
// Builds the launch table for these tensors on the host and uploads it to `plan` (reallocating as needed through
// the CUDA allocator hooks).
void sgd_upload(SgdPlan& plan, const SgdTensor* tensors, int64_t ntensors);
// lr_slot (device, may be null): read the learning rate there (a CUDA graph slot, set at each replay).
// guard (device, may be null): when *guard is not finite, nothing is updated (a captured step's loss).
void sgd_step(const SgdPlan& plan, float lr, float momentum, float dampening, float weight_decay, bool nesterov,
              bool first, const float* lr_slot = nullptr, const float* guard = nullptr);

// ---- distributed training (comm.cu): unlike everything above, queued on the given stream (the process group's
// communication stream). pack: dst = src as float32 or bfloat16; unpack: dst = scale * src.
void comm_pack(void* dst, bool to_bf16, const float* src, int64_t n, void* stream);
void comm_unpack(float* dst, const void* src, bool from_bf16, int64_t n, float scale, void* stream);

// ---- CUDA graph slots (graph.cu): dst[i] = values[i] for i < n (n <= kMaxGraphSlots), queued on the stream.
constexpr int kMaxGraphSlots = 64;
void set_graph_slots(uint64_t* dst, const uint64_t* values, int n);

}  // namespace vgg::cuk
