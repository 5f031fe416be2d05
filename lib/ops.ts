// Typed wrappers of the addon's ops (native/ops.h): one function per op and direction, Tensors in and out; plus the
// CPU's ISA and peak, the GPU's float32 math mode, and CUDA graph capture.
import { DeviceName } from './backend';
import { addon, CpuKernelUse, NativeGraph, NativeGroup, NativeTensor, NativeWithSaved } from './native';
import { DType, Layout, Tensor } from './tensor';

export interface Conv2dParams {
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  /**
   * CPU backend: the forward returns y, whatever x's layout, in the layout oneDNN's convolutions work in here: for
   * float32 `cpuIsaInfo().blockedLayout` ('nchw16c' on AVX-512, else 'nchw8c') when outChannels is a multiple of its
   * block (else 'nchw8c' when a multiple of 8); for bfloat16 `cpuIsaInfo().bf16Layout` ('nhwc' on AMX).
   */
  cpuBlockedOutput?: boolean;
}
export interface Pool2dParams {
  kernel: number;
  stride: number;
  pad: number;
}
export interface SgdStepParams {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}
export interface WithSaved {
  y: Tensor;
  saved: Tensor[];
}

const n = (t: Tensor | null | undefined) => (t ? t.native : null);
const T = (h: NativeTensor) => Tensor.fromNative(h);
const withSaved = (r: NativeWithSaved): WithSaved => ({ y: T(r.y), saved: r.saved.map(T) });
const natives = (ts: Tensor[]) => ts.map((t) => t.native);

export function conv2dForward(x: Tensor, w: Tensor, b: Tensor | null, p: Conv2dParams, relu = false): Tensor {
  return T(addon().conv2dForward(x.native, w.native, n(b), p, relu));
}
export function conv2dBackwardData(dy: Tensor, w: Tensor, xShape: number[], p: Conv2dParams): Tensor {
  return T(addon().conv2dBackwardData(dy.native, w.native, xShape, p));
}
export function conv2dBackwardWeights(
  x: Tensor, dy: Tensor, p: Conv2dParams, dw: Tensor, db: Tensor | null, accumulate: boolean,
): void {
  addon().conv2dBackwardWeights(x.native, dy.native, p, dw.native, n(db), accumulate);
}
export function reluForward(x: Tensor): Tensor {
  return T(addon().reluForward(x.native));
}
export function reluBackward(dy: Tensor, y: Tensor): Tensor {
  return T(addon().reluBackward(dy.native, y.native));
}
/** needBackward: keep the workspace for maxpool2dBackward (saved stays empty otherwise). */
export function maxpool2dForward(x: Tensor, p: Pool2dParams, needBackward: boolean): WithSaved {
  return withSaved(addon().maxpool2dForward(x.native, p, needBackward));
}
export function maxpool2dBackward(dy: Tensor, x: Tensor, y: Tensor, p: Pool2dParams, saved: Tensor[]): Tensor {
  return T(addon().maxpool2dBackward(dy.native, x.native, y.native, p, natives(saved)));
}
export function adaptiveAvgpool2dForward(x: Tensor, oh: number, ow: number): Tensor {
  return T(addon().adaptiveAvgpool2dForward(x.native, oh, ow));
}
export function adaptiveAvgpool2dBackward(dy: Tensor, xShape: number[], xLayout: Layout): Tensor {
  return T(addon().adaptiveAvgpool2dBackward(dy.native, xShape, xLayout));
}
/** sync: a process group's handle (SyncBatchNorm: batch statistics over every replica), training mode only. */
export function batchnormForward(
  x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor,
  training: boolean, momentum: number, eps: number, needBackward = training, relu = false, sync: NativeGroup | null = null,
): WithSaved {
  return withSaved(
    addon().batchnormForward(x.native, gamma.native, beta.native, runningMean.native, runningVar.native, training, momentum, eps, needBackward, relu, sync),
  );
}
/**
 * reluOutput: the output of a forward run with relu fused; its zeros mask dy first (the ReLU's own backward).
 * sync: the process group the forward synchronised with (the same one, or null when it did not).
 */
export function batchnormBackward(
  dy: Tensor, x: Tensor, gamma: Tensor, eps: number, saved: Tensor[], dgamma: Tensor, dbeta: Tensor, accumulate: boolean,
  reluOutput: Tensor | null = null, sync: NativeGroup | null = null,
): Tensor {
  return T(addon().batchnormBackward(dy.native, x.native, gamma.native, eps, natives(saved), dgamma.native, dbeta.native, accumulate, n(reluOutput), sync));
}
/**
 * A linear layer's weights as linearForward and linearBackwardData compute with them for activations of `dtype`: for
 * bfloat16 a bf16 copy (GPU, CPUs with bf16 instructions) or the weights rounded to bf16 in float32 (CPUs emulating
 * bf16); for float32 the weights themselves. Given a Tensor, those ops convert it on every call (a pass over the
 * weights: 411 MB for VGG's first classifier layer); prepared once, a forward and its backward, or many inference
 * batches, share one conversion, as PyTorch's autocast shares one cast weight. They hold the values the weights had
 * when prepared: prepare them again after the weights change.
 */
export class PreparedLinearWeights {
  constructor(readonly tensor: Tensor, readonly dtype: DType) {}
  dispose(): void {
    this.tensor.dispose();
  }
}
export function linearWeights(w: Tensor, dtype: DType): PreparedLinearWeights {
  return new PreparedLinearWeights(T(addon().linearWeights(w.native, dtype)), dtype);
}
function linearWeightArg(w: Tensor | PreparedLinearWeights, dtype: DType, op: string): [NativeTensor, boolean] {
  if (w instanceof Tensor) return [w.native, false];
  if (!(w instanceof PreparedLinearWeights)) throw new TypeError(`${op}: weight must be a Tensor or PreparedLinearWeights`);
  if (w.dtype !== dtype) throw new Error(`${op}: the weights were prepared for ${w.dtype} activations, these are ${dtype}`);
  return [w.tensor.native, true];
}
export function linearForward(x: Tensor, w: Tensor | PreparedLinearWeights, b: Tensor | null, relu = false): Tensor {
  const [wn, prepared] = linearWeightArg(w, x.dtype, 'linearForward');
  return T(addon().linearForward(x.native, wn, n(b), relu, prepared));
}
export function linearBackwardData(dy: Tensor, w: Tensor | PreparedLinearWeights): Tensor {
  const [wn, prepared] = linearWeightArg(w, dy.dtype, 'linearBackwardData');
  return T(addon().linearBackwardData(dy.native, wn, prepared));
}
export function linearBackwardWeights(x: Tensor, dy: Tensor, dw: Tensor, db: Tensor | null, accumulate: boolean): void {
  addon().linearBackwardWeights(x.native, dy.native, dw.native, n(db), accumulate);
}
/** In eval (train=false) the output is the input itself and nothing is saved. */
export function dropoutForward(x: Tensor, p: number, seed: number | bigint, offset: number | bigint, train: boolean): WithSaved {
  const r = withSaved(addon().dropoutForward(x.native, p, BigInt(seed), BigInt(offset), train));
  return train ? r : { y: x, saved: [] };
}
export function dropoutBackward(dy: Tensor, p: number, saved: Tensor[]): Tensor {
  return T(addon().dropoutBackward(dy.native, p, natives(saved)));
}
export function crossEntropy(logits: Tensor, labels: Tensor): { loss: Tensor; dlogits: Tensor } {
  const r = addon().crossEntropy(logits.native, labels.native);
  return { loss: T(r.loss), dlogits: T(r.dlogits) };
}
/**
 * pooled: per parameter null, or the geometry [C, H, W, oh, ow] of an adaptive average pool whose input the gradient
 * is given as (the CPU only; module.ts, PoolGeometry): the step pools it as it goes.
 */
export function sgdStep(params: Tensor[], grads: Tensor[], bufs: Tensor[], p: SgdStepParams, first: boolean,
  pooled?: (readonly number[] | null)[]): void {
  addon().sgdStep(natives(params), natives(grads), natives(bufs), p, first, pooled);
}
export function fill(t: Tensor, value: number): void {
  addon().fill(t.native, value);
}
/** dst += alpha * src */
export function add_(dst: Tensor, src: Tensor, alpha = 1): void {
  addon().add_(dst.native, src.native, alpha);
}
/** A converted copy (or x itself when it already has that dtype). */
export function cast(x: Tensor, dtype: DType): Tensor {
  return x.dtype === dtype ? x : T(addon().cast(x.native, dtype));
}
export function toLayout(x: Tensor, layout: Layout): Tensor {
  return x.layout === layout ? x : T(addon().toLayout(x.native, layout));
}
/**
 * What the CPU backend's oneDNN runs on here: `isa` is oneDNN's effective ISA ('avx2', 'avx512_core',
 * 'avx512_core_amx', ...), `bf16` whether bf16 runs on oneDNN's bf16 kernels (CPUs with bf16 instructions:
 * avx512_core_bf16, AMX; with VGGNET_CPU_BF16=native wherever oneDNN 2.6 has them, avx512_core on); false otherwise
 * or with VGGNET_CPU_BF16=emulate, and bf16 is then emulated in float32. `blockedLayout` is
 * the layout the convolutions write float32 activations in between layers (`cpuBlockedOutput`): 'nchw16c' where
 * oneDNN's f32 kernels work in it (AVX-512), else 'nchw8c'. `bf16Layout` is the same for bfloat16 activations: the
 * layout oneDNN's bf16 convolution works in where bf16 is native ('nhwc' on AMX, 'nchw16c' on avx512_core_bf16),
 * else `blockedLayout`. `bf16WinogradLayers`: bf16 layers of >= 256 channels on >= 28² maps run float32 Winograd on
 * the widened bf16 operands instead of the bf16 kernels (avx512_core_bf16 CPUs, where that is faster; not with
 * VGGNET_CPU_BF16=native).
 */
export function cpuIsaInfo(): { isa: string; bf16: boolean; blockedLayout: Layout; bf16Layout: Layout; bf16WinogradLayers: boolean } {
  return addon().cpuIsaInfo();
}

/**
 * The CPU's measured fp32 peak: `threads` threads running register-resident fused multiply-adds at the widest
 * vectors oneDNN uses here (`vector` says which), timed for about `seconds`. The yardstick for the conv layers'
 * GFLOP/s in `npm run bench -- cpu`.
 */
export function cpuPeakGflops(threads: number, seconds = 0.5): { gflops: number; threads: number; vector: string } {
  return addon().cpuPeakGflops(threads, seconds);
}

/**
 * The oneDNN implementations the CPU ops ran since the last call (which clears the log): one entry per (op, impl)
 * with calls and wall ms, e.g. `{ op: 'conv2d_forward', impl: 'jit_wino_4x3:avx512_core', calls: 12, ms: 850 }`;
 * the GEMM paths read `gemm:` + the matmul's implementation.
 */
export function cpuKernelsUsed(): CpuKernelUse[] {
  return addon().cpuKernelsUsed();
}

// ---- int8 inference on the CPU (native/ops.h, native/cpu/int8.cc). A quantized activation is a uint8 (int8 for the
// signed input image) tensor q in nhwc standing for q * scale, its scale kept by the caller; weights are int8 with one
// scale per output channel.

/** The largest weight magnitude of quantizeConvWeights here: 127 with VNNI or AMX, 63 without (int16 saturation). */
export function int8WeightMax(): number {
  return addon().cpuInt8WeightMax();
}
/**
 * x (float32/bfloat16, any layout) → uint8 (or int8) nhwc: x / scale rounded to nearest even, clamped to [0, 255]
 * (or [-128, 127]: for signed input, the first conv's normalised pixels).
 */
export function quantize(x: Tensor, scale: number, dtype: 'uint8' | 'int8' = 'uint8'): Tensor {
  return T(addon().cpuQuantize(x.native, scale, dtype));
}
/** q (uint8) → float32 nchw: q * scale. */
export function dequantizeU8(q: Tensor, scale: number): Tensor {
  return T(addon().cpuDequantizeU8(q.native, scale));
}
/**
 * A conv weight (K, C, R, S) as int8 with per-output-channel scales: scale_k = max|w_k| / int8WeightMax().
 * `prepared`: q in the format of the convolution that last ran it, which int8Conv2dForward fills in and reuses while
 * the shapes stay the same (checked on each call), so the weights are reordered once, not per call. The tensors
 * are the caller's to dispose, `prepared` included.
 */
export interface Int8ConvWeights {
  q: Tensor;
  scales: Tensor;
  prepared?: Tensor;
}
export function quantizeConvWeights(w: Tensor): Int8ConvWeights {
  const r = addon().cpuQuantizeConvWeights(w.native);
  return { q: T(r.q), scales: T(r.scales) };
}
/**
 * conv2d of a uint8 or int8 x (standing for x * xScale) with quantized weights and a float32 bias: ReLU'd if asked, then
 * uint8 nhwc quantized with yScale, or float32 nhwc when yScale is 0. Products accumulate exactly in int32.
 */
export function int8Conv2dForward(x: Tensor, xScale: number, w: Int8ConvWeights, b: Tensor | null, p: Conv2dParams, yScale: number, relu: boolean): Tensor {
  const r = addon().cpuInt8Conv2dForward(x.native, xScale, w.q.native, w.scales.native, n(b), p, yScale, relu, n(w.prepared ?? null));
  if (r.prepared) {
    w.prepared?.dispose();
    w.prepared = T(r.prepared);
  }
  return T(r.y);
}
/**
 * A linear layer on uint8 x (N, K) or a flattened map (N, K, 1, 1) (int8Flatten), standing for x * xScale, with
 * quantized weights ((M, K) or (M, K, 1, 1)) and a float32 bias: (N, M) uint8 quantized with yScale, or float32 when
 * yScale is 0, ReLU'd if asked. oneDNN's int8 inner product; `w.prepared` as in int8Conv2dForward.
 */
export function int8LinearForward(x: Tensor, xScale: number, w: Int8ConvWeights, b: Tensor | null, yScale: number, relu: boolean): Tensor {
  const r = addon().cpuInt8LinearForward(x.native, xScale, w.q.native, w.scales.native, n(b), yScale, relu, n(w.prepared ?? null));
  if (r.prepared) {
    w.prepared?.dispose();
    w.prepared = T(r.prepared);
  }
  return T(r.y);
}
/**
 * A quantized nhwc map (N, C, H, W) as (N, H·W·C, 1, 1), sharing its storage: flattened in (h, w, c) order for
 * int8LinearForward, whose weight columns must then be in that order.
 */
export function int8Flatten(q: Tensor): Tensor {
  return T(addon().cpuInt8Flatten(q.native));
}
/**
 * CPU: the weight (out, c·h·w) of an adaptive average pool from (c, h, w) to (c, oh, ow), flattened, followed by a
 * linear layer of weight `w` (out, c·oh·ow): one pass over w (native/ops.h, cpu_adaptive_pool_fold). The result is
 * kept on w: while w is unchanged the same buffer comes back, and sgdStep rewrites it with w once every handle to it
 * is disposed (a handle still held keeps its values; the next call then folds afresh).
 */
export function adaptivePoolFold(w: Tensor, c: number, h: number, width: number, oh: number, ow: number): Tensor {
  return T(addon().cpuAdaptivePoolFold(w.native, c, h, width, oh, ow));
}
/**
 * CPU, deferred SGD (lib/optim/deferred.ts): the fold (as adaptivePoolFold) of the weight p0·W0 + p1·b0 + pool(z),
 * from the anchors' folds foldW, foldB (null: 0) and z (out, C·H·W) (native/ops.h, cpu_deferred_fold). For bfloat16
 * activations, the fold prepared as linearWeights(fold, 'bfloat16') prepares it (the same bits), without the float32
 * fold in between.
 */
export function deferredFold(foldW: Tensor, foldB: Tensor | null, z: Tensor, p0: number, p1: number,
  geometry: readonly number[]): Tensor;
export function deferredFold(foldW: Tensor, foldB: Tensor | null, z: Tensor, p0: number, p1: number,
  geometry: readonly number[], activation: 'bfloat16'): PreparedLinearWeights;
export function deferredFold(foldW: Tensor, foldB: Tensor | null, z: Tensor, p0: number, p1: number,
  geometry: readonly number[], activation: DType = 'float32'): Tensor | PreparedLinearWeights {
  const t = T(addon().cpuDeferredFold(foldW.native, foldB?.native ?? null, z.native, p0, p1, geometry, activation));
  return activation === 'float32' ? t : new PreparedLinearWeights(t, activation);
}
/**
 * CPU, deferred SGD: (w, b) = P·(anchorW, anchorB) + (pool(zW), pool(zB)) into wOut and/or bOut (null: skipped; each
 * may be its own anchor), P row-major [p00, p01, p10, p11] (native/ops.h, cpu_deferred_materialise).
 */
export function deferredMaterialise(wOut: Tensor | null, bOut: Tensor | null, anchorW: Tensor, anchorB: Tensor | null,
  zW: Tensor, zB: Tensor | null, p: readonly number[], geometry: readonly number[]): void {
  addon().cpuDeferredMaterialise(wOut?.native ?? null, bOut?.native ?? null, anchorW.native, anchorB?.native ?? null,
    zW.native, zB?.native ?? null, p, geometry);
}
/** The tensor's write count (PyTorch's tensor._version): every op that writes into it advances it. */
export function tensorVersion(t: Tensor): number {
  return addon().tensorVersion(t.native);
}
/** max |x| of a float32/bfloat16 CPU tensor (NaN if it holds one): calibration's statistic. */
export function absMax(x: Tensor): number {
  return addon().cpuAbsMax(x.native);
}

/** Waits for the work queued on `device`. */
export function synchronize(device: DeviceName): void {
  addon().synchronize(device);
}

/** The GPU's float32 math, process-wide: 'fp32' true float32, 'tf32' TF32 tensor cores, 'bf16' as tf32 (native/cuda/cuda_hooks.h). */
export type CudaMathMode = 'fp32' | 'tf32' | 'bf16';
const MATH_MODE_CODE: Record<CudaMathMode, 0 | 1 | 2> = { fp32: 0, tf32: 1, bf16: 2 };
let mathMode: CudaMathMode | undefined;
/** Sets the GPU's float32 math mode (a model sets its precision's at each forward; only a change reaches the addon). */
export function setCudaMathMode(mode: CudaMathMode): void {
  if (mode === mathMode) return;
  addon().setCudaMathMode(MATH_MODE_CODE[mode]);
  mathMode = mode;
}

/** Seeded fill: normal(a, b) = mean a, std b; uniform(a, b) = [a, b). Element i depends only on (seed, i). */
export function fillRandom(t: Tensor, kind: 'normal' | 'uniform', a: number, b: number, seed: number | bigint): void {
  addon().fillRandom(t.native, kind, a, b, BigInt(seed));
}

/** A per-replay value of a captured CUDA graph: dropout offsets (bigint) and the learning rate (number). */
export interface CudaGraphSlot {
  kind: 'dropoutOffset' | 'learningRate';
  /** The value at capture time. */
  value: bigint | number;
}

/** A captured CUDA graph (native/cuda/graph.cc); lib/train/train_step.ts is what drives one. */
export class CudaGraph {
  private constructor(private handle: NativeGraph) {}

  /**
   * Captures what `fn` queues on the GPU instead of running it: no host copies or synchronisation may happen inside,
   * and every convolution shape must have run eagerly before (its algorithm is chosen then). Memory allocated while
   * capturing belongs to the graph until it is disposed. A failed capture is discarded and its error thrown.
   */
  static capture(fn: () => void): CudaGraph {
    addon().cudaGraphBegin();
    try {
      fn();
    } catch (e) {
      addon().cudaGraphAbort();
      throw e;
    }
    return new CudaGraph(addon().cudaGraphEnd());
  }
  static capturing(): boolean {
    return addon().cudaGraphCapturing();
  }
  /** During a capture: the captured SGD step updates nothing at a replay whose `loss` (one float32) is not finite. */
  static stepGuard(loss: Tensor): void {
    addon().cudaGraphStepGuard(loss.native);
  }

  /** The per-replay values the graph reads, in the order launch() takes them. */
  slots(): CudaGraphSlot[] {
    return addon().cudaGraphSlots(this.handle);
  }
  /** Queues one replay on the GPU with these slot values. */
  launch(values: (bigint | number)[]): void {
    addon().cudaGraphLaunch(this.handle, values);
  }
  dispose(): void {
    addon().cudaGraphDispose(this.handle);
  }
}
