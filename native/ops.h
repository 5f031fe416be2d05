// One backend-neutral signature per op and direction. A Backend implements all of them for one device;
// `backend(device)` picks it. Shapes are logical (NCHW for images) whatever the physical layout.
//
// Precision: parameters (weights, biases, BN affine and running stats, gradients of parameters, optimizer buffers)
// are always float32 ("master" weights). Activations may be float32 or bfloat16: an op computes in its input
// activation's dtype and returns that dtype; a backend casts float32 weights to bf16 internally where it needs to.
// Gradients of parameters are float32 and either overwrite or accumulate into the given tensor (`accumulate`).
#pragma once
#include <string>
#include <vector>

#include "replica_sum.h"
#include "tensor.h"

namespace vgg {

// Tensors an op's forward keeps for its backward (workspace, mask, batch statistics). Their meaning is private to
// the backend that made them: pass back exactly what forward filled.
using Saved = std::vector<Tensor>;

struct Conv2dParams {
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;  // kernel size comes from the weight; dilation 1, groups 1
  // CPU backend: forward writes y in the layout oneDNN's convolutions work in here, cpu_activation_layout(x's
  // dtype): for float32 the blocked cpu_isa_info().blocked (nchw16c on AVX-512, else nchw8c) when K is a multiple of
  // its block (else nchw8c when K % 8 == 0); for native bf16 its bf16_layout (nhwc on AMX); whatever x's layout, so
  // a network keeps that layout from its first conv on. Other backends ignore it.
  bool cpu_blocked_output = false;
};
struct Pool2dParams {
  int kernel = 2, stride = 2, pad = 0;
};
enum class RandomKind { Normal, Uniform };
struct SgdParams {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};
// A gradient given as the input of an adaptive average pool (C, H, W) -> (C, oh, ow) per row: the parameter's
// gradient (out, C·oh·ow) is that pool of the given (out, C·H·W) one. A linear layer after the pool has this
// gradient (the pool is linear), and on maps under 7×7 the small one is up to 49× smaller (lib/models/vgg.ts). C = 0:
// the gradient is given whole.
struct PooledGrad {
  int64_t C = 0, H = 0, W = 0;
  int oh = 0, ow = 0;
  bool on() const { return C != 0; }
};

class Backend;

// ---- Empty tensors, one rule for both backends. A batch of N = 0 is valid for every op except batch norm in
// training and cross-entropy (statistics and a mean over no samples are undefined, so those throw): the op returns
// an empty result without launching any work, and weight gradients are zeros (left as they are when accumulating),
// as PyTorch does. Any other zero-size dimension (channels, features, spatial size, kernel) of a conv, pool, batch
// norm, linear or cross-entropy is an error; elementwise ops (relu, dropout, fill, add, cast, layouts) take any size.
// Every dimension of `s` from index `from` on is >= 1; else throws "<what>: <shape> has a zero-size dimension ...".
void check_nonzero_dims(const Shape& s, int from, const char* what);
// Cross-entropy's logits (N, C): N >= 1 (the mean over no samples is undefined; PyTorch gives NaN) and C >= 1.
void check_cross_entropy_sizes(const Shape& logits);
// The weight-gradient result of an empty batch: dw and db (when defined) zeroed unless accumulating.
void zero_grads_of_empty_batch(Backend& be, Tensor& dw, Tensor& db, bool accumulate);

// Output spatial size of a conv/pool window: floor((in + 2*pad - k) / stride) + 1. Throws when < 1.
int64_t conv_out_size(int64_t in, int64_t k, int stride, int pad, const char* op);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- conv2d: x (N,C,H,W), w (K,C,R,S) f32, b (K) f32 or undefined -> y (N,K,P,Q) in x's dtype and layout
  // (or blocked, see Conv2dParams::cpu_blocked_output; a blocked layout falls back to a smaller block or NCHW where
  // the channels are not a multiple of its block, for y here and for dx below).
  // relu=true returns max(0, conv(x)+b) (the caller then uses relu_backward(dy, y) before conv backward).
  virtual Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                bool relu) = 0;
  // dx (x_shape, dy's dtype and layout) from dy (N,K,P,Q) and w.
  virtual Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                                      const Conv2dParams& p) = 0;
  // dw (K,C,R,S) f32 and, when db is defined, db (K) f32, from x and dy.
  virtual void conv2d_backward_weights(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                       Tensor& db, bool accumulate) = 0;

  // ---- relu: y = max(0, x); dx = dy where y > 0 else 0.
  virtual Tensor relu_forward(const Tensor& x) = 0;
  virtual Tensor relu_backward(const Tensor& dy, const Tensor& y) = 0;

  // ---- max pool (N,C,H,W) -> (N,C,P,Q), torchvision's MaxPool2d(kernel, stride, pad), floor mode.
  // saved may be null in inference. Backward routes dy to the arg-max of each window (first max on ties).
  // CPU: a uint8 x (int8 inference's activations, see cpu_int8_conv2d_forward) in inference only.
  virtual Tensor maxpool2d_forward(const Tensor& x, const Pool2dParams& p, Saved* saved) = 0;
  virtual Tensor maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, const Pool2dParams& p,
                                    const Saved& saved) = 0;

  // ---- adaptive average pool (N,C,H,W) -> (N,C,oh,ow), PyTorch's windows: [floor(i*H/oh), ceil((i+1)*H/oh)).
  // The output is always Contiguous (NCHW) so that flattening gives torchvision's feature order.
  virtual Tensor adaptive_avgpool2d_forward(const Tensor& x, int oh, int ow) = 0;
  virtual Tensor adaptive_avgpool2d_backward(const Tensor& dy, const Shape& x_shape, Layout x_layout) = 0;

  // ---- batch norm over C of (N,C,H,W). training: normalise with the batch's biased variance and update
  // running_mean/var in place (momentum, unbiased variance); else normalise with the running stats.
  // saved (null when no backward will follow) receives what backward needs, in either mode. relu: a ReLU follows
  // and is fused (the output is max(0, bn(x))). sync (training only, may be null): SyncBatchNorm, the batch
  // statistics are those of every replica's batch together (sums of x, then of (x - mean)^2, and the counts, summed
  // across replicas in float64); the running variance's Bessel correction uses the total count.
  virtual Tensor batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                   Tensor& running_var, bool training, double momentum, double eps, Saved* saved,
                                   bool relu, ReplicaSum* sync) = 0;
  // dx, and dgamma/dbeta (C) f32, of the mode the forward ran in: in training the batch statistics are functions of
  // x; in eval the running statistics are constants. relu_y (or undefined): the fused ReLU's output, whose zeros
  // mask dy first (the ReLU's backward). After a synced forward, sync must be the same: sum(dy) and sum(dy * xhat)
  // are summed across replicas for dx, while dgamma/dbeta stay this replica's (distributed training averages
  // them with the other gradients).
  virtual Tensor batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps,
                                    const Saved& saved, Tensor& dgamma, Tensor& dbeta, bool accumulate,
                                    const Tensor& relu_y, ReplicaSum* sync) = 0;

  // ---- linear: x (N,K), w (M,K) f32, b (M) f32 or undefined -> y (N,M) in x's dtype (relu fused if asked).
  // Forward and backward data turn w into the weights they compute with for the activations' dtype (bf16: a bf16
  // copy, or on an emulating CPU w rounded to bf16 in f32) on each call, unless w_prepared says that w already is
  // that form, as linear_weights(w, activation dtype) made it: a layer then converts once for its forward and
  // backward (PyTorch's autocast likewise keeps one cast weight for both), and inference once for many batches.
  virtual Tensor linear_weights(const Tensor& w, DType activation) = 0;
  virtual Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, bool w_prepared) = 0;
  virtual Tensor linear_backward_data(const Tensor& dy, const Tensor& w, bool w_prepared) = 0;
  virtual void linear_backward_weights(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor& db,
                                       bool accumulate) = 0;

  // ---- dropout: element i is kept when uniform(seed, offset + i) >= p (see rng.h), and then scaled by 1/(1-p).
  virtual Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, Saved* saved) = 0;
  virtual Tensor dropout_backward(const Tensor& dy, double p, const Saved& saved) = 0;

  // ---- softmax cross-entropy with mean reduction over N. logits (N,C) f32 or bf16, labels (N) int32 in [0,C).
  // loss: a 1-element f32 tensor on the device; dlogits (N,C) f32 = (softmax - onehot) / N.
  virtual void cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss, Tensor& dlogits) = 0;

  // ---- SGD over all parameters in one call, PyTorch's torch.optim.SGD semantics:
  //   d = g + wd*p; if momentum: buf = first ? d : momentum*buf + (1-dampening)*d; d = nesterov ? d + momentum*buf
  //   : buf;  p -= lr*d.   `first` means the momentum buffers hold nothing yet. Marks the parameters and buffers
  //   written (Tensor::mark_written) itself: the CPU backend updates a weight's kept bf16 copy in the same pass.
  //   pooled: empty, or one per parameter: where on(), grads[i] is that pool's input (the CPU only).
  virtual void sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, std::vector<Tensor>& bufs,
                        const SgdParams& p, bool first, const std::vector<PooledGrad>& pooled) = 0;

  // ---- elementwise helpers
  virtual void fill(Tensor& t, double value) = 0;                          // f32, i32, u8, bf16
  virtual void add_(Tensor& dst, const Tensor& src, double alpha) = 0;     // dst += alpha * src (same shape)
  virtual Tensor cast(const Tensor& x, DType dtype) = 0;                   // f32 <-> bf16
  virtual Tensor to_layout(const Tensor& x, Layout layout) = 0;            // 4-D NCHW <-> NHWC
  // Seeded initialisation of an f32 tensor: Normal(mean a, std b) or Uniform[a, b). Element i (logical order)
  // depends only on (seed, i) (rng.h's counter-based generator), so every thread count and device gives the same
  // values.
  virtual void fill_random(Tensor& t, RandomKind kind, double a, double b, uint64_t seed) = 0;
  virtual void synchronize() = 0;                                          // wait for queued work
};

// What the CPU backend's oneDNN dispatches to on this machine: isa is oneDNN's effective ISA ("avx2",
// "avx512_core", "avx512_core_amx", ...); bf16 is whether the CPU backend runs bf16 on oneDNN's bf16 kernels
// (by default where the CPU has bf16 instructions: avx512_core_bf16, AMX; VGGNET_CPU_BF16=native: wherever oneDNN
// 2.6 has the kernels, avx512_core on); false otherwise or with VGGNET_CPU_BF16=emulate, and bf16 is then emulated
// in float32 (native/cpu/common.h, Bf16Path).
// blocked is the layout the CPU convolutions write float32 activations in between layers
// (Conv2dParams::cpu_blocked_output): nchw16c where oneDNN's f32 kernels work in nChw16c (AVX-512), else nchw8c.
// bf16_layout is the same for bfloat16 activations: the layout oneDNN's bf16 convolution works in where bf16 is
// native (nhwc on AMX, nchw16c on avx512_core_bf16), else `blocked` (emulated bf16 runs the f32 kernels).
// bf16_winograd_layers: bf16 is native on avx512_core_bf16 (no AMX) and not forced onto oneDNN's bf16 kernels
// (VGGNET_CPU_BF16=native), so the wide layers on large maps run f32 Winograd instead (conv.cc, conv_bf16_path).
// avx512: oneDNN's ISA is avx512_core or newer, for our own AVX-512 loops and the rules that pick them.
// bf16_dot: oneDNN's ISA has the bf16 dot-product instructions (avx512_core_bf16, AMX), for our own loops that use
// them (linear.cc's weight gradient), whichever path bf16 takes.
struct CpuIsaInfo {
  std::string isa;
  bool bf16 = false;
  bool avx512 = false;
  bool bf16_dot = false;
  Layout blocked = Layout::Blocked8;
  Layout bf16_layout = Layout::Blocked8;
  bool bf16_winograd_layers = false;
};
// The layout conv2d_forward writes with cpu_blocked_output for activations of this dtype.
Layout cpu_activation_layout(DType activation);
CpuIsaInfo cpu_isa_info();

// Which Winograd F(4×4, 3×3) convolutions the CPU backend runs for the 3×3 layers its rule takes (native/cpu/conv.cc):
// Auto: oneDNN's on avx512_core and newer, ours (native/cpu/winograd.h) on AVX2 CPUs; Off: none, the direct kernels;
// Ours: ours wherever the CPU has AVX2 and FMA, AVX-512 CPUs included (for tests and comparisons). Starts from
// VGGNET_CPU_WINOGRAD ("0": Off, "avx2": Ours, unset: Auto).
enum class CpuWinograd { Auto, Off, Ours };
void set_cpu_winograd(CpuWinograd mode);
CpuWinograd cpu_winograd();

// Measured fp32 FMA throughput of `threads` threads at the widest vectors oneDNN uses (native/cpu/peak.cc).
struct CpuPeak {
  double gflops = 0;
  int threads = 0;
  std::string vector;
};
CpuPeak cpu_peak_gflops(int threads, double seconds);

// The oneDNN implementations the CPU backend's primitives ran since the last call (which clears the log), one entry
// per (op, implementation) with its calls and wall time, e.g. {"conv2d_forward", "jit_wino_4x3:avx512_core", 12,
// 850.0}; the small-map and linear GEMMs read "gemm:" + the matmul's implementation (native/cpu/kernel_log.h).
struct CpuKernelUse {
  std::string op, impl;
  int64_t calls = 0;
  double ms = 0;
};
std::vector<CpuKernelUse> cpu_kernels_used();

// ---- int8 inference on the CPU (native/cpu/int8.cc): post-training static quantization with oneDNN's u8 × s8
// convolutions. An activation is a uint8 tensor q in nhwc standing for q * scale (its scale kept by the caller);
// VGG's activations after a ReLU are >= 0, so u8 with zero point 0 loses nothing to the sign. Weights are int8,
// symmetric, one scale per output channel. The products accumulate exactly in int32; rounding happens where f32
// becomes u8 (round to nearest even, clamped to [0, 255]) and in the s32 -> f32 rescale.
// The largest weight magnitude cpu_quantize_conv_weights uses: 127 where oneDNN's int8 kernels have VNNI or AMX
// (u8 × s8 products summed in int32), 63 elsewhere (AVX2, avx512_core without VNNI: vpmaddubsw sums two u8 × s8
// products in int16 with saturation, and 2 × 255 × 127 overflows it; 2 × 255 × 63 does not).
int cpu_int8_weight_max();
// x (f32 or bf16, any layout) -> `dtype` (U8 or I8) nhwc: x / scale rounded to nearest even, clamped to [0, 255]
// or [-128, 127]. int8 (s8) is for signed input: the first conv's normalised pixels.
Tensor cpu_quantize(const Tensor& x, double scale, DType dtype);
// q (u8) -> f32 in q's layout: q * scale.
Tensor cpu_dequantize_u8(const Tensor& q, double scale);
// w (K,C,R,S) f32 -> q (K,C,R,S) int8 and scales (K) f32: scale_k = max|w_k| / cpu_int8_weight_max() (1 for an
// all-zero channel), q = w / scale_k rounded to nearest even. prepared (optional): q in the blocked format of one
// convolution primitive, as cpu_int8_conv2d_forward hands it out, so that later calls skip the reorder.
struct Int8ConvWeights {
  Tensor q, scales, prepared;
};
Int8ConvWeights cpu_quantize_conv_weights(const Tensor& w);
// conv2d of u8 or s8 x (N,C,H,W, nhwc, standing for x * x_scale) with quantized weights w and f32 bias b (K) or
// undefined: y = conv(x * x_scale, q * scales) + b, then max(0, .) when relu, returned as u8 nhwc quantized with
// y_scale (y_scale > 0), or as f32 nhwc when y_scale == 0. oneDNN computes sum(x_u8 * q_s8) in int32, adds
// b / (x_scale * scale_k) and multiplies by x_scale * scale_k / y_scale. The weights are reordered into the
// primitive's format unless w.prepared already holds them so (checked: made for the same format); when reordered
// and prepared_out is not null, *prepared_out receives them (keep it in w.prepared for the next call; a model's
// weights are constants while it runs).
Tensor cpu_int8_conv2d_forward(const Tensor& x, double x_scale, const Int8ConvWeights& w, const Tensor& b,
                               const Conv2dParams& p, double y_scale, bool relu, Tensor* prepared_out = nullptr);
// A linear layer on u8 x (N, K), or a flattened map (N, K, 1, 1) nhwc (cpu_int8_flatten), standing for x * x_scale,
// with quantized weights w ((M, K) or (M, K, 1, 1) int8, per-row scales) and f32 bias b (M) or undefined: (N, M) u8
// quantized with y_scale, or f32 when y_scale == 0, ReLU'd when relu; oneDNN's int8 inner product, the same
// arithmetic as cpu_int8_conv2d_forward (and the same prepared weights).
Tensor cpu_int8_linear_forward(const Tensor& x, double x_scale, const Int8ConvWeights& w, const Tensor& b,
                               double y_scale, bool relu, Tensor* prepared_out = nullptr);
// The weight (out, C·H·W) of an adaptive average pool from (C, H, W) to (C, oh, ow), flattened, followed by a linear
// layer of weight w (out, C·oh·ow): w · P, P per channel the (oh·ow, H·W) pooling matrix (its entries 1/area, as the
// pool computes them). One pass over w, f32; the result is kept on w while w and it are unchanged (the same tensor
// handed back) and rewritten by the CPU's sgd_step along with w (native/cpu/common.h, FoldedWeight).
Tensor cpu_adaptive_pool_fold(const Tensor& w, int64_t C, int64_t H, int64_t W, int oh, int ow);
// Deferred SGD (lib/optim/deferred.ts) on a weight whose gradient comes pooled (g, as PooledGrad) and whose forward
// multiplies by its fold: after the steps since an anchor, the weight w and its momentum b are
//   (w, b) = P·(anchor_w, anchor_b) + (pool(zw), pool(zb)),
// P a 2×2 matrix (row-major p[4]), zw and zb (out, C·H·W), pool the adaptive pool of each H×W plane to oh×ow.
// cpu_deferred_fold: w's fold as cpu_adaptive_pool_fold computes it, from small tensors only:
//   p0·fold_w + p1·fold_b + fold(pool(zw)), fold_w/fold_b the anchors' folds (fold_b may be undefined: taken as 0).
// activation bfloat16: the fold as linear_weights prepares weights for bf16 activations (bf16 where the CPU has bf16
// dot products, else bf16-rounded f32), converted block by block in cache instead of in a pass of its own.
Tensor cpu_deferred_fold(const Tensor& fold_w, const Tensor& fold_b, const Tensor& zw, double p0, double p1,
                         const PooledGrad& g, DType activation = DType::F32);
// cpu_deferred_materialise: w into w_out and b into b_out (either undefined: not worked out), each output allowed to
// be its own anchor; anchor_b and zb may be undefined (no momentum: taken as 0). Per element in float64, rounded once.
void cpu_deferred_materialise(Tensor& w_out, Tensor& b_out, const Tensor& anchor_w, const Tensor& anchor_b,
                              const Tensor& zw, const Tensor& zb, const double p[4], const PooledGrad& g);
// q (N,C,H,W) nhwc -> (N, H*W*C, 1, 1) nhwc sharing q's storage: the map flattened in (h, w, c) order, as the int8
// classifier's first layer takes it; its weight's columns must be in that order.
Tensor cpu_int8_flatten(const Tensor& q);
// max |x| over a f32 or bf16 tensor (calibration statistics); NaN when x holds a NaN, 0 when x is empty.
double cpu_abs_max(const Tensor& x);

Backend& backend(Device d);  // throws when that device's backend was not built or has no usable device
Backend& cpu_backend();
Backend* cuda_backend_or_null();  // null when CUDA was not built (defined in cuda/ or by a stub)

// Device transfer: same dtype and layout, a copy on `to` (or the same tensor when already there).
Tensor to_device(const Tensor& x, Device to);
// The same, but a CPU->CUDA copy returns before the data has arrived (cuda_copy_to_device_async; the result's
// Storage::pending holds the copy until the first use from JS orders the default stream after it); x may be freed
// at once. Other directions are to_device.
Tensor to_device_async(const Tensor& x, Device to);
// A contiguous float32/int32/... copy on the CPU in NCHW order (what toArray reads).
Tensor to_host_contiguous(const Tensor& x);

}  // namespace vgg
