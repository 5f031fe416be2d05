// int8 inference on the CPU: post-training static quantization of a VGGNet (native/cpu/int8.cc).
//
// Each conv (its batch norm folded in, as eval mode computes it) runs oneDNN's int8 kernel: activations are uint8
// with one scale per tensor (after a ReLU they are >= 0), the input image int8 (normalised pixels are signed; on CPUs
// without VNNI the first conv stays float32, see quantizeStages), weights int8 with one scale per output channel,
// products summed exactly in int32 and requantized to the next layer's scale with the ReLU fused; max pools pool the
// uint8 maps. The classifier's linear layers run oneDNN's int8 inner product on the flattened map (the first one's
// weight folded with the average pool for maps under 7×7, as VGGNet.withFrozenWeights does, and its columns put in
// the map's (h, w, c) order), the hidden ones requantized to uint8, the last one's logits float32; maps over 7×7, or
// a classifier of other layers, take the float32 head (VGGNet.forwardHead) on the dequantized map. The scales come
// from calibration: float32 forwards of sample images through the same folded layers, each scale = the largest
// magnitude seen at that point / 255 (the input's / 127). They are data, like weights: save them (`scales`) and
// rebuild with `Int8VGG.fromScales` to predict without calibrating again.
import { Tensor } from '../tensor';
import * as ops from '../ops';
import { noGrad } from '../nn/module';
import { BatchNorm2d, Conv2d, Dropout, Linear, MaxPool2d, ReLU } from '../nn/layers';
import { VGGNet, foldAdaptivePool, softmaxRows } from './vgg';

/** A calibrated model's scales: the input's, one per conv output (in the features' order), one per hidden linear layer. */
export interface Int8Scales {
  format: 'vggnet-int8-scales/1';
  /** The model's name (e.g. vgg16_bn) and its convs' output channels, checked when the scales are applied. */
  model: string;
  channels: number[];
  /** int8 step of the input image: its calibration max |x| / 127. */
  input: number;
  /** uint8 step of each conv's (ReLU'd) output: its calibration maximum / 255. */
  activations: number[];
  /** uint8 step of each hidden linear layer's (ReLU'd) output; empty when the classifier runs in float32. */
  classifier: number[];
}

/** A classifier layer as int8 runs it: the Linear, and whether a ReLU follows (every hidden one's does). */
interface HeadLayer {
  linear: Linear;
  relu: boolean;
}
/** One map size's int8 classifier weights (the first layer's fold and column order depend on it). */
type HeadWeights = ops.Int8ConvWeights[];

// A conv's folded float32 weight `w` serves calibration and a conv that stays float32; once quantized (`q`) it is freed.
type Stage =
  | { kind: 'conv'; params: ops.Conv2dParams; w?: Tensor; b: Tensor; q?: ops.Int8ConvWeights }
  | { kind: 'pool'; params: ops.Pool2dParams };

/** Conv2d [BatchNorm2d] ReLU and MaxPool2d stages of the features, each conv with its batch norm folded in. */
function foldedStages(model: VGGNet): Stage[] {
  const layers = model.features.layers;
  const stages: Stage[] = [];
  for (let i = 0; i < layers.length; i++) {
    const l = layers[i];
    if (l instanceof MaxPool2d) {
      stages.push({ kind: 'pool', params: l.params });
      continue;
    }
    if (!(l instanceof Conv2d)) throw new Error(`Int8VGG: features[${i}] is a ${l.constructor.name}; int8 inference knows Conv2d [BatchNorm2d] ReLU and MaxPool2d`);
    const bn = layers[i + 1] instanceof BatchNorm2d ? (layers[i + 1] as BatchNorm2d) : undefined;
    const relu = layers[i + (bn ? 2 : 1)];
    if (!(relu instanceof ReLU)) throw new Error(`Int8VGG: features[${i}] (Conv2d) is not followed by ${bn ? 'BatchNorm2d and ' : ''}ReLU; its output would not be >= 0, as uint8 activations need`);
    stages.push({ kind: 'conv', params: l.params, ...foldBatchNorm(l, bn) });
    i += bn ? 2 : 1;
  }
  return stages;
}

/** The conv's weight and bias with eval-mode batch norm folded in (float64 arithmetic, float32 result). */
function foldBatchNorm(conv: Conv2d, bn: BatchNorm2d | undefined): { w: Tensor; b: Tensor } {
  const w = conv.weight.value.toFloat32();
  const K = conv.outChannels;
  const b = conv.bias ? conv.bias.value.toFloat32() : new Float32Array(K);
  if (bn) {
    const [g, beta, mean, v] = [bn.weight.value, bn.bias.value, bn.runningMean, bn.runningVar].map((t) => t.toFloat32());
    const per = w.length / K;
    for (let k = 0; k < K; k++) {
      const f = g[k] / Math.sqrt(v[k] + bn.eps);
      for (let i = 0; i < per; i++) w[k * per + i] *= f;
      b[k] = (b[k] - mean[k]) * f + beta[k];
    }
  }
  return { w: Tensor.from(w, conv.weight.value.shape), b: Tensor.from(b, [K]) };
}

const scaleOf = (max: number) => (max > 0 ? max / 255 : 1);

function checkModel(model: VGGNet): void {
  if (!(model instanceof VGGNet)) throw new TypeError('Int8VGG: expected a VGGNet');
  if (model.device !== 'cpu') throw new Error(`Int8VGG: int8 inference runs on the CPU; the model is on ${model.device}`);
  if (model.precision !== 'fp32') throw new Error(`Int8VGG: quantize a float32 model (precision 'fp32'); this one computes in ${model.precision}`);
}

/**
 * The classifier as Linear [ReLU] [Dropout] ... layers (torchvision's: Linear ReLU Dropout Linear ReLU Dropout Linear;
 * dropout is the identity in eval mode), every Linear but the last followed by a ReLU so that its output is >= 0;
 * undefined for any other classifier, which then runs in float32.
 */
function headPlan(model: VGGNet): HeadLayer[] | undefined {
  const plan: HeadLayer[] = [];
  for (const l of model.classifier.layers) {
    if (l instanceof Linear) plan.push({ linear: l, relu: false });
    else if (l instanceof ReLU && plan.length && !plan[plan.length - 1].relu) plan[plan.length - 1].relu = true;
    else if (!(l instanceof Dropout)) return undefined;
  }
  if (!plan.length || plan.slice(0, -1).some((h) => !h.relu)) return undefined;
  return plan;
}

function identity(model: VGGNet): { model: string; channels: number[] } {
  const channels = model.features.layers.filter((l): l is Conv2d => l instanceof Conv2d).map((c) => c.outChannels);
  return { model: model.options.name ?? (model.options.batchNorm ? 'vgg_bn' : 'vgg'), channels };
}

/** A VGGNet quantized for int8 inference on the CPU (see the top of this file); `predict --precision int8` runs it. */
export class Int8VGG {
  readonly scales: Int8Scales;
  private readonly stages: Stage[];
  private readonly head: HeadLayer[] | undefined;
  /** int8 classifier weights per feature-map size (C×h×w). */
  private readonly headWeights = new Map<string, HeadWeights>();
  private disposed = false;

  private constructor(readonly model: VGGNet, stages: Stage[], scales: Int8Scales) {
    this.stages = stages;
    this.scales = scales;
    this.head = scales.classifier.length ? headPlan(model) : undefined;
  }

  /**
   * Quantizes `model` (a float32 CPU VGGNet; it stays the caller's and must outlive this: its weights are copied
   * when quantized, the convolutions' here and the classifier's at the first forward of each input size, and the
   * float32 head of inputs over 224² reads them live, so a model whose weights change needs a new Int8VGG) with
   * scales measured on `batches`: normalised images (N, 3, H, W) as the model's own preprocessing makes them, the
   * more representative of what will be predicted the better (a few hundred training images). The batches are the
   * caller's.
   */
  static async calibrate(model: VGGNet, batches: Iterable<Tensor> | AsyncIterable<Tensor>): Promise<Int8VGG> {
    checkModel(model);
    const stages = foldedStages(model);
    try {
      const convs = stages.filter((s) => s.kind === 'conv').length;
      const max = new Array<number>(convs).fill(0);
      const head = headPlan(model);
      const headMax = new Array<number>(head ? head.length - 1 : 0).fill(0);
      let images = 0, input = 0;
      for await (const x of batches) {
        if (!(x instanceof Tensor)) throw new TypeError('Int8VGG.calibrate: expected batches of image tensors');
        images += x.shape[0] ?? 0;
        const m = ops.absMax(x);
        if (!Number.isFinite(m)) throw new Error('Int8VGG.calibrate: a calibration image holds a NaN or an infinity');
        input = Math.max(input, m);
        noGrad(() => {
          const last = floatFeatures(stages, x, (i, y) => {
            const m = ops.absMax(y);
            if (Number.isNaN(m)) throw new Error(`Int8VGG.calibrate: conv ${i} of the features gave NaN on the calibration images`);
            max[i] = Math.max(max[i], m);
          });
          try {
            if (head) floatHead(model, head, last, (i, y) => (headMax[i] = Math.max(headMax[i], ops.absMax(y))));
          } finally {
            last.dispose();
          }
        });
      }
      if (images === 0) throw new Error('Int8VGG.calibrate: no calibration images');
      const scales: Int8Scales = {
        format: 'vggnet-int8-scales/1', ...identity(model), input: input > 0 ? input / 127 : 1, activations: max.map(scaleOf),
        classifier: headMax.map(scaleOf),
      };
      return new Int8VGG(model, quantizeStages(stages), scales);
    } catch (e) {
      disposeStages(stages);
      throw e;
    }
  }

  /**
   * Rebuilds a calibrated model from its saved `scales`. They belong to the weights they were measured with: the
   * network's name and widths are checked, the weights cannot be.
   */
  static fromScales(model: VGGNet, scales: Int8Scales): Int8VGG {
    checkModel(model);
    if (scales?.format !== 'vggnet-int8-scales/1') throw new Error(`Int8VGG.fromScales: expected scales of format vggnet-int8-scales/1, got ${JSON.stringify(scales?.format)}`);
    const stages = foldedStages(model);
    const convs = stages.filter((s) => s.kind === 'conv').length;
    const a = scales.activations, c = scales.classifier;
    const id = identity(model);
    const hidden = (headPlan(model)?.length ?? 1) - 1;
    const bad = !Array.isArray(a) || a.length !== convs ? `${Array.isArray(a) ? a.length : 'no'} activation scales for ${convs} convs`
      : !Array.isArray(c) || (c.length !== hidden && c.length !== 0) ? `${Array.isArray(c) ? c.length : 'no'} classifier scales for ${hidden} hidden layers`
        : scales.model !== id.model || String(scales.channels) !== String(id.channels)
          ? `they are for ${scales.model} with conv widths [${String(scales.channels)}], the model is ${id.model} with [${String(id.channels)}]`
          : [scales.input, ...a, ...c].findIndex((v) => !(typeof v === 'number' && Number.isFinite(v) && v > 0)) >= 0 ? 'a scale is not a finite number > 0' : '';
    if (bad) {
      disposeStages(stages);
      throw new Error(`Int8VGG.fromScales: ${bad}`);
    }
    return new Int8VGG(model, quantizeStages(stages), { format: scales.format, ...id, input: scales.input, activations: [...a], classifier: [...c] });
  }

  /** float32 logits (N, classes) of normalised images (N, 3, H, W), as VGGNet.forward in eval mode without gradients. */
  forward(x: Tensor): Tensor {
    if (this.disposed) throw new Error('Int8VGG: disposed');
    if (!(x instanceof Tensor)) throw new TypeError('Int8VGG.forward: expected an image tensor (N, 3, H, W)');
    if (x.device !== 'cpu') throw new Error(`Int8VGG.forward: input is on ${x.device}; int8 inference runs on the CPU`);
    const [, c, h, w] = x.shape;
    if (x.shape.length !== 4 || c !== this.model.options.inChannels || h < 32 || w < 32) {
      throw new Error(`Int8VGG.forward: expected images (N, ${this.model.options.inChannels}, H >= 32, W >= 32), got [${x.shape.join(', ')}]`);
    }
    const wasTraining = this.model.training;
    this.model.eval();
    try {
      return noGrad(() => this.model.withFrozenWeights(() => {
        const { map, scale } = this.int8Features(x);
        try {
          const hw = this.head && this.headWeightsFor(map.shape);
          if (!hw) {
            const features = ops.dequantizeU8(map, scale);
            try {
              return this.model.forwardHead(features);
            } finally {
              features.dispose();
            }
          }
          return this.int8Head(map, scale, hw);
        } finally {
          map.dispose();
        }
      }));
    } finally {
      this.model.train(wasTraining);
    }
  }

  /** Class probabilities (softmax of the logits) per image. */
  predict(images: Tensor): Float32Array[] {
    const logits = this.forward(images);
    try {
      return softmaxRows(logits);
    } finally {
      logits.dispose();
    }
  }

  /** Frees the quantized weights (the float model is the caller's). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    disposeStages(this.stages);
    for (const ws of this.headWeights.values()) for (const w of ws) disposeWeights(w);
    this.headWeights.clear();
  }

  /**
   * The int8 classifier's weights for a feature map (N, C, h, w), made on first use: undefined when the map is over
   * 7×7 (the average pool then averages overlapping windows; the float32 head does that).
   */
  private headWeightsFor(shape: number[]): HeadWeights | undefined {
    const [, c, h, w] = shape;
    const [oh, ow] = this.model.avgpool.outputSize;
    if (h * w > oh * ow || (h * w === oh * ow && (h !== oh || w !== ow))) return undefined;
    const key = `${c}x${h}x${w}`;
    let ws = this.headWeights.get(key);
    if (ws) return ws;
    const plan = this.head!;
    const first = plan[0].linear;
    // The first layer: folded with the pool below 7×7 (VGGNet.withFrozenWeights), columns from (c, h, w) to (h, w, c).
    const folded = h * w < oh * ow ? foldAdaptivePool(first.weight.value, c, h, w, oh, ow) : undefined;
    let w1: Tensor | undefined;
    try {
      const src = (folded ?? first.weight.value).toFloat32();
      const out = first.outFeatures, hw = h * w, dst = new Float32Array(src.length);
      for (let o = 0; o < out; o++) {
        const row = o * c * hw;
        for (let ch = 0; ch < c; ch++) for (let p = 0; p < hw; p++) dst[row + p * c + ch] = src[row + ch * hw + p];
      }
      w1 = Tensor.from(dst, [out, c * hw, 1, 1]);
      ws = [ops.quantizeConvWeights(w1)];
    } finally {
      folded?.dispose();
      w1?.dispose();
    }
    for (const { linear } of plan.slice(1)) {
      const v = linear.weight.value.view([linear.outFeatures, linear.inFeatures, 1, 1]);
      try {
        ws.push(ops.quantizeConvWeights(v));
      } finally {
        v.dispose();
      }
    }
    this.headWeights.set(key, ws);
    return ws;
  }

  /** The classifier in int8 on the uint8 map: float32 logits (N, classes). */
  private int8Head(map: Tensor, scale: number, ws: HeadWeights): Tensor {
    const plan = this.head!;
    let cur: Tensor | undefined = ops.int8Flatten(map);
    let s = scale;
    try {
      for (let i = 0; i < plan.length; i++) {
        const last = i === plan.length - 1;
        const ys = last ? 0 : this.scales.classifier[i];
        const y = ops.int8LinearForward(cur, s, ws[i], plan[i].linear.bias?.value ?? null, ys, plan[i].relu);
        cur.dispose();
        cur = y;
        s = ys;
      }
      const logits = cur;
      cur = undefined;
      return logits;
    } finally {
      cur?.dispose();
    }
  }

  /** The features in int8: the last uint8 map (N, C, h, w, nhwc) and its scale. */
  private int8Features(x: Tensor): { map: Tensor; scale: number } {
    const a = this.scales.activations;
    let cur: Tensor | undefined;
    let scale = 0;
    let conv = 0;
    const swap = (t: Tensor) => {
      cur?.dispose();
      cur = t;
    };
    try {
      for (const s of this.stages) {
        if (s.kind === 'pool') {
          swap(ops.maxpool2dForward(cur!, s.params, false).y);
        } else if (s.q) {
          // The first conv's input is the image quantized to int8 (VNNI CPUs: see quantizeStages).
          if (!cur) {
            cur = ops.quantize(x, this.scales.input, 'int8');
            scale = this.scales.input;
          }
          swap(ops.int8Conv2dForward(cur, scale, s.q, s.b, s.params, a[conv], true));
          scale = a[conv++];
        } else {
          // The first conv in float32, its ReLU'd output quantized.
          const xf = x.dtype === 'float32' ? x : ops.cast(x, 'float32');
          try {
            const y = ops.conv2dForward(xf, s.w!, s.b, { ...s.params, cpuBlockedOutput: true }, true);
            try {
              swap(ops.quantize(y, a[conv]));
            } finally {
              y.dispose();
            }
          } finally {
            if (xf !== x) xf.dispose();
          }
          scale = a[conv++];
        }
      }
      const map = cur!;
      cur = undefined;
      return { map, scale };
    } finally {
      cur?.dispose();
    }
  }
}

/**
 * Every conv's int8 weights, the first conv's only where oneDNN multiplies int8 by int8 exactly: with VNNI or AMX.
 * Without, its s8 × s8 kernels halve the weights (losing a bit: 2.3 % of the max-abs in test/ops/cpu_int8.test.ts),
 * so the first conv stays float32 there, its output quantized.
 */
function quantizeStages(stages: Stage[]): Stage[] {
  const signedInput = ops.int8WeightMax() === 127;
  let first = true;
  for (const s of stages) {
    if (s.kind !== 'conv') continue;
    if (!first || signedInput) {
      s.q = ops.quantizeConvWeights(s.w!);
      s.w!.dispose();
      s.w = undefined;
    }
    first = false;
  }
  return stages;
}

function disposeStages(stages: Stage[]): void {
  for (const s of stages) {
    if (s.kind !== 'conv') continue;
    s.w?.dispose();
    s.b.dispose();
    if (s.q) disposeWeights(s.q);
  }
}

function disposeWeights(w: ops.Int8ConvWeights): void {
  w.q.dispose();
  w.scales.dispose();
  w.prepared?.dispose();
}

/**
 * The classifier in float32 on the float features (calibration), through the model's average pool and linear
 * layers, `seen(i, y)` told each hidden layer's ReLU'd output.
 */
function floatHead(model: VGGNet, plan: HeadLayer[], features: Tensor, seen: (i: number, y: Tensor) => void): void {
  const [oh, ow] = model.avgpool.outputSize;
  const pooled = ops.adaptiveAvgpool2dForward(features, oh, ow);
  let cur = pooled.view([pooled.shape[0], pooled.numel / pooled.shape[0]]);
  pooled.dispose();
  try {
    for (let i = 0; i < plan.length - 1; i++) {
      const { linear, relu } = plan[i];
      const y = ops.linearForward(cur, linear.weight.value, linear.bias?.value ?? null, relu);
      cur.dispose();
      cur = y;
      seen(i, cur);
    }
  } finally {
    cur.dispose();
  }
}

/** The features in float32 through the folded convs, `seen(i, y)` told each conv's ReLU'd output; returns the last map. */
function floatFeatures(stages: Stage[], x: Tensor, seen: (conv: number, y: Tensor) => void): Tensor {
  let cur = x.dtype === 'float32' ? x : ops.cast(x, 'float32');
  let conv = 0;
  const swap = (t: Tensor) => {
    if (cur !== x) cur.dispose();
    cur = t;
  };
  try {
    for (const s of stages) {
      if (s.kind === 'pool') {
        swap(ops.maxpool2dForward(cur, s.params, false).y);
      } else {
        swap(ops.conv2dForward(cur, s.w!, s.b, { ...s.params, cpuBlockedOutput: true }, true));
        seen(conv++, cur);
      }
    }
    if (cur === x) throw new Error('Int8VGG: the features have no layers');
    const last = cur;
    cur = x;
    return last;
  } finally {
    if (cur !== x) cur.dispose();
  }
}
