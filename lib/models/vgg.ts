// VGG from a table of layer widths, the way torchvision's models/vgg.py builds it: configurations A/B/D/E
// (VGG11/13/16/19), optional batch norm, torchvision's layer indices, parameter names and initialisation.
import { DeviceOption, DeviceName, deferringMemoryReports, resolveDevice } from '../backend';
import { DType, Layout, Tensor } from '../tensor';
import * as ops from '../ops';
import {
  BackwardOptions, Counter, ForwardOptions, Module, Parameter, NamedParameter, PoolGeometry, isGradEnabled, poolOutGrad,
  markGradientFor, noGrad, shareAccumulate, StepContext, tensorArg,
} from '../nn/module';
import {
  AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, linearWeightGrads, nchwView,
} from '../nn/layers';
import { loadStateDictInto, StateRecord } from '../io/safetensors';
import { readStateDict, writeStateDict } from '../io/state_dict';
import { exportOnnx, OnnxExportOptions } from '../io/onnx';

/**
 * The weight (out, c·h·w) of the linear map that an adaptive average pool from (c, h, w) to (c, oh, ow), flattened,
 * followed by a linear layer of weight (out, c·oh·ow), is: W' = W · P with P, per channel, the (oh·ow, h·w) pooling
 * matrix. P's transpose is the pool itself applied to the h·w one-hot maps (so the windows are the pool's own), and
 * W' one matmul over W viewed as (out·c, oh·ow) rows; float32 on W's device.
 */
export function foldAdaptivePool(weight: Tensor, c: number, h: number, w: number, oh: number, ow: number): Tensor {
  const [out, inF] = weight.shape;
  if (inF !== c * oh * ow) throw new Error(`foldAdaptivePool: weight has ${inF} inputs, expected ${c}·${oh}·${ow}`);
  // On the CPU a loop of ours (ops.adaptivePoolFold): the matmul below, with its one to a few output columns, ran
  // at half (1×1 maps) to under a third (2×2) of its speed (native/cpu/pool.cc, fold_planes_avx512).
  if (weight.device === 'cpu') return ops.adaptivePoolFold(weight, c, h, w, oh, ow);
  const eye = new Float32Array(h * w * h * w);
  for (let m = 0; m < h * w; m++) eye[m * h * w + m] = 1;
  const onehot = Tensor.from(eye, [h * w, 1, h, w], { device: weight.device });
  const pooled = ops.adaptiveAvgpool2dForward(onehot, oh, ow); // (h·w, 1, oh, ow): row m is P's column m
  const pt = pooled.view([h * w, oh * ow]);
  const rows = weight.view([out * c, oh * ow]);
  try {
    const folded = ops.linearForward(rows, pt, null);
    try {
      return folded.view([out, c * h * w]);
    } finally {
      folded.dispose();
    }
  } finally {
    for (const t of [onehot, pooled, pt, rows]) t.dispose();
  }
}

/** What VGGNet's head keeps for backward when it runs the pool and first classifier layer itself (splitsHead). */
interface TrainHead {
  f: Tensor; // the feature map as (n, c·h·w) in nchw
  y: Tensor; // the layer's output after its ReLU
  w: Tensor | ops.PreparedLinearWeights; // what forward multiplied by: the (folded) weight, or it prepared for bf16
  prepared: ops.PreparedLinearWeights | undefined; // w when prepared here (this head disposes it)
  features: { shape: number[]; layout: Layout };
  geometry: PoolGeometry;
  folded: boolean;
}

/**
 * A linear layer's weight and bias gradients, its input the adaptive average pool (geometry) of the map x
 * (n, c·h·w): the weight's handed over as the pool's input, dy^T·x (Parameter.pooledGradForBackward), or, when the
 * weight's gradient already holds values whole, that pooled and added to them. forFold: the forward multiplied by
 * the weight's fold (SGD may then defer the weight's update: lib/optim/deferred.ts).
 */
export function pooledLinearGrads(layer: Linear, x: Tensor, dy: Tensor, geometry: PoolGeometry, forFold = false,
  step?: StepContext): void {
  const bias = layer.bias?.gradForBackward();
  const small = layer.weight.pooledGradForBackward(geometry, forFold);
  if (small) {
    const { grads: [dw, db], accumulate } = shareAccumulate([small, bias]);
    linearWeightGrads(layer, x, dy, dw!, db, accumulate, step);
    return;
  }
  const [c, h, w] = geometry;
  const part = Tensor.empty([layer.weight.shape[0], c * h * w]);
  try {
    ops.fill(part, 0); // to accumulate with the bias's gradient
    const { grads: [, db] } = shareAccumulate([{ grad: part, accumulate: true }, bias]);
    ops.linearBackwardWeights(x, dy, part, db, true);
    const whole = poolOutGrad(part, geometry);
    ops.add_(layer.weight.grad, whole);
    whole.dispose();
  } finally {
    part.dispose();
  }
}

/** A width is a 3×3 conv with that many output channels; 'M' is a 2×2 max pool. */
export type VGGConfig = (number | 'M')[];

export const cfgs: Record<'A' | 'B' | 'D' | 'E', VGGConfig> = {
  A: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  B: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  D: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  E: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

export type Precision = 'fp32' | 'tf32' | 'bf16';

/**
 * What bf16 on the CPU means here, or undefined when oneDNN runs it on its bf16 kernels (CPUs with bf16
 * instructions: avx512_core_bf16, AMX; or VGGNET_CPU_BF16=native). Elsewhere the backend emulates it
 * (native/cpu/common.h, Bf16Path): bf16 activations and bf16-rounded weights computed in float32, results rounded
 * to bf16.
 */
export function cpuBf16Note(): string | undefined {
  const { isa, bf16 } = ops.cpuIsaInfo();
  if (bf16) return undefined;
  const why = process.env.VGGNET_CPU_BF16 === 'emulate'
    ? 'VGGNET_CPU_BF16=emulate'
    : isa.startsWith('avx512_core')
      ? "no bf16 instructions: oneDNN's bf16 kernels convert inside and ran slower than this"
      : 'oneDNN 2.6 has no bf16 kernels below avx512_core';
  return `bf16 on this CPU (${isa}) is emulated in float32 (${why}): same rounding as bf16 hardware, no speed-up`;
}

export interface VGGOptions {
  /** Outputs of the last layer (default 1000, ImageNet's; STL10 has 10). */
  numClasses?: number;
  /** Batch norm after every convolution: torchvision's vgg*_bn (default false). */
  batchNorm?: boolean;
  /** Dropout probability of the two hidden classifier layers (default 0.5, as in the paper). */
  dropout?: number;
  /**
   * torchvision's initialisation (default true): Kaiming-normal convolutions (fan_out, ReLU), N(0, 0.01) linear
   * weights, zero biases, BN weight 1 and bias 0. false: PyTorch's layer default, U(±1/√fan_in) weights and biases.
   */
  initWeights?: boolean;
  /** Seed of the initialisation and the dropout masks (default 0); the same seed gives the same network anywhere. */
  seed?: number;
  /** Where the parameters live: 'cpu', 'cuda' or 'auto' (default: $VGGNET_DEVICE, else CUDA when usable, else CPU). */
  device?: DeviceOption;
  /**
   * Compute precision of activations; parameters stay float32. Default: bf16 on CUDA, fp32 on CPU. bf16 on a CPU
   * without oneDNN bf16 kernels is emulated in float32 (same rounding, no speed-up; `precisionNote` says so).
   */
  precision?: Precision;
  /** Input channels (3 for RGB). */
  inChannels?: number;
  /** Width of the two hidden fully connected layers (4096 in the paper). */
  hiddenFeatures?: number;
}

export interface ParameterInfo {
  name: string;
  value: Tensor;
  grad: Tensor;
  param: Parameter;
}

export class VGGNet extends Module {
  readonly features: Sequential;
  readonly avgpool = new AdaptiveAvgPool2d([7, 7]);
  readonly flatten = new Flatten();
  readonly classifier: Sequential;
  readonly device: DeviceName;
  readonly precision: Precision;
  /** Set when the precision runs differently from what its name suggests: bf16 emulated on a CPU without bf16 kernels. */
  readonly precisionNote: string | undefined;
  readonly options: Required<Omit<VGGOptions, 'device' | 'precision'>> & { config: VGGConfig; name?: string };
  private acts: Tensor[] = [];
  /**
   * Inside withFrozenWeights: folded first classifier layers by feature-map size (channels×height×width) and
   * activation dtype, prepared for that dtype (ops.linearWeights) when it is not float32.
   */
  private folds: Map<string, Tensor | ops.PreparedLinearWeights> | undefined;
  /** features, avgpool, flatten, classifier: their forward generations in this model's latest forward. */
  private childGenerations: number[] = [];
  /** What the latest forward's first classifier layer, run by the model on small maps (splitsHead), left for backward. */
  private trainHead: TrainHead | undefined;
  /** The batch size of the latest forward with gradients, until its backward. */
  private gradRows: number | undefined;

  constructor(config: VGGConfig, options: VGGOptions = {}, name?: string) {
    super();
    const device = resolveDevice(options.device); // default: $VGGNET_DEVICE, else CUDA when usable, else CPU
    this.device = device;
    this.precision = options.precision ?? (device === 'cuda' ? 'bf16' : 'fp32');
    if (!['fp32', 'tf32', 'bf16'].includes(this.precision)) {
      throw new RangeError(`VGGNet: precision must be 'fp32', 'tf32' or 'bf16', got '${String(options.precision)}'`);
    }
    if (this.precision === 'tf32' && device === 'cpu') {
      throw new Error(`VGGNet: precision '${this.precision}' is a CUDA mode; on the CPU use fp32`);
    }
    this.precisionNote = this.precision === 'bf16' && device === 'cpu' ? cpuBf16Note() : undefined;
    const o = {
      numClasses: options.numClasses ?? 1000,
      batchNorm: options.batchNorm ?? false,
      dropout: options.dropout ?? 0.5,
      initWeights: options.initWeights ?? true,
      seed: options.seed ?? 0,
      inChannels: options.inChannels ?? 3,
      hiddenFeatures: options.hiddenFeatures ?? 4096,
      config,
      name,
    };
    this.options = o;
    if (!Array.isArray(config)) throw new TypeError(`VGGNet: expected a config array of widths and 'M', got ${typeof config}`);
    for (const [k, v] of [['numClasses', o.numClasses], ['inChannels', o.inChannels], ['hiddenFeatures', o.hiddenFeatures]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`VGGNet: ${k} must be a positive integer, got ${v}`);
    }
    if (!Number.isSafeInteger(o.seed)) throw new RangeError(`VGGNet: seed must be an integer, got ${o.seed}`);
    const layers: Module[] = [];
    let inC = o.inChannels;
    for (const v of config) {
      if (v === 'M') {
        layers.push(new MaxPool2d(2, 2));
      } else {
        if (!Number.isInteger(v) || v < 1) throw new RangeError(`VGGNet: bad layer width ${String(v)} in the config`);
        const conv = new Conv2d(inC, v, 3, { padding: 1, device });
        // On the CPU the features run in oneDNN's blocked layout (nchw16c on AVX-512, else nchw8c) from the first
        // conv's output on: no reorder between layers
        // (the flag is ignored by the CUDA backend; the avgpool's output is plain NCHW again).
        conv.params.cpuBlockedOutput = true;
        layers.push(conv);
        if (o.batchNorm) layers.push(new BatchNorm2d(v, { device }));
        layers.push(new ReLU());
        inC = v; // the channel count is set, not added (the seed tutorial's bug)
      }
    }
    this.features = new Sequential(layers);
    if (layers[0] instanceof Conv2d) layers[0].computeInputGrad = false;
    const h = o.hiddenFeatures;
    this.classifier = new Sequential([
      new Linear(inC * 7 * 7, h, { device }), new ReLU(), new Dropout(o.dropout),
      new Linear(h, h, { device }), new ReLU(), new Dropout(o.dropout),
      new Linear(h, o.numClasses, { device }),
    ]);
    this.setSeed(o.seed);
    this.initialize(o.initWeights);
  }

  children(): [string, Module][] {
    return [['features', this.features], ['avgpool', this.avgpool], ['classifier', this.classifier]];
  }

  /** Seeds the dropout masks (initialisation uses the seed at construction). */
  setSeed(seed: number): void {
    let k = 0;
    for (const m of this.classifier.layers) if (m instanceof Dropout) m.seed = (seed * 1000003 + ++k) >>> 0;
  }

  // Each tensor gets its own stream of the counter-based generator: seed · 2^16 + its index in the network.
  private initialize(torchvisionInit: boolean): void {
    let k = 0;
    const fill = (p: Parameter, kind: 'normal' | 'uniform', a: number, b: number) =>
      ops.fillRandom(p.value, kind, a, b, (BigInt(this.options.seed >>> 0) << 16n) + BigInt(++k));
    for (const m of [...this.features.layers, ...this.classifier.layers]) {
      if (!(m instanceof Conv2d || m instanceof Linear)) continue; // BatchNorm2d starts at weight 1, bias 0
      const [out, fanIn] = m instanceof Conv2d
        ? [m.outChannels * m.kernelSize * m.kernelSize, m.inChannels * m.kernelSize * m.kernelSize]
        : [m.outFeatures, m.inFeatures];
      if (torchvisionInit) {
        // Conv: kaiming_normal_(mode='fan_out', nonlinearity='relu'); Linear: normal(0, 0.01); biases 0.
        fill(m.weight, 'normal', 0, m instanceof Conv2d ? Math.sqrt(2 / out) : 0.01);
      } else {
        // PyTorch's default: kaiming_uniform_(a=√5) = U(±1/√fan_in) for the weight, the same bound for the bias.
        const bound = 1 / Math.sqrt(fanIn);
        fill(m.weight, 'uniform', -bound, bound);
        if (m.bias) fill(m.bias, 'uniform', -bound, bound);
      }
    }
  }

  forward(x: Tensor, options?: ForwardOptions): Tensor {
    // Its activations come and go by the hundred MB: V8 is told of the net change once (deferringMemoryReports).
    return deferringMemoryReports(() => this.forwardInner(x, options));
  }

  private forwardInner(x: Tensor, options?: ForwardOptions): Tensor {
    tensorArg(x, 'VGGNet.forward');
    this.freeActs();
    const step = options?.step;
    const [n, c, h, w] = x.shape;
    if (x.shape.length !== 4 || c !== this.options.inChannels) {
      throw new Error(`VGGNet.forward: expected input (N, ${this.options.inChannels}, H, W), got [${x.shape.join(', ')}]`);
    }
    if (h < 32 || w < 32) throw new Error(`VGGNet.forward: input is ${h}×${w}; VGG's five pools need at least 32×32`);
    if (x.device !== this.device) throw new Error(`VGGNet.forward: input is on ${x.device}, the model on ${this.device}`);
    // Entry: activations in the compute dtype, channels-last on the GPU, and the GPU's float32 math mode.
    if (this.device === 'cuda') ops.setCudaMathMode(this.precision);
    this.gradRows = isGradEnabled() ? n : undefined;
    let cur = x;
    const dt = this.precision === 'bf16' ? 'bfloat16' : 'float32';
    if (cur.dtype !== dt) cur = this.keep(ops.cast(cur, dt));
    // Tensor-core math (bf16, tf32) runs channels-last; strict fp32 stays NCHW, where cuDNN's FMA kernels live
    // (an H200 ran vgg16 b64 at 87 img/s in NHWC fp32 against 1466 in tf32; the NCHW fp32 rate is not yet measured).
    const layout = this.device === 'cuda' && this.precision !== 'fp32' ? 'nhwc' : 'nchw';
    if (cur.layout !== layout) cur = this.keep(ops.toLayout(cur, layout));
    cur = this.keep(this.features.forward(cur, { step }));
    return this.head(cur, step);
  }

  /**
   * The average pool and the classifier on a feature map (N, C, h, w) that did not come from this model's own
   * features, without gradients and in eval mode: int8 inference (Int8VGG) hands its dequantized features here.
   * Returns float32 logits; inside withFrozenWeights the pool-folded first layer serves small maps, as in forward.
   */
  forwardHead(features: Tensor): Tensor {
    tensorArg(features, 'VGGNet.forwardHead');
    if (isGradEnabled() || this.training) throw new Error('VGGNet.forwardHead: inference only: call it under noGrad, in eval mode');
    if (features.device !== this.device) throw new Error(`VGGNet.forwardHead: features are on ${features.device}, the model on ${this.device}`);
    this.freeActs();
    return this.head(features);
  }

  /** forward after the features: average pool (or the folded first layer), classifier, float32 logits. */
  private head(cur: Tensor, step?: ForwardOptions['step']): Tensor {
    let logits: Tensor;
    const folded = this.foldedClassifier(cur);
    if (folded) {
      // The pool and the first classifier layer as one smaller layer (see withFrozenWeights).
      cur = this.keep(this.flatten.forward(cur));
      const fc1 = this.classifier.layers[0] as Linear;
      const relu = this.classifier.layers[1] instanceof ReLU;
      cur = this.keep(ops.linearForward(cur, folded, fc1.bias?.value ?? null, relu));
      logits = this.classifier.forwardFrom(relu ? 2 : 1, cur);
    } else if (this.splitsHead(cur)) {
      // Training on a small map (see splitsHead): the pool and the first classifier layer with its ReLU run here,
      // folded into one layer (foldsInTraining) or not; the classifier goes on from its next layer, and backward
      // finishes the first layer here.
      const [n, c, h, w] = cur.shape;
      const [oh, ow] = this.avgpool.outputSize;
      const fc1 = this.classifier.layers[0] as Linear;
      const f = this.keep(nchwView(cur, [n, c * h * w])); // the weight's gradient comes from this map (splitsHead)
      const features = { shape: cur.shape, layout: cur.layout };
      const geometry: PoolGeometry = [c, h, w, oh, ow];
      const bias = fc1.bias?.value ?? null;
      if (this.foldsInTraining(cur)) {
        // While SGD defers this weight's update (lib/optim/deferred.ts) its fold comes from the deferral's small
        // tensors, the weight left as it is (fc1Fold).
        const wFold = this.fc1Fold(geometry, f.dtype);
        const prepared = wFold instanceof Tensor ? undefined : wFold;
        if (wFold instanceof Tensor) this.keep(wFold);
        try {
          const y = this.keep(ops.linearForward(f, wFold, bias, true));
          this.trainHead = { f, y, w: wFold, prepared, features, geometry, folded: true };
        } catch (e) {
          prepared?.dispose();
          throw e;
        }
      } else {
        const x = this.keep(ops.adaptiveAvgpool2dForward(cur, oh, ow));
        const prepared = x.dtype === 'float32' ? undefined : ops.linearWeights(fc1.weight.value, x.dtype);
        const flat = this.keep(x.view([n, c * oh * ow]));
        const y = this.keep(ops.linearForward(flat, prepared ?? fc1.weight.value, bias, true));
        this.trainHead = { f, y, w: fc1.weight.value, prepared, features, geometry, folded: false };
      }
      logits = this.classifier.forwardFrom(2, this.trainHead.y, { step });
    } else {
      cur = this.keep(this.avgpool.forward(cur));
      cur = this.keep(this.flatten.forward(cur));
      logits = this.classifier.forward(cur, { step });
    }
    this.childGenerations = [this.features, this.avgpool, this.flatten, this.classifier].map((c) => c.forwardGeneration);
    if (logits.dtype !== 'float32') {
      const f = ops.cast(logits, 'float32');
      if (isGradEnabled()) this.keep(logits);
      else logits.dispose();
      logits = f;
    }
    if (!isGradEnabled()) this.freeActs();
    return this.forwardDone(logits);
  }

  /**
   * Runs fn with this model's parameters taken as constants, so that what is derived from them is worked out once for
   * all of fn's forward passes instead of in each: evaluation loops and predict use it. Two such derivations:
   *  - a feature map smaller than the average pool's 7×7 output (inputs under 224²) is only repeated by the pool, so
   *    pool and first classifier layer are one linear map of the small map, and forwards without gradients multiply
   *    by that folded matrix (at 32² input 4 096 × 512 weights instead of 4 096 × 25 088; the fold itself costs
   *    about one pass of the big layer). Outputs equal the unfolded forward's up to float rounding (summation order);
   *  - in bf16, the classifier's weights converted for bf16 (ops.linearWeights) once, not in every forward.
   * fn must not change the parameters (optimizer steps, in-place ops on their tensors); loadStateDict inside fn is
   * allowed and drops what was derived. fn may be async: the derivations are kept until its promise settles.
   */
  withFrozenWeights<T>(fn: () => T): T {
    if (typeof fn !== 'function') throw new TypeError(`VGGNet.withFrozenWeights: expected a function, got ${fn === null ? 'null' : typeof fn}`);
    const outer = this.folds !== undefined;
    if (!outer) {
      this.folds = new Map();
      for (const l of this.linears()) l.holdPreparedWeights(true);
    }
    const end = () => {
      if (outer) return;
      this.clearFolds();
      this.folds = undefined;
      for (const l of this.linears()) l.holdPreparedWeights(false);
    };
    let r: T;
    try {
      r = fn();
    } catch (e) {
      end();
      throw e;
    }
    if (r instanceof Promise) return r.finally(end) as T;
    end();
    return r;
  }

  /**
   * Inside withFrozenWeights, without gradients: the first classifier layer folded with the pool for x's map size,
   * prepared for x's dtype.
   */
  private foldedClassifier(x: Tensor): Tensor | ops.PreparedLinearWeights | undefined {
    if (!this.folds || isGradEnabled()) return undefined;
    if (!this.poolFolds(x)) return undefined;
    const [, c, h, w] = x.shape;
    const [oh, ow] = this.avgpool.outputSize;
    const key = `${c}x${h}x${w}:${x.dtype}`;
    let f = this.folds.get(key);
    if (!f) {
      f = this.fc1Fold([c, h, w, oh, ow], x.dtype);
      this.folds.set(key, f);
    }
    return f;
  }

  /**
   * The first classifier layer's weight folded with the pool for this geometry, a new tensor: from the deferral's
   * small tensors while SGD defers that layer's update, else from the weight; for bf16 activations prepared for them
   * (the deferral makes it so directly, without the float32 fold).
   */
  private fc1Fold(geometry: PoolGeometry, dtype: DType): Tensor | ops.PreparedLinearWeights {
    const weight = (this.classifier.layers[0] as Linear).weight;
    if (dtype === 'bfloat16') {
      const prepared = weight.deferredPreparedFold(geometry, 'bfloat16');
      if (prepared) return prepared;
    }
    const folded = weight.deferredFold(geometry) ?? foldAdaptivePool(weight.value, ...geometry);
    if (dtype === 'float32') return folded;
    try {
      return ops.linearWeights(folded, dtype);
    } finally {
      folded.dispose();
    }
  }

  /**
   * Whether a forward with gradients on this feature map runs the pool and the first classifier layer (with its
   * ReLU) itself, instead of the modules: on the CPU, on maps the pool only repeats (at most 7 rows and columns,
   * fewer than 7×7 positions: inputs under 224²; VGGNET_POOLED_GRAD=0 turns it off). The layer's weight gradient is
   * then worked out from the small map, (out, c·h·w) instead of (out, c·7·7), and handed to the weight pooled
   * (Parameter.pooledGradForBackward): SGD pools it block by block as it updates the weight, so the whole gradient
   * (411 MB for VGG's 4096×25088) is neither written in backward nor read in the step; reading `.grad` works it out.
   * dW = dy·pool(x) = pool(dy·x), per (output, channel) plane, since the pool is linear: equal up to rounding.
   */
  private splitsHead(x: Tensor): boolean {
    if (!isGradEnabled() || this.device !== 'cpu' || process.env.VGGNET_POOLED_GRAD === '0') return false;
    const [, , h, w] = x.shape;
    const [oh, ow] = this.avgpool.outputSize;
    return h <= oh && w <= ow && this.poolFolds(x) && this.classifier.layers[1] instanceof ReLU;
  }

  /**
   * Whether splitsHead's first layer also folds the pool into its weight, as withFrozenWeights does without
   * gradients (VGGNET_TRAIN_FOLD=0 turns it off; =all folds every map). Forward and the input's gradient then multiply by the folded
   * (out, c·h·w) weight instead of the (out, c·7·7) one. Where SGD defers that layer's update (lib/optim/deferred.ts)
   * the fold comes from the deferral's small tensors: on every map splitsHead takes (up to 6×6, inputs up to 192²).
   * A distributed step defers too (DistributedDataParallel: the ranks gather that layer's rows, or all-reduce the
   * gradient pooled). Where SGD
   * does not defer (VGGNET_DEFERRED_SGD=0; ranks whose maps differ, which reduce the gradient whole), the fold is
   * worked out from the whole weight in each forward, which pays up to 3×3 (inputs up to 96²) only. Why:
   * ARCHITECTURE, "Folding the average pool" and "The folded layer's SGD, deferred".
   */
  private foldsInTraining(x: Tensor): boolean {
    if (process.env.VGGNET_TRAIN_FOLD === '0') return false;
    if (process.env.VGGNET_TRAIN_FOLD === 'all') return true; // every map, deferred or not (to compare the two)
    if (process.env.VGGNET_DEFERRED_SGD !== '0') return true;
    const [, , h, w] = x.shape;
    return h <= 3 && w <= 3;
  }

  /**
   * For DistributedDataParallel, after the forward of a training step and before its backward (else undefined): its
   * batch size, and the geometry [C, H, W, oh, ow] in which backward will hand the first classifier layer's weight
   * gradient over pooled (splitsHead; Parameter.pooledGradForBackward), undefined when whole. The ranks' collectives
   * in backward depend on both, so they agree on them first.
   */
  gradientForm(): { rows: number; pooled: PoolGeometry | undefined } | undefined {
    if (this.gradRows === undefined) return undefined;
    const g = this.trainHead?.geometry;
    const fc1 = this.classifier.layers[0] as Linear;
    return { rows: this.gradRows, pooled: g && fc1.weight.takesPooledGrad(g) ? [...g] : undefined };
  }

  /** Whether the average pool only repeats this feature map into a first classifier layer that can take its fold. */
  private poolFolds(x: Tensor): boolean {
    const [, c, h, w] = x.shape;
    const [oh, ow] = this.avgpool.outputSize;
    const fc1 = this.classifier.layers[0];
    return h * w < oh * ow && fc1 instanceof Linear && fc1.inFeatures === c * oh * ow;
  }

  /** Drops what withFrozenWeights derived from the weights: folds, and the classifier's prepared weights. */
  private clearFolds(): void {
    for (const t of this.folds?.values() ?? []) t.dispose();
    this.folds?.clear();
    for (const l of this.linears()) l.clearPreparedWeights();
  }

  private linears(): Linear[] {
    return this.classifier.layers.filter((l): l is Linear => l instanceof Linear);
  }

  /**
   * Backpropagates d loss / d logits, accumulating every parameter's gradient. In a distributed step (options.step)
   * each layer's gradients are handed to the all-reduce as soon as they are written (the classifier's first).
   */
  backward(gradLogits: Tensor, options?: BackwardOptions): undefined {
    return deferringMemoryReports(() => this.backwardInner(gradLogits, options));
  }

  private backwardInner(gradLogits: Tensor, options?: BackwardOptions): undefined {
    this.backwardStart(gradLogits, 'VGGNet');
    let g = gradLogits;
    const owned: Tensor[] = [];
    const step = (t: Tensor | undefined) => {
      if (!t) return;
      if (t !== g) owned.push(t);
      g = t;
    };
    if (this.precision === 'bf16') step(ops.cast(g, 'bfloat16'));
    const [features, avgpool, flatten, classifier] = this.childGenerations;
    markGradientFor(g, this.classifier, classifier);
    step(this.classifier.backward(g, options));
    const head = this.trainHead;
    if (head) {
      // The first classifier layer as the head's forward ran it (splitsHead): its ReLU's mask, its gradients from
      // the small map, and the feature map's gradient through the folded weight, or through the weight and the pool.
      const fc1 = this.classifier.layers[0] as Linear;
      step(ops.reluBackward(g, head.y));
      pooledLinearGrads(fc1, head.f, g, head.geometry, head.folded, options?.step);
      options?.step?.distributed?.gradientsReady(fc1.ownParameters().map(([, p]) => p));
      if (head.folded) {
        step(ops.linearBackwardData(g, head.w));
        step(g.view(head.features.shape));
        step(ops.toLayout(g, head.features.layout));
      } else {
        const [n, c, , , oh, ow] = [head.features.shape[0], ...head.geometry];
        step(ops.linearBackwardData(g, head.prepared ?? head.w));
        step(g.view([n, c, oh, ow]));
        step(ops.adaptiveAvgpool2dBackward(g, head.features.shape, head.features.layout));
      }
    } else {
      markGradientFor(g, this.flatten, flatten);
      step(this.flatten.backward(g));
      markGradientFor(g, this.avgpool, avgpool);
      step(this.avgpool.backward(g));
    }
    markGradientFor(g, this.features, features);
    step(this.features.backward(g, options)); // undefined: the first conv skips the image's gradient
    for (const t of owned) t.dispose();
    this.freeActs();
    return undefined;
  }

  /** Parameters with torchvision's names, gradients included. */
  parameters(): ParameterInfo[] {
    return this.namedParameters().map(({ name, param }: NamedParameter) => ({
      name,
      param,
      get value() {
        return param.value;
      },
      get grad() {
        return param.grad;
      },
    }));
  }

  zeroGrad(): void {
    for (const { param } of this.namedParameters()) param.zeroGrad();
  }

  /** Parameters and buffers by torchvision name (tensors are the model's own; do not dispose them). */
  stateDict(): StateRecord {
    const out: StateRecord = {};
    for (const { name, param } of this.namedParameters()) out[name] = param.value;
    for (const [name, b] of this.namedBuffers()) out[name] = b instanceof Counter ? b.value : b;
    return out;
  }

  /**
   * Loads a state dict: a .pth/.pt (torch.save) or .safetensors path, or a record. Missing, extra or mis-shaped
   * entries are errors, except that a batch norm's missing `num_batches_tracked` is 0, as PyTorch's BatchNorm2d loads
   * state dicts saved before it had one (torchvision's *_bn files).
   */
  loadStateDict(source: string | StateRecord, options: { strict?: boolean } = {}): void {
    if (typeof source !== 'string' && (typeof source !== 'object' || source === null || Array.isArray(source))) {
      const got = source === null ? 'null' : Array.isArray(source) ? 'an array' : typeof source;
      throw new TypeError(`VGGNet.loadStateDict: expected a file path (.pth, .pt, .safetensors) or a record of tensors by name, got ${got}`);
    }
    const record = typeof source === 'string' ? readStateDict(source) : source;
    this.clearFolds(); // derived from the weights being replaced
    try {
      loadStateDictInto(this, withBatchCounters(this, record), { strict: options.strict ?? true, source: typeof source === 'string' ? source : 'state dict' });
    } finally {
      if (typeof source === 'string') for (const v of Object.values(record)) if (v instanceof Tensor) v.dispose();
    }
  }

  /** Writes the state dict: torch.save's format for .pth/.pt (torch.load reads it), else safetensors (with metadata). */
  saveStateDict(path: string, metadata: Record<string, string> = {}): void {
    writeStateDict(path, this.stateDict(), metadata);
  }

  /** Writes the eval-mode network as an ONNX model (opset 17, dynamic batch axis); see lib/io/onnx.ts. */
  exportOnnx(path: string, options: OnnxExportOptions = {}): void {
    exportOnnx(this, path, options);
  }

  /** Class probabilities (softmax of the logits) for a batch, in eval mode; the model's mode is restored. */
  predict(images: Tensor): Float32Array[] {
    tensorArg(images, 'VGGNet.predict');
    const wasTraining = this.training;
    this.eval();
    try {
      const logits = noGrad(() => this.forward(images));
      try {
        return softmaxRows(logits);
      } finally {
        logits.dispose();
      }
    } finally {
      this.train(wasTraining);
    }
  }

  /** The number of learnable scalars. */
  numParameters(): number {
    return this.namedParameters().reduce((a, { param }) => a + param.shape.reduce((x, y) => x * y, 1), 0);
  }

  protected dropSaved(): void {
    super.dropSaved();
    this.freeActs();
  }

  private keep(t: Tensor): Tensor {
    this.acts.push(t);
    return t;
  }
  private freeActs(): void {
    for (const t of this.acts) t.dispose();
    this.acts = [];
    this.trainHead?.prepared?.dispose();
    this.trainHead = undefined;
    this.gradRows = undefined;
  }
}

/** The softmax of each row of float32 logits (N, C), with the row's max subtracted first. */
export function softmaxRows(logits: Tensor): Float32Array[] {
  const [n, c] = logits.shape;
  const l = logits.toArray() as Float32Array;
  const out: Float32Array[] = [];
  for (let i = 0; i < n; i++) {
    const row = l.subarray(i * c, (i + 1) * c);
    const m = Math.max(...row);
    const e = Float32Array.from(row, (v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    out.push(e.map((v) => v / s));
  }
  return out;
}

/** The record with `<bn>.num_batches_tracked` = 0 added where a batch norm's running_mean is present but it is not. */
function withBatchCounters(model: VGGNet, record: StateRecord): StateRecord {
  const out = { ...record };
  for (const [name, b] of model.namedBuffers()) {
    if (!(b instanceof Counter) || name in out) continue;
    const mean = name.replace(/num_batches_tracked$/, 'running_mean');
    if (mean in out) out[name] = 0n;
  }
  return out;
}

export type VGGFactoryOptions = VGGOptions;
const make = (cfg: keyof typeof cfgs, name: string) => (options: VGGOptions = {}) =>
  new VGGNet(cfgs[cfg], options, `${name}${options.batchNorm ? '_bn' : ''}`);
export const vgg11 = make('A', 'vgg11');
export const vgg13 = make('B', 'vgg13');
export const vgg16 = make('D', 'vgg16');
export const vgg19 = make('E', 'vgg19');
export const models = { vgg11, vgg13, vgg16, vgg19 };
export type ModelName = keyof typeof models;
