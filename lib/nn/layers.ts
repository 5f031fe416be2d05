// The layers of VGG, each a forward and a backward over the addon's ops, with torchvision's parameter names.
import { DType, Layout, Tensor } from '../tensor';
import * as ops from '../ops';
import {
  BackwardOptions, Counter, ForwardOptions, Module, Parameter, disposeAll, gradsForBackward, isGradEnabled,
  markGradientFor, StepContext, tensorArg,
} from './module';
import type { NativeGroup } from '../native';

/** A size argument of a layer: an integer >= min, else a RangeError (TypeError for a non-number) naming it. */
function sizeArg(v: unknown, what: string, min = 1): number {
  if (typeof v !== 'number') throw new TypeError(`${what} must be an integer >= ${min}, got ${v === null ? 'null' : typeof v}`);
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${what} must be an integer >= ${min}, got ${v}`);
  return v;
}

function requireSaved<T>(v: T | undefined, layer: string): T {
  if (v === undefined) throw new Error(`${layer}.backward: no forward (with gradients enabled) to go back through`);
  return v;
}

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  bias?: boolean;
  device?: 'cpu' | 'cuda';
}

export class Conv2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | undefined;
  readonly params: ops.Conv2dParams;
  /** False for a network's first layer: the image's gradient is not needed, so backward skips it. */
  computeInputGrad = true;
  private x: Tensor | undefined;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    options: Conv2dOptions = {},
  ) {
    super();
    sizeArg(inChannels, 'Conv2d: inChannels');
    sizeArg(outChannels, 'Conv2d: outChannels');
    sizeArg(kernelSize, 'Conv2d: kernelSize');
    const device = options.device ?? 'cpu';
    const stride = sizeArg(options.stride ?? 1, 'Conv2d: stride');
    const pad = sizeArg(options.padding ?? 0, 'Conv2d: padding', 0);
    this.params = { strideH: stride, strideW: stride, padH: pad, padW: pad };
    this.weight = new Parameter(Tensor.zeros([outChannels, inChannels, kernelSize, kernelSize], { device }));
    this.bias = options.bias === false ? undefined : new Parameter(Tensor.zeros([outChannels], { device }));
  }

  ownParameters(): [string, Parameter][] {
    return this.bias ? [['weight', this.weight], ['bias', this.bias]] : [['weight', this.weight]];
  }

  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    tensorArg(x, 'Conv2d.forward');
    this.x = isGradEnabled() ? x : undefined;
    return this.forwardDone(ops.conv2dForward(x, this.weight.value, this.bias?.value ?? null, this.params, options.fuseRelu ?? false));
  }

  backward(dy: Tensor): Tensor | undefined {
    this.backwardStart(dy, 'Conv2d');
    const x = requireSaved(this.x, 'Conv2d');
    const { grads: [dw, db], accumulate } = gradsForBackward([this.weight, this.bias]);
    ops.conv2dBackwardWeights(x, dy, this.params, dw!, db, accumulate);
    this.x = undefined;
    return this.computeInputGrad ? ops.conv2dBackwardData(dy, this.weight.value, x.shape, this.params) : undefined;
  }

  protected dropSaved(): void {
    this.x = undefined;
  }
}

export class ReLU extends Module {
  private y: Tensor | undefined;
  private ownsY = false;
  /**
   * Backward passes dy through: fused behind a BatchNorm2d, whose backward applies this ReLU's mask, or in front
   * of a MaxPool2d that applies it on its pooled map (MaxPool2d.masksRelu).
   */
  private maskedElsewhere = false;

  forward(x: Tensor): Tensor {
    tensorArg(x, 'ReLU.forward');
    this.dropSaved();
    const y = ops.reluForward(x);
    if (isGradEnabled()) {
      this.y = y;
      this.ownsY = false; // the output belongs to whoever receives it; we only read it in backward
    }
    return this.forwardDone(y);
  }

  /**
   * The previous layer already applied max(0, ·): pass x through and remember it as the output. With
   * `maskedByPrev` the previous layer's backward also applies this ReLU's mask, so backward passes dy through.
   */
  forwardFused(y: Tensor, maskedByPrev = false): Tensor {
    this.dropSaved();
    if (isGradEnabled()) {
      this.y = y;
      this.maskedElsewhere = maskedByPrev;
    }
    return this.forwardDone(y);
  }

  /** The next layer's backward applies this ReLU's mask (a MaxPool2d with masksRelu): backward passes dy through. */
  maskedByNext(): void {
    if (this.y) this.maskedElsewhere = true;
  }

  backward(dy: Tensor): Tensor {
    this.backwardStart(dy, 'ReLU');
    const y = requireSaved(this.y, 'ReLU');
    const dx = this.maskedElsewhere ? dy : ops.reluBackward(dy, y);
    this.dropSaved();
    return dx;
  }

  protected dropSaved(): void {
    if (this.ownsY) this.y?.dispose();
    this.y = undefined;
    this.maskedElsewhere = false;
  }
}

export class MaxPool2d extends Module {
  readonly params: ops.Pool2dParams;
  private saved: { x: Tensor; y: Tensor; ws: Tensor[] } | undefined;
  /**
   * Set by Sequential (masksReluOf) after this pool's forward when it read a ReLU's output: backward then applies
   * the ReLU's mask to dy on the pooled map, (y > 0), before routing it to the arg-max, and the ReLU passes dy
   * through. Exact: the gradient only reaches arg-max positions, whose input value is the pooled y; and a quarter of
   * the work of the ReLU's own mask on the full map (2×2 pools). Every forward clears it.
   */
  masksRelu = false;

  constructor(kernelSize = 2, stride = kernelSize, padding = 0) {
    super();
    sizeArg(kernelSize, 'MaxPool2d: kernelSize');
    sizeArg(stride, 'MaxPool2d: stride');
    sizeArg(padding, 'MaxPool2d: padding', 0);
    if (2 * padding > kernelSize) throw new RangeError(`MaxPool2d: padding must be at most half the kernel size, got ${padding} for ${kernelSize}`);
    this.params = { kernel: kernelSize, stride, pad: padding };
  }

  forward(x: Tensor): Tensor {
    tensorArg(x, 'MaxPool2d.forward');
    this.dropSaved();
    const r = ops.maxpool2dForward(x, this.params, isGradEnabled());
    if (isGradEnabled()) this.saved = { x, y: r.y, ws: r.saved };
    return this.forwardDone(r.y);
  }

  /** This pool's input was `relu`'s output in the forward just run: take over its mask (see masksRelu). */
  masksReluOf(relu: ReLU): void {
    if (!this.saved) return;
    this.masksRelu = true;
    relu.maskedByNext();
  }

  backward(dy: Tensor): Tensor {
    this.backwardStart(dy, 'MaxPool2d');
    const s = requireSaved(this.saved, 'MaxPool2d');
    const masked = this.masksRelu ? ops.reluBackward(dy, s.y) : dy;
    const dx = ops.maxpool2dBackward(masked, s.x, s.y, this.params, s.ws);
    if (masked !== dy) masked.dispose();
    this.dropSaved();
    return dx;
  }

  protected dropSaved(): void {
    if (this.saved) disposeAll(this.saved.ws);
    this.saved = undefined;
    this.masksRelu = false;
  }
}

export class AdaptiveAvgPool2d extends Module {
  private x: { shape: number[]; layout: Layout } | undefined;

  constructor(readonly outputSize: [number, number] = [7, 7]) {
    super();
    if (!Array.isArray(outputSize) || outputSize.length !== 2) throw new TypeError('AdaptiveAvgPool2d: outputSize must be [height, width]');
    outputSize.forEach((v, i) => sizeArg(v, `AdaptiveAvgPool2d: outputSize[${i}]`));
  }

  forward(x: Tensor): Tensor {
    tensorArg(x, 'AdaptiveAvgPool2d.forward');
    this.x = { shape: x.shape, layout: x.layout };
    return this.forwardDone(ops.adaptiveAvgpool2dForward(x, this.outputSize[0], this.outputSize[1]));
  }

  backward(dy: Tensor): Tensor {
    this.backwardStart(dy, 'AdaptiveAvgPool2d');
    const x = requireSaved(this.x, 'AdaptiveAvgPool2d');
    return ops.adaptiveAvgpool2dBackward(dy, x.shape, x.layout);
  }
}

/** (N, C, H, W) -> (N, C*H*W), a view of the same storage. */
/** t as plain NCHW, viewed as `shape`; a layout conversion made on the way is freed at once (the view keeps its storage). */
/** t in nchw, viewed as `shape` (a new tensor; t stays the caller's). */
export function nchwView(t: Tensor, shape: number[]): Tensor {
  const plain = ops.toLayout(t, 'nchw');
  const v = plain.view(shape);
  if (plain !== t) plain.dispose();
  return v;
}

export class Flatten extends Module {
  private shape: number[] | undefined;

  forward(x: Tensor): Tensor {
    tensorArg(x, 'Flatten.forward');
    this.shape = x.shape;
    const [n, ...rest] = x.shape;
    return this.forwardDone(nchwView(x, [n, rest.reduce((a, b) => a * b, 1)]));
  }

  backward(dy: Tensor): Tensor {
    this.backwardStart(dy, 'Flatten');
    return nchwView(dy, requireSaved(this.shape, 'Flatten'));
  }
}

export interface BatchNormOptions {
  eps?: number;
  momentum?: number;
  device?: 'cpu' | 'cuda';
}

export class BatchNorm2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked = new Counter();
  readonly eps: number;
  readonly momentum: number;
  private saved: { x: Tensor; stats: Tensor[]; reluY?: Tensor; sync: NativeGroup | null } | undefined;

  constructor(readonly numFeatures: number, options: BatchNormOptions = {}) {
    super();
    sizeArg(numFeatures, 'BatchNorm2d: numFeatures');
    const device = options.device ?? 'cpu';
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    if (!(typeof this.eps === 'number' && Number.isFinite(this.eps) && this.eps > 0)) throw new RangeError(`BatchNorm2d: eps must be a finite number > 0, got ${this.eps}`);
    if (!(typeof this.momentum === 'number' && this.momentum >= 0 && this.momentum <= 1)) throw new RangeError(`BatchNorm2d: momentum must be in [0, 1], got ${this.momentum}`);
    this.weight = new Parameter(Tensor.from(new Float32Array(numFeatures).fill(1), [numFeatures], { device }));
    this.bias = new Parameter(Tensor.zeros([numFeatures], { device }));
    this.runningMean = Tensor.zeros([numFeatures], { device });
    this.runningVar = Tensor.from(new Float32Array(numFeatures).fill(1), [numFeatures], { device });
  }

  ownParameters(): [string, Parameter][] {
    return [['weight', this.weight], ['bias', this.bias]];
  }
  ownBuffers(): [string, Tensor | Counter][] {
    return [['running_mean', this.runningMean], ['running_var', this.runningVar], ['num_batches_tracked', this.numBatchesTracked]];
  }

  /**
   * With `fuseRelu` the output is max(0, bn(x)) and backward applies that ReLU's mask to dy itself (the ReLU that
   * follows passes dy through: see Sequential), one pass over the activation fewer each way. In a distributed step
   * with SyncBatchNorm (options.step), training mode normalises with the statistics of every replica's batch
   * together, and backward reduces across the replicas too.
   */
  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    tensorArg(x, 'BatchNorm2d.forward');
    this.dropSaved();
    const relu = options.fuseRelu ?? false;
    const sync = this.training ? options.step?.distributed?.syncBatchNorm?.handle ?? null : null;
    const r = ops.batchnormForward(
      x, this.weight.value, this.bias.value, this.runningMean, this.runningVar, this.training, this.momentum, this.eps,
      isGradEnabled(), relu, sync,
    );
    if (this.training) this.numBatchesTracked.value += 1n;
    // The output is the next layer's input, owned by the container until backward has passed it.
    if (isGradEnabled()) this.saved = { x, stats: r.saved, reluY: relu ? r.y : undefined, sync };
    return this.forwardDone(r.y);
  }

  backward(dy: Tensor): Tensor {
    this.backwardStart(dy, 'BatchNorm2d');
    const s = requireSaved(this.saved, 'BatchNorm2d');
    const { grads: [dg, db], accumulate } = gradsForBackward([this.weight, this.bias]);
    const dx = ops.batchnormBackward(dy, s.x, this.weight.value, this.eps, s.stats, dg!, db!, accumulate, s.reluY ?? null, s.sync);
    this.dropSaved();
    return dx;
  }

  protected dropSaved(): void {
    if (this.saved) disposeAll(this.saved.stats);
    this.saved = undefined;
  }
}

/**
 * A linear layer's gradients, dw (+)= dy^T·x and db (+)= Σ dy: in a distributed step whose ranks gather this layer's
 * rows (DistributedStep.gatherRows), from every rank's rows, which makes them the average over the ranks.
 */
export function linearWeightGrads(layer: { weight: Parameter; bias?: Parameter }, x: Tensor, dy: Tensor, dw: Tensor,
  db: Tensor | null, accumulate: boolean, step?: StepContext): void {
  const rows = accumulate ? undefined : step?.distributed?.gatherRows?.(layer, x, dy);
  try {
    ops.linearBackwardWeights(rows?.x ?? x, rows?.dy ?? dy, dw, db, accumulate);
  } finally {
    rows?.x.dispose();
    rows?.dy.dispose();
  }
}

export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | undefined;
  private x: Tensor | undefined;
  /**
   * The weights converted for bf16 activations (ops.linearWeights), with the tensor they were made from: made by a
   * forward and used again by its backward (one conversion per step instead of two), then dropped; kept across
   * forwards while holdPreparedWeights is on.
   */
  private prepared: { w: ops.PreparedLinearWeights; from: Tensor } | undefined;
  private holdPrepared = false;

  constructor(readonly inFeatures: number, readonly outFeatures: number, options: { bias?: boolean; device?: 'cpu' | 'cuda' } = {}) {
    super();
    sizeArg(inFeatures, 'Linear: inFeatures');
    sizeArg(outFeatures, 'Linear: outFeatures');
    const device = options.device ?? 'cpu';
    this.weight = new Parameter(Tensor.zeros([outFeatures, inFeatures], { device }));
    this.bias = options.bias === false ? undefined : new Parameter(Tensor.zeros([outFeatures], { device }));
  }

  ownParameters(): [string, Parameter][] {
    return this.bias ? [['weight', this.weight], ['bias', this.bias]] : [['weight', this.weight]];
  }

  /**
   * While on, the converted weights a forward makes are kept for the forwards after it, not made again by each: for
   * scopes in which the weights do not change (VGGNet.withFrozenWeights). Turning it on or off, or
   * clearPreparedWeights, drops those held (on: a forward with gradients whose backward never ran may have left some
   * made from weights an optimizer has changed since).
   */
  holdPreparedWeights(on: boolean): void {
    this.clearPreparedWeights();
    this.holdPrepared = on;
  }

  clearPreparedWeights(): void {
    this.prepared?.w.dispose();
    this.prepared = undefined;
  }

  /** The prepared weights for `dtype` when this layer holds some made from the current weight tensor. */
  private heldWeights(dtype: DType): ops.PreparedLinearWeights | undefined {
    const p = this.prepared;
    return p && p.from === this.weight.value && p.w.dtype === dtype ? p.w : undefined;
  }

  /** Converts the current weights for `dtype`, in place of any held. */
  private prepareWeights(dtype: DType): ops.PreparedLinearWeights {
    this.clearPreparedWeights();
    const w = ops.linearWeights(this.weight.value, dtype);
    this.prepared = { w, from: this.weight.value };
    return w;
  }

  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    tensorArg(x, 'Linear.forward');
    this.x = isGradEnabled() ? x : undefined;
    const held = this.holdPrepared ? this.heldWeights(x.dtype) : undefined;
    const w = x.dtype === 'float32' ? this.weight.value : held ?? this.prepareWeights(x.dtype);
    const y = ops.linearForward(x, w, this.bias?.value ?? null, options.fuseRelu ?? false);
    if (!isGradEnabled() && !this.holdPrepared) this.clearPreparedWeights();
    return this.forwardDone(y);
  }

  backward(dy: Tensor, options?: BackwardOptions): Tensor {
    this.backwardStart(dy, 'Linear');
    const x = requireSaved(this.x, 'Linear');
    const { grads: [dw, db], accumulate } = gradsForBackward([this.weight, this.bias]);
    linearWeightGrads(this, x, dy, dw!, db, accumulate, options?.step);
    const dx = ops.linearBackwardData(dy, this.heldWeights(dy.dtype) ?? this.weight.value);
    this.dropSaved();
    return dx;
  }

  protected dropSaved(): void {
    this.x = undefined;
    if (!this.holdPrepared) this.clearPreparedWeights();
  }

  dispose(): void {
    this.holdPreparedWeights(false);
    super.dispose();
  }
}

/**
 * Dropout with a counter-based mask: call k of this layer uses seed `seed` and offset k·2^32, so a run is
 * reproducible on any device and resumable from `calls`.
 */
export class Dropout extends Module {
  calls = 0;
  private mask: Tensor[] | undefined;

  constructor(readonly p = 0.5, public seed = 0) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout: p must be in [0, 1), got ${p}`);
  }

  /** The mask offset of call number `calls`. */
  static offsetOf(calls: number): bigint {
    return BigInt(calls) << 32n;
  }

  forward(x: Tensor, options?: ForwardOptions): Tensor {
    tensorArg(x, 'Dropout.forward');
    this.dropSaved();
    if (!this.training || this.p === 0) return this.forwardDone(x);
    const r = ops.dropoutForward(x, this.p, this.seed, Dropout.offsetOf(this.calls), true);
    options?.step?.onDropout?.(this);
    this.calls++;
    this.mask = r.saved;
    return this.forwardDone(r.y);
  }

  backward(dy: Tensor): Tensor {
    this.backwardStart(dy, 'Dropout');
    if (!this.training || this.p === 0) return dy;
    const dx = ops.dropoutBackward(dy, this.p, requireSaved(this.mask, 'Dropout'));
    this.dropSaved();
    return dx;
  }

  protected dropSaved(): void {
    if (this.mask) disposeAll(this.mask);
    this.mask = undefined;
  }
}

/**
 * Children run in order, named "0", "1", ... like torch.nn.Sequential. Owns the activations between children:
 * with gradients enabled they live until backward has passed them; under noGrad each is freed once the next child
 * has run.
 * A Conv2d, Linear or BatchNorm2d followed by a ReLU runs as one fused op.
 */
export class Sequential extends Module {
  readonly layers: Module[];
  private acts: Tensor[] = [];
  /** Each child's forward generation in this container's latest forward (its backward tags the gradients with it). */
  private childGenerations: number[] = [];
  /** The first layer the latest forward ran (forwardFrom): backward stops there. */
  private from = 0;

  constructor(layers: Module[]) {
    super();
    if (!Array.isArray(layers) || !layers.every((l) => l instanceof Module)) throw new TypeError('Sequential: expected an array of modules');
    this.layers = layers;
  }

  children(): [string, Module][] {
    return this.layers.map((m, i) => [String(i), m]);
  }

  forward(x: Tensor, options?: ForwardOptions): Tensor {
    tensorArg(x, 'Sequential.forward');
    return this.run(x, 0, options);
  }

  /**
   * Runs layers[start], layers[start + 1], ... on x: for callers that ran the first layers their own way (VGGNet's
   * folded classifier). With gradients, the backward that follows goes back through these layers only and returns
   * the gradient of x, layers[start]'s input.
   */
  forwardFrom(start: number, x: Tensor, options?: ForwardOptions): Tensor {
    tensorArg(x, 'Sequential.forwardFrom');
    if (!Number.isInteger(start) || start < 0 || start > this.layers.length) {
      throw new RangeError(`Sequential.forwardFrom: start must be an integer in [0, ${this.layers.length}], got ${start}`);
    }
    return this.run(x, start, options);
  }

  private run(x: Tensor, start: number, options?: ForwardOptions): Tensor {
    this.freeActs();
    this.from = start;
    const keep = isGradEnabled(); // activations are needed by backward
    const step = options?.step;
    let cur = x;
    for (let i = start; i < this.layers.length; i++) {
      const layer = this.layers[i];
      const next = this.layers[i + 1];
      let out: Tensor;
      if ((layer instanceof Conv2d || layer instanceof Linear) && next instanceof ReLU) {
        out = next.forwardFused(layer.forward(cur, { fuseRelu: true, step }));
        this.childGenerations[i] = layer.forwardGeneration;
        i++;
      } else if (layer instanceof BatchNorm2d && next instanceof ReLU) {
        out = next.forwardFused(layer.forward(cur, { fuseRelu: true, step }), true);
        this.childGenerations[i] = layer.forwardGeneration;
        i++;
      } else {
        out = layer.forward(cur, { step });
      }
      this.childGenerations[i] = this.layers[i].forwardGeneration;
      // A max pool reading a ReLU's output (alone or fused) applies the ReLU's mask on the pooled map in backward.
      // Set after the pool's forward, which clears it, so a pool run on its own never masks.
      const prev = this.layers[i - 1];
      if (keep && layer instanceof MaxPool2d && prev instanceof ReLU) layer.masksReluOf(prev);
      if (out !== cur) {
        if (!keep && cur !== x) cur.dispose();
        if (keep) this.acts.push(out);
      }
      cur = out;
    }
    // The final output belongs to the caller.
    if (keep && this.acts[this.acts.length - 1] === cur) this.acts.pop();
    return this.forwardDone(cur);
  }

  /** In a distributed step (options.step), each child's freshly written gradients are handed to its hook at once. */
  backward(dy: Tensor, options?: BackwardOptions): Tensor | undefined {
    this.backwardStart(dy, 'Sequential');
    const dist = options?.step?.distributed;
    let cur: Tensor | undefined = dy;
    for (let i = this.layers.length - 1; i >= this.from; i--) {
      if (!cur) throw new Error(`Sequential.backward: layer ${i + 1} gave no input gradient, but layer ${i} needs one`);
      const layer = this.layers[i];
      markGradientFor(cur, layer, this.childGenerations[i]);
      const g: Tensor | undefined = layer.backward(cur, options);
      if (dist) {
        const own = layer.ownParameters();
        if (own.length > 0) dist.gradientsReady(own.map(([, p]) => p));
      }
      if (cur !== dy && g !== cur) cur.dispose();
      cur = g;
    }
    this.freeActs();
    return cur;
  }

  protected dropSaved(): void {
    super.dropSaved();
    this.freeActs();
  }

  private freeActs(): void {
    disposeAll(this.acts);
    this.acts = [];
  }
}
