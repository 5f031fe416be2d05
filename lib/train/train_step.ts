// The training step: zeroGrad, forward, mean cross-entropy, backward, SGD — written once (runStep) and used by the
// Trainer, the benches, the tests and the CUDA graph capture alike. Distributed training (context.distributed,
// lib/dist/ddp.ts) hooks into it: the loss's all-reduce starts before backward, each bucket of gradients is
// all-reduced as soon as backward has written it, and all of them complete before the optimizer step.
//
// TrainStepRunner runs the step eagerly or as a CUDA graph. On CUDA, once one batch shape has run `warmup` eager
// steps (the first chooses the convolution algorithms and sizes the workspaces), runStep is captured once and
// replayed for every later batch of that shape: one launch instead of hundreds. Other shapes (an epoch's last,
// smaller batch), evaluation and CPU models run eagerly.
//
// A replay is the eager step: the batch is copied into the graph's input buffers, the per-step values the kernels
// read from the GPU (each dropout layer's mask offset, the learning rate) are set from the live JS state, and the
// host-side counters the eager step advances (dropout calls, BatchNorm's num_batches_tracked, the optimizer's step
// count) advance the same way, so checkpoints and resumption see no difference. A step whose loss is not finite
// updates nothing, in either form (the Trainer then stops with TrainingDivergedError).
import { Tensor } from '../tensor';
import * as ops from '../ops';
import { CudaGraph } from '../ops';
import { VGGNet } from '../models/vgg';
import { Dropout } from '../nn/layers';
import { Counter, DistributedStep, Module, Parameter, StepContext, isGradEnabled } from '../nn/module';
import { SGD } from '../optim/sgd';
import { profilerInstalled } from '../profile';
import { deferringMemoryReports } from '../backend';

/** How a step decides, from its loss tensor, whether to update the weights. */
export type LossGate = (loss: Tensor) => boolean;

/** Eager: the loss is read back; a non-finite one skips backward and the update. */
export const eagerGate: LossGate = (loss) => Number.isFinite(loss.item());

export interface StepOutput {
  logits: Tensor;
  /** The mean cross-entropy, a 1-element float32 tensor on the model's device. */
  loss: Tensor;
  /** Whether backward and the optimizer step ran. */
  updated: boolean;
}

/**
 * One training step on a batch (images and labels on the model's device): zeroGrad, forward, cross-entropy,
 * `gate(loss)`, backward, SGD. The caller owns (and disposes) the returned logits and loss.
 *
 * Distributed (context.distributed): backward always runs, its gradients averaged over the ranks as it goes; the
 * returned loss is the step's loss averaged over the ranks, and the gate is asked about that one, after backward, so
 * that every rank takes the same decision.
 */
export function runStep(model: VGGNet, optimizer: SGD, params: Parameter[], images: Tensor, labels: Tensor,
  gate: LossGate = eagerGate, context?: StepContext): StepOutput {
  // A step frees what it allocates but its outputs: V8 hears of the net change once, at the end.
  return deferringMemoryReports(() => runStepInner(model, optimizer, params, images, labels, gate, context));
}

function runStepInner(model: VGGNet, optimizer: SGD, params: Parameter[], images: Tensor, labels: Tensor,
  gate: LossGate, context: StepContext | undefined): StepOutput {
  optimizer.zeroGrad(params);
  const logits = model.forward(images, { step: context });
  const dist = context?.distributed;
  let loss: Tensor | undefined;
  try {
    const r = ops.crossEntropy(logits, labels);
    loss = r.loss;
    try {
      if (dist) {
        dist.beginBackward(r.loss);
      } else if (!gate(r.loss)) {
        model.releaseSaved(); // what forward saved goes: no backward follows
        return { logits, loss, updated: false };
      }
      model.backward(r.dlogits, { step: context });
    } finally {
      r.dlogits.dispose();
    }
    if (dist) {
      // Every bucket's all-reduce completes here, before the update (on CUDA: the compute stream waits for them).
      const mean = dist.finishGradients();
      loss.dispose();
      loss = mean;
      if (!gate(mean)) return { logits, loss, updated: false };
    }
    optimizer.step(params);
    return { logits, loss, updated: true };
  } catch (e) {
    logits.dispose();
    loss?.dispose();
    model.releaseSaved();
    throw e;
  }
}

/** runStep eagerly, for loops that only want the loss (benches, tests): returns the batch's mean cross-entropy. */
export function trainStep(model: VGGNet, optimizer: SGD, images: Tensor, labels: Tensor): number {
  const out = runStep(model, optimizer, model.parameters().map((p) => p.param), images, labels);
  const loss = out.loss.item();
  out.logits.dispose();
  out.loss.dispose();
  return loss;
}

export interface TrainStepResult {
  /** The batch's mean cross-entropy. */
  loss: number;
  /** The logits (N × classes), read back to the host. */
  logits: Float32Array;
  /** Whether the step ran as a CUDA-graph replay. */
  graphed: boolean;
}

export interface TrainStepOptions {
  /** Capture CUDA graphs (default true; only CUDA models in training mode ever are). */
  cudaGraph?: boolean;
  /** Eager steps on a batch shape before it is captured (default 2). */
  warmup?: number;
  /** Told once, with the reason, when a capture fails and graphs are turned off for this runner. */
  onGraphDisabled?: (reason: string) => void;
  /** Distributed training's part of the step (DistributedDataParallel.stepContext()). */
  distributed?: DistributedStep;
}

/** A host-side number the step advances, seen as bigint. */
interface Cell {
  get(): bigint;
  set(v: bigint): void;
}

interface Captured {
  graph: CudaGraph;
  key: string;
  x: Tensor;
  y: Tensor;
  logits: Tensor;
  loss: Tensor;
  values: (() => bigint | number)[]; // one per slot
  cells: Cell[];
  deltas: bigint[];
  paramValues: Tensor[];
}

function modulesOf(m: Module): Module[] {
  return [m, ...m.children().flatMap(([, c]) => modulesOf(c))];
}

export class TrainStepRunner {
  /** Why graphs are off for good (a capture failed), or null. */
  disabledReason: string | null = null;
  private captured: Captured | null = null;
  private warmKey = '';
  private warmSteps = 0;
  private readonly params: Parameter[];
  private readonly warmup: number;

  constructor(readonly model: VGGNet, readonly optimizer: SGD, readonly options: TrainStepOptions = {}) {
    this.params = model.parameters().map((p) => p.param);
    this.warmup = options.warmup ?? 2;
    if (!Number.isInteger(this.warmup) || this.warmup < 1) {
      throw new RangeError(`TrainStepRunner: warmup must be an integer >= 1, got ${options.warmup}`);
    }
  }

  /** zeroGrad, forward, cross-entropy, backward, SGD step on one batch (images and labels on the model's device). */
  run(images: Tensor, labels: Tensor): TrainStepResult {
    if (!this.graphsAllowed()) return this.eager(images, labels);
    const key = `${images.shape}|${images.dtype}|${images.layout}|${labels.shape}|${labels.dtype}`;
    const c = this.captured;
    if (c && !this.stillValid(c)) this.dropGraph();
    if (this.captured) return this.captured.key === key ? this.replay(this.captured, images, labels) : this.eager(images, labels);
    if (key !== this.warmKey) {
      this.warmKey = key;
      this.warmSteps = 0;
    }
    if (this.warmSteps < this.warmup) {
      this.warmSteps++;
      return this.eager(images, labels);
    }
    const captured = this.capture(key, images, labels);
    return captured ? this.replay(captured, images, labels) : this.eager(images, labels);
  }

  /** Frees the graph and its buffers (the runner still works, and may capture again). */
  dispose(): void {
    this.dropGraph();
  }

  private graphsAllowed(): boolean {
    const dist = this.options.distributed;
    return this.options.cudaGraph !== false && this.disabledReason === null && this.model.device === 'cuda' &&
      this.model.training && isGradEnabled() && !profilerInstalled() && (!dist || dist.capturable);
  }

  private eager(images: Tensor, labels: Tensor): TrainStepResult {
    const d = this.options.distributed;
    const gate: LossGate = d ? (loss) => { d.waitForDevice(); return eagerGate(loss); } : eagerGate;
    const out = runStep(this.model, this.optimizer, this.params, images, labels, gate, d ? { distributed: d } : undefined);
    try {
      return { loss: out.loss.item(), logits: out.logits.toArray() as Float32Array, graphed: false };
    } finally {
      out.logits.dispose();
      out.loss.dispose();
    }
  }

  private replay(c: Captured, images: Tensor, labels: Tensor): TrainStepResult {
    c.x.copy_(images);
    c.y.copy_(labels);
    c.graph.launch(c.values.map((v) => v()));
    this.options.distributed?.waitForDevice();
    c.cells.forEach((cell, i) => cell.set(cell.get() + c.deltas[i]));
    return { loss: c.loss.item(), logits: c.logits.toArray() as Float32Array, graphed: true };
  }

  /** What the eager step advances on the host: dropout calls, BatchNorm counters, the optimizer's step count. */
  private cells(): Cell[] {
    const cells: Cell[] = [];
    for (const m of modulesOf(this.model)) {
      if (m instanceof Dropout) cells.push({ get: () => BigInt(m.calls), set: (v) => (m.calls = Number(v)) });
      for (const [, b] of m.ownBuffers()) {
        if (b instanceof Counter) cells.push({ get: () => b.value, set: (v) => (b.value = v) });
      }
    }
    const opt = this.optimizer;
    cells.push({ get: () => BigInt(opt.stepCount), set: (v) => (opt.stepCount = Number(v)) });
    return cells;
  }

  private capture(key: string, images: Tensor, labels: Tensor): Captured | null {
    const { model, optimizer, params } = this;
    const cells = this.cells();
    const before = cells.map((c) => c.get());
    const restore = () => cells.forEach((c, i) => c.set(before[i]));
    const x = Tensor.empty(images.shape, { dtype: images.dtype, layout: images.layout, device: 'cuda' }).copy_(images);
    const y = Tensor.empty(labels.shape, { dtype: labels.dtype, device: 'cuda' }).copy_(labels);
    let out: StepOutput | undefined;
    const dropouts: Module[] = [];
    let graph: CudaGraph | undefined;
    const fail = (why: string): null => {
      graph?.dispose();
      model.releaseSaved();
      for (const t of [out?.logits, out?.loss, x, y]) t?.dispose();
      restore();
      this.disable(`capturing the training step as a CUDA graph failed (${why}); it runs eagerly from now on`);
      return null;
    };
    // Inside the capture the loss cannot be read: the captured SGD kernel checks it at each replay instead.
    const guardedGate: LossGate = (loss) => {
      CudaGraph.stepGuard(loss);
      return true;
    };
    try {
      graph = CudaGraph.capture(() => {
        out = runStep(model, optimizer, params, x, y, guardedGate, {
          onDropout: (d) => dropouts.push(d), distributed: this.options.distributed,
        });
      });
    } catch (e) {
      return fail((e as Error).message);
    }
    // Nothing ran yet: the capture only recorded. Put the counters back; each replay advances them.
    const deltas = cells.map((c, i) => c.get() - before[i]);
    restore();
    const values: (() => bigint | number)[] = [];
    let k = 0;
    for (const s of graph.slots()) {
      if (s.kind === 'learningRate') {
        values.push(() => optimizer.lr);
        continue;
      }
      const d = dropouts[k++];
      if (!(d instanceof Dropout) || s.value !== Dropout.offsetOf(d.calls)) {
        return fail(`dropout slot ${k - 1} does not match the layers that ran`);
      }
      values.push(() => Dropout.offsetOf(d.calls));
    }
    if (k !== dropouts.length) return fail(`${dropouts.length} dropout layers ran, ${k} slots were captured`);
    this.captured = {
      graph, key, x, y, logits: out!.logits, loss: out!.loss, values, cells, deltas, paramValues: params.map((p) => p.value),
    };
    return this.captured;
  }

  /** The graph writes the parameters it was captured with: replaced or disposed ones end it. */
  private stillValid(c: Captured): boolean {
    return this.params.every((p, i) => p.value === c.paramValues[i] && !p.value.disposed);
  }

  private dropGraph(): void {
    const c = this.captured;
    if (!c) return;
    this.captured = null;
    c.graph.dispose();
    for (const t of [c.x, c.y, c.logits, c.loss]) t.dispose();
  }

  private disable(reason: string): void {
    this.disabledReason = reason;
    this.options.onGraphDisabled?.(reason);
  }
}
