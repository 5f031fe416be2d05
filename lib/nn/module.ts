// Module: forward(x) keeps what backward needs; backward(dy) returns dx and accumulates parameter gradients.
// Ownership: a module never disposes its input. What it saved for backward it disposes itself, after backward or
// at the next forward. A container (Sequential) owns the intermediate activations between its children.
import { Tensor } from '../tensor';
import * as ops from '../ops';
import type { NativeGroup } from '../native';

/**
 * The geometry [C, H, W, oh, ow] of an adaptive average pool from (C, H, W) to (C, oh, ow) whose input a weight's
 * gradient is given as (native/ops.h, PooledGrad): the gradient (out, C·oh·ow) is that pool of an (out, C·H·W) one.
 */
export type PoolGeometry = [number, number, number, number, number];

/** A gradient given as the pool's input, (out, C·H·W), pooled out whole: (out, C·oh·ow), a new tensor. */
export function poolOutGrad(small: Tensor, geometry: PoolGeometry): Tensor {
  const [c, h, w, oh, ow] = geometry;
  const rows = small.shape[0];
  const planes = small.view([rows, c, h, w]);
  try {
    const whole = ops.adaptiveAvgpool2dForward(planes, oh, ow);
    const flat = whole.view([rows, c * oh * ow]);
    whole.dispose();
    return flat;
  } finally {
    planes.dispose();
  }
}

/**
 * An optimizer update of a parameter held back (lib/optim/deferred.ts, DeferredUpdate): the parameter's tensor does
 * not hold its current values until `materialiseWeight` works them out.
 */
export interface Deferral {
  /** Makes the parameter's tensor hold its current values (the deferral goes on). */
  materialiseWeight(): void;
  /** The fold (ops.adaptivePoolFold) of the current weight for this geometry, a new tensor; undefined for another. */
  fold(geometry: PoolGeometry): Tensor | undefined;
  /** That fold prepared for bfloat16 activations (as ops.linearWeights prepares it), without the float32 one. */
  preparedFold(geometry: PoolGeometry, activation: 'bfloat16'): ops.PreparedLinearWeights | undefined;
  /** Ends the deferral before the weight is replaced (its momentum worked out, the rest dropped). */
  release(): void;
}

/**
 * A learnable tensor with its gradient. The gradient is zeroed lazily: zeroGrad() marks it, backward overwrites.
 * Backward may hand it over pooled (pooledGradForBackward: VGGNet's first classifier layer on small maps): `grad`
 * then works the whole gradient out on first read, and the optimizer takes it as it is (gradForStep). The optimizer
 * may then defer the weight's update (`deferral`): reading `value` works it out.
 */
export class Parameter {
  private tensor: Tensor;
  private gradTensor: Tensor | undefined;
  private pooled: { grad: Tensor; geometry: PoolGeometry } | undefined; // the buffer, kept between steps
  private held: 'nothing' | 'whole' | 'pooled' = 'nothing'; // what holds the gradient of the current step
  private pooledForFold = false; // whether every forward of the pooled gradient multiplied by the weight's fold
  /** The optimizer's deferred update of this weight, if any (set and cleared by the optimizer). */
  deferral: Deferral | undefined;

  constructor(value: Tensor) {
    this.tensor = value;
  }

  /** The weight, its current values (a deferred update is worked out first). */
  get value(): Tensor {
    this.deferral?.materialiseWeight();
    return this.tensor;
  }

  /** The tensor as stored, a deferred update not worked out: for the optimizer deferring it. */
  get storedValue(): Tensor {
    return this.tensor;
  }

  /** The fold of the current weight when its update is deferred for this geometry (a new tensor), else undefined. */
  deferredFold(geometry: PoolGeometry): Tensor | undefined {
    return this.deferral?.fold(geometry);
  }

  /** deferredFold prepared for bfloat16 activations (as ops.linearWeights prepares it), else undefined. */
  deferredPreparedFold(geometry: PoolGeometry, activation: 'bfloat16'): ops.PreparedLinearWeights | undefined {
    return this.deferral?.preparedFold(geometry, activation);
  }

  get shape(): number[] {
    return this.tensor.shape;
  }

  /** The gradient (zeros when no backward ran since the last zeroGrad). */
  get grad(): Tensor {
    const g = this.gradBuffer();
    if (this.held === 'nothing') ops.fill(g, 0);
    if (this.held === 'pooled') {
      const whole = poolOutGrad(this.pooled!.grad, this.pooled!.geometry);
      try {
        g.copy_(whole);
      } finally {
        whole.dispose();
      }
    }
    this.held = 'whole';
    return g;
  }

  /** For backward: the gradient buffer and whether to accumulate into it (false right after zeroGrad). */
  gradForBackward(): { grad: Tensor; accumulate: boolean } {
    if (this.held === 'pooled') return { grad: this.grad, accumulate: true }; // worked out whole, to add to
    const grad = this.gradBuffer(); // first: creating the buffer drops what it held
    const accumulate = this.held === 'whole';
    this.held = 'whole';
    return { grad, accumulate };
  }

  /**
   * For backward, when the parameter is a weight (out, C·oh·ow) after an adaptive average pool: a buffer for its
   * gradient as the pool's input (out, C·H·W) and whether to accumulate into it, or undefined when the gradient
   * holds values whole (those of another geometry are worked out whole first): the caller then adds to `grad`.
   */
  pooledGradForBackward(geometry: PoolGeometry, forFold = false): { grad: Tensor; accumulate: boolean } | undefined {
    const [c, h, w, oh, ow] = geometry;
    const [rows, cols] = this.tensor.shape;
    if (this.tensor.shape.length !== 2 || cols !== c * oh * ow) {
      throw new Error(`Parameter.pooledGradForBackward: a (${this.tensor.shape.join(', ')}) weight cannot take a gradient pooled to ${c}·${oh}·${ow} inputs`);
    }
    const same = this.pooled !== undefined && this.pooled.geometry.every((v, i) => v === geometry[i]);
    if (this.held === 'pooled' && same) {
      this.pooledForFold &&= forFold;
      return { grad: this.pooled!.grad, accumulate: true };
    }
    if (this.held === 'pooled') void this.grad;
    if (this.held !== 'nothing') return undefined;
    if (!same || this.pooled!.grad.disposed) {
      this.pooled?.grad.dispose();
      this.pooled = { grad: Tensor.empty([rows, c * h * w], { device: this.tensor.device }), geometry: [...geometry] };
    }
    this.held = 'pooled';
    this.pooledForFold = forFold;
    return { grad: this.pooled!.grad, accumulate: false };
  }

  /** Whether the next pooledGradForBackward(geometry) hands over a pooled buffer (undefined: the gradient is held whole). */
  takesPooledGrad(geometry: PoolGeometry): boolean {
    if (this.held === 'nothing') return true;
    return this.held === 'pooled' && this.pooled!.geometry.every((v, i) => v === geometry[i]);
  }

  /**
   * For the optimizer: the gradient as it is held, whole (pooled null) or as a pool's input with its geometry, and
   * whether the forward passes behind it multiplied by the weight's fold (`deferredFold` or ops.adaptivePoolFold).
   */
  gradForStep(): { grad: Tensor; pooled: PoolGeometry | null; forFold: boolean } {
    if (this.held === 'pooled') return { grad: this.pooled!.grad, pooled: this.pooled!.geometry, forFold: this.pooledForFold };
    return { grad: this.grad, pooled: null, forFold: false };
  }

  zeroGrad(): void {
    this.held = 'nothing';
  }

  /** Replaces the value (same shape), converting dtype/layout/device as needed. */
  set(src: Tensor): void {
    this.deferral?.release(); // the update held back is overwritten: only its momentum is kept
    this.tensor.copy_(src);
  }

  dispose(): void {
    this.deferral?.release();
    this.tensor.dispose();
    this.gradTensor?.dispose();
    this.gradTensor = undefined;
    this.pooled?.grad.dispose();
    this.pooled = undefined;
    this.held = 'nothing';
  }

  private gradBuffer(): Tensor {
    if (!this.gradTensor || this.gradTensor.disposed) {
      this.gradTensor = Tensor.empty(this.tensor.shape, { device: this.tensor.device });
      if (this.held === 'whole') this.held = 'nothing';
    }
    return this.gradTensor;
  }
}

/**
 * For an op that writes several parameters' gradients in one call (weight and bias): their buffers and the one
 * accumulate flag they share. When some are fresh (after zeroGrad) and others hold gradients, the fresh ones are
 * zeroed so that all can accumulate.
 */
export function gradsForBackward(params: (Parameter | undefined)[]): { grads: (Tensor | null)[]; accumulate: boolean } {
  return shareAccumulate(params.map((p) => p?.gradForBackward()));
}

/** gradsForBackward for buffers already taken (gradForBackward, pooledGradForBackward). */
export function shareAccumulate(gs: ({ grad: Tensor; accumulate: boolean } | undefined)[]): { grads: (Tensor | null)[]; accumulate: boolean } {
  const accumulate = gs.some((g) => g?.accumulate);
  if (accumulate) for (const g of gs) if (g && !g.accumulate) ops.fill(g.grad, 0);
  return { grads: gs.map((g) => g?.grad ?? null), accumulate };
}

export interface NamedParameter {
  name: string;
  param: Parameter;
}
export interface NamedBuffer {
  name: string;
  value: Tensor;
  /** int64 counters (num_batches_tracked) are kept in JS and written as I64 in state dicts. */
  kind: 'tensor';
}

// Grad mode, as torch.no_grad: while off, forward keeps nothing for backward (inference and evaluation).
let gradEnabled = true;
export function isGradEnabled(): boolean {
  return gradEnabled;
}
/** Runs fn with gradient bookkeeping off (no activations kept for backward); async functions are awaited. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  let r: T;
  try {
    r = fn();
  } catch (e) {
    gradEnabled = prev;
    throw e;
  }
  if (r instanceof Promise) return r.finally(() => (gradEnabled = prev)) as unknown as T;
  gradEnabled = prev;
  return r;
}

/**
 * What a training step tells the layers it runs through (lib/train/train_step.ts); containers pass it down to their
 * children, in forward and in backward. Explicit, not global: a forward outside a step gets none.
 */
export interface StepContext {
  /**
   * While the step is being captured as a CUDA graph: each Dropout layer that draws a mask reports itself, in call
   * order, so that every replay can give it its own mask offset.
   */
  onDropout?(layer: Module): void;
  /** Distributed data-parallel training (lib/dist/ddp.ts): the gradient hooks and SyncBatchNorm. */
  distributed?: DistributedStep;
}

/** What runStep and the layers ask of distributed training in a step (DistributedDataParallel implements it). */
export interface DistributedStep {
  /** The process group BatchNorm2d layers in training mode reduce their statistics over (SyncBatchNorm), or null. */
  readonly syncBatchNorm: { readonly handle: NativeGroup } | null;
  /** Whether the step, collectives included, may be captured as a CUDA graph. */
  readonly capturable: boolean;
  /** Before backward: starts the all-reduce of the step's loss (and the ranks' stop votes). */
  beginBackward(loss: Tensor): void;
  /** Called by containers as soon as a child's backward has written these parameters' gradients. */
  gradientsReady(params: Parameter[]): void;
  /**
   * For a linear layer's gradients, dW = dy^T·x and db = Σ dy: every rank's rows of x and of dy (times 1/ranks), in
   * rank order, when the ranks work the layer's averaged gradients out themselves this step instead of all-reducing
   * them (DistributedDataParallel: a few KB of rows instead of the weight's MB); else undefined. The caller disposes
   * the two tensors. Called only where backward writes the gradients fresh (not accumulating).
   */
  gatherRows?(layer: { weight: Parameter; bias?: Parameter }, x: Tensor, dy: Tensor): { x: Tensor; dy: Tensor } | undefined;
  /** After backward: every gradient is the average over the ranks; returns the loss averaged over the ranks. */
  finishGradients(): Tensor;
  /**
   * Outside a capture, before reading anything the step computed: on CUDA, waits (on the host, within the timeout,
   * watching the engine's errors) until the queued collectives are done, so a lost rank is an error, not a hang.
   */
  waitForDevice(): void;
}

export interface ForwardOptions {
  /** Apply max(0, ·) to the output (the next module is a ReLU that then passes its input through). */
  fuseRelu?: boolean;
  /** The training step this forward runs in, if any. */
  step?: StepContext;
}

// Which forward a gradient belongs to. A module keeps the activations of its latest forward only, so a backward must
// be given the gradient of that forward's output: `a = m.forward(x1); m.forward(x2); m.backward(dA)` would otherwise
// mix x2's activations with a's gradient, silently. Each forward run with gradients enabled gets a number (its
// generation) and its output is tagged with it; crossEntropy (nn/loss.ts) passes the tag of the logits on to their
// gradient, and containers tag the gradients they hand their children with the generation those children had in the
// container's forward. backward then refuses a gradient tagged with another generation, and an untagged one when
// more than one forward has run since the last backward (which of them it belongs to cannot be known). Tags are per
// module (one tensor can be the output of a conv and of the ReLU fused into it), held weakly by the tensor.
const outputTags = new WeakMap<Tensor, Map<Module, number>>();
const gradientTags = new WeakMap<Tensor, Map<Module, number>>();
function addTag(store: WeakMap<Tensor, Map<Module, number>>, t: Tensor, module: Module, generation: number): void {
  let m = store.get(t);
  if (!m) store.set(t, (m = new Map()));
  m.set(module, generation);
}

/** `x` as a Tensor, or a TypeError naming `what` and what it got (instead of a TypeError from inside an op). */
export function tensorArg(x: unknown, what: string): Tensor {
  if (x instanceof Tensor) return x;
  const got = x === null ? 'null' : Array.isArray(x) ? 'an array' : typeof x === 'object' ? `a ${(x as object).constructor?.name ?? 'object'}` : typeof x;
  throw new TypeError(`${what}: expected a Tensor, got ${got}`);
}

/** Marks `grad` as d loss / d `output`: it then carries the forward(s) that produced `output` (see above). */
export function markGradientOf(grad: Tensor, output: Tensor): void {
  const tags = outputTags.get(output);
  if (tags) for (const [m, g] of tags) addTag(gradientTags, grad, m, g);
}

/** For containers: `grad` is the gradient of `child`'s output of its forward number `generation`. */
export function markGradientFor(grad: Tensor, child: Module, generation: number): void {
  addTag(gradientTags, grad, child, generation);
}

export interface BackwardOptions {
  /** The training step this backward runs in, if any (the same context its forward had). */
  step?: StepContext;
}

export abstract class Module {
  training = true;
  private generation = 0; // forwards run with gradients enabled
  private settled = 0; // the generation last gone back through or released

  abstract forward(x: Tensor, options?: ForwardOptions): Tensor;
  /** Returns the input's gradient, or undefined from a first layer told not to compute it. */
  abstract backward(dy: Tensor, options?: BackwardOptions): Tensor | undefined;

  /** The number of forwards run with gradients enabled (containers record their children's, see markGradientFor). */
  get forwardGeneration(): number {
    return this.generation;
  }

  /**
   * Every forward ends with this on its output: with gradients enabled the forward gets the next generation and its
   * output the tag; without, what an earlier forward saved is gone (the layers drop it), so nothing is pending.
   */
  protected forwardDone(y: Tensor): Tensor {
    if (!isGradEnabled()) {
      this.settled = this.generation;
      return y;
    }
    this.generation++;
    addTag(outputTags, y, this, this.generation);
    return y;
  }

  /** Every backward starts with this: refuses a gradient that is not of the forward whose activations are kept. */
  protected backwardStart(dy: Tensor, what: string): void {
    tensorArg(dy, `${what}.backward`);
    const tagged = gradientTags.get(dy)?.get(this);
    const pending = this.generation - this.settled;
    if (tagged !== undefined && tagged !== this.generation) {
      throw new Error(
        `${what}.backward: the gradient is of forward #${tagged}'s output, but the activations kept are forward #${this.generation}'s ` +
        `(a later forward replaced them); run backward before the next forward with gradients enabled`,
      );
    }
    if (tagged === undefined && pending > 1) {
      throw new Error(
        `${what}.backward: ${pending} forwards with gradients enabled ran since the last backward and only the last one's ` +
        'activations are kept, so this gradient cannot be matched to its forward. Run backward after each forward (call ' +
        'releaseSaved() after a forward that gets none, or run it under noGrad), or pass the gradient crossEntropy ' +
        'returned for the output it belongs to',
      );
    }
    this.settled = this.generation;
  }

  /** Direct children, by their torchvision names. */
  children(): [string, Module][] {
    return [];
  }
  /** This module's own parameters (not its children's). */
  ownParameters(): [string, Parameter][] {
    return [];
  }
  /** This module's own buffers (not its children's): name -> tensor, or a counter for num_batches_tracked. */
  ownBuffers(): [string, Tensor | Counter][] {
    return [];
  }

  namedParameters(prefix = ''): NamedParameter[] {
    const out: NamedParameter[] = this.ownParameters().map(([n, p]) => ({ name: prefix + n, param: p }));
    for (const [cn, c] of this.children()) out.push(...c.namedParameters(`${prefix}${cn}.`));
    return out;
  }
  namedBuffers(prefix = ''): [string, Tensor | Counter][] {
    const out: [string, Tensor | Counter][] = this.ownBuffers().map(([n, b]) => [prefix + n, b]);
    for (const [cn, c] of this.children()) out.push(...c.namedBuffers(`${prefix}${cn}.`));
    return out;
  }

  train(mode = true): this {
    this.training = mode;
    for (const [, c] of this.children()) c.train(mode);
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** Drops what forward saved for backward (after an aborted step, or before inference). */
  releaseSaved(): void {
    this.settled = this.generation;
    this.dropSaved();
  }

  /** Frees what forward saved (layers override it; also called at the start of their own forward). */
  protected dropSaved(): void {
    for (const [, c] of this.children()) c.releaseSaved();
  }

  dispose(): void {
    this.releaseSaved();
    for (const [, p] of this.ownParameters()) p.dispose();
    for (const [, b] of this.ownBuffers()) if (b instanceof Tensor) b.dispose();
    for (const [, c] of this.children()) c.dispose();
  }
}

/** An int64 counter buffer (BatchNorm's num_batches_tracked), kept on the host. */
export class Counter {
  constructor(public value = 0n) {}
}

export function disposeAll(ts: (Tensor | undefined)[]): void {
  for (const t of ts) t?.dispose();
}
