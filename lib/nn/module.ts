// Module: forward(x) keeps what backward needs; backward(dy) returns dx and accumulates parameter gradients.
// Ownership: a module never disposes its input. What it saved for backward it disposes itself, after backward or
// at the next forward. A container (Sequential) owns the intermediate activations between its children.
import { Tensor } from '../tensor';
import * as ops from '../ops';

/** A learnable tensor with its gradient. The gradient is zeroed lazily: zeroGrad() marks it, backward overwrites. */
export class Parameter {
  private gradTensor: Tensor | undefined;
  private stale = true; // the gradient holds nothing of the current step

  constructor(public value: Tensor) {}

  get shape(): number[] {
    return this.value.shape;
  }

  /** The gradient (zeros when no backward ran since the last zeroGrad). */
  get grad(): Tensor {
    const g = this.gradBuffer();
    if (this.stale) {
      ops.fill(g, 0);
      this.stale = false;
    }
    return g;
  }

  /** For backward: the gradient buffer and whether to accumulate into it (false right after zeroGrad). */
  gradForBackward(): { grad: Tensor; accumulate: boolean } {
    const grad = this.gradBuffer(); // first: creating the buffer marks it stale
    const accumulate = !this.stale;
    this.stale = false;
    return { grad, accumulate };
  }

  zeroGrad(): void {
    this.stale = true;
  }

  /** Replaces the value (same shape), converting dtype/layout/device as needed. */
  set(src: Tensor): void {
    this.value.copy_(src);
  }

  dispose(): void {
    this.value.dispose();
    this.gradTensor?.dispose();
    this.gradTensor = undefined;
  }

  private gradBuffer(): Tensor {
    if (!this.gradTensor || this.gradTensor.disposed) {
      this.gradTensor = Tensor.empty(this.value.shape, { device: this.value.device });
      this.stale = true;
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
  const gs = params.map((p) => p?.gradForBackward());
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
 * children. Explicit, not global: a forward outside a step gets none.
 */
export interface StepContext {
  /**
   * While the step is being captured as a CUDA graph: each Dropout layer that draws a mask reports itself, in call
   * order, so that every replay can give it its own mask offset.
   */
  onDropout?(layer: Module): void;
}

export interface ForwardOptions {
  /** Apply max(0, ·) to the output (the next module is a ReLU that then passes its input through). */
  fuseRelu?: boolean;
  /** The training step this forward runs in, if any. */
  step?: StepContext;
}

export abstract class Module {
  training = true;

  abstract forward(x: Tensor, options?: ForwardOptions): Tensor;
  /** Returns the input's gradient, or undefined from a first layer told not to compute it. */
  abstract backward(dy: Tensor): Tensor | undefined;

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
