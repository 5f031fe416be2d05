// int8 inference on the CPU: post-training static quantization of a VGGNet's convolutions (native/cpu/int8.cc).
//
// Each conv (its batch norm folded in, as eval mode computes it) runs oneDNN's int8 kernel: activations are uint8
// with one scale per tensor (after a ReLU they are >= 0), the input image int8 (normalised pixels are signed; on
// CPUs without VNNI the first conv stays float32, see quantizeStages), weights int8 with one scale per output channel, products summed exactly in int32 and requantized to the next
// layer's scale with the ReLU fused; max pools pool the uint8 maps; the last map is dequantized and the model's own
// average pool and classifier (float32) finish. The scales come from calibration: float32 forwards of sample images
// through the same folded convolutions, each scale = the largest magnitude seen at that point / 255 (the input's /
// 127). They are data, like weights: save them (`scales`) and rebuild with `Int8VGG.fromScales` to predict without
// calibrating again.
import { Tensor } from '../tensor';
import * as ops from '../ops';
import { noGrad } from '../nn/module';
import { BatchNorm2d, Conv2d, MaxPool2d, ReLU } from '../nn/layers';
import { VGGNet, softmaxRows } from './vgg';

/** The activation scales of a calibrated model: one per conv output, in the order of the features' convs. */
export interface Int8Scales {
  format: 'vggnet-int8-scales/1';
  /** The model's name (e.g. vgg16_bn) and its convs' output channels, checked when the scales are applied. */
  model: string;
  channels: number[];
  /** int8 step of the input image: its calibration max |x| / 127. */
  input: number;
  /** uint8 step of each conv's (ReLU'd) output: its calibration maximum / 255. */
  activations: number[];
}

type Stage =
  | { kind: 'conv'; params: ops.Conv2dParams; w: Tensor; b: Tensor; q?: ops.Int8ConvWeights }
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

function identity(model: VGGNet): { model: string; channels: number[] } {
  const channels = model.features.layers.filter((l): l is Conv2d => l instanceof Conv2d).map((c) => c.outChannels);
  return { model: model.options.name ?? (model.options.batchNorm ? 'vgg_bn' : 'vgg'), channels };
}

export class Int8VGG {
  readonly scales: Int8Scales;
  private readonly stages: Stage[];
  private disposed = false;

  private constructor(readonly model: VGGNet, stages: Stage[], scales: Int8Scales) {
    this.stages = stages;
    this.scales = scales;
  }

  /**
   * Quantizes `model` (a float32 CPU VGGNet; it stays the caller's and must outlive this: its classifier serves the
   * int8 forward, while the convolutions are copied, so later changes to their weights need a new Int8VGG) with
   * activation scales measured on
   * `batches`: normalised images (N, 3, H, W) as the model's own preprocessing makes them, the more representative
   * of what will be predicted the better (a few hundred training images). The batches are the caller's.
   */
  static async calibrate(model: VGGNet, batches: Iterable<Tensor> | AsyncIterable<Tensor>): Promise<Int8VGG> {
    checkModel(model);
    const stages = foldedStages(model);
    try {
      const convs = stages.filter((s) => s.kind === 'conv').length;
      const max = new Array<number>(convs).fill(0);
      let images = 0, input = 0;
      for await (const x of batches) {
        if (!(x instanceof Tensor)) throw new TypeError('Int8VGG.calibrate: expected batches of image tensors');
        images += x.shape[0] ?? 0;
        const m = ops.absMax(x);
        if (!Number.isFinite(m)) throw new Error('Int8VGG.calibrate: a calibration image holds a NaN or an infinity');
        input = Math.max(input, m);
        noGrad(() => floatFeatures(stages, x, (i, y) => {
          const m = ops.absMax(y);
          if (Number.isNaN(m)) throw new Error(`Int8VGG.calibrate: conv ${i} of the features gave NaN on the calibration images`);
          max[i] = Math.max(max[i], m);
        }));
      }
      if (images === 0) throw new Error('Int8VGG.calibrate: no calibration images');
      const scales: Int8Scales = { format: 'vggnet-int8-scales/1', ...identity(model), input: input > 0 ? input / 127 : 1, activations: max.map(scaleOf) };
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
    const a = scales.activations;
    const id = identity(model);
    const bad = !Array.isArray(a) || a.length !== convs ? `${Array.isArray(a) ? a.length : 'no'} activation scales for ${convs} convs`
      : scales.model !== id.model || String(scales.channels) !== String(id.channels)
        ? `they are for ${scales.model} with conv widths [${String(scales.channels)}], the model is ${id.model} with [${String(id.channels)}]`
        : [scales.input, ...a].findIndex((v) => !(typeof v === 'number' && Number.isFinite(v) && v > 0)) >= 0 ? 'a scale (input or activation) is not a finite number > 0' : '';
    if (bad) {
      disposeStages(stages);
      throw new Error(`Int8VGG.fromScales: ${bad}`);
    }
    return new Int8VGG(model, quantizeStages(stages), { format: scales.format, ...id, input: scales.input, activations: [...a] });
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
        const features = this.int8Features(x);
        try {
          return this.model.forwardHead(features);
        } finally {
          features.dispose();
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
  }

  /** The features in int8, dequantized to float32 (N, C, h, w). */
  private int8Features(x: Tensor): Tensor {
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
            const y = ops.conv2dForward(xf, s.w, s.b, { ...s.params, cpuBlockedOutput: true }, true);
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
      return ops.dequantizeU8(cur!, scale);
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
    if (!first || signedInput) s.q = ops.quantizeConvWeights(s.w);
    first = false;
  }
  return stages;
}

function disposeStages(stages: Stage[]): void {
  for (const s of stages) {
    if (s.kind !== 'conv') continue;
    s.w.dispose();
    s.b.dispose();
    s.q?.q.dispose();
    s.q?.scales.dispose();
    s.q?.prepared?.dispose();
  }
}

/** The features in float32 through the folded convs, `seen(i, y)` told each conv's ReLU'd output; the last map is disposed. */
function floatFeatures(stages: Stage[], x: Tensor, seen: (conv: number, y: Tensor) => void): void {
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
        swap(ops.conv2dForward(cur, s.w, s.b, { ...s.params, cpuBlockedOutput: true }, true));
        seen(conv++, cur);
      }
    }
  } finally {
    if (cur !== x) cur.dispose();
  }
}
