// DistributedDataParallel: PyTorch DDP's model for a VGGNet. One process per device, each with a full replica; at
// construction every parameter and buffer is copied from rank 0; in each step the gradients are averaged over the
// ranks while backward is still running.
//
// Buckets (DDP's reducer): the parameters in reverse order — the order backward produces their gradients, the
// classifier's first — are grouped into buckets of about 25 MB (the first one 1 MB, so communication starts early).
// Each layer's backward hands its freshly written gradients to gradientsReady() (through the StepContext that
// Sequential passes down); when a bucket's last gradient arrives, its all-reduce starts at once (native/dist: on the
// comm thread for gloo, on the communication stream for NCCL) and runs beside the rest of backward. finishGradients()
// is where the optimizer step needs them all. The step's loss is all-reduced alongside (every rank logs the same
// loss, and skips a non-finite step together), with each rank's stop vote (Ctrl-C stops every rank after the same
// step).
//
// The classifier's gradients on the CPU: a linear layer's are dW = dy^T·x and db = Σ dy over the batch's rows, so
// their average over the ranks is the same product over every rank's rows with dy/ranks. The ranks gather those rows
// (gatherRows: at batch 8, 8·(25088 + 4096) floats for VGG's first layer instead of its 411 MB gradient) and each
// works the averaged gradients out itself; only the convolutions' gradients go through the buckets (vgg16: 59 of
// 553 MB). Where they are not gathered (gatherClassifierRows: false, CUDA, ranks with different batch sizes), the
// first classifier layer's weight gradient on small maps (inputs under 224²: VGGNet.splitsHead), held as the pool's
// input, (out, C·h·w) instead of (out, C·7·7), is all-reduced in that form: averaging commutes with the pool. Either
// way SGD defers that layer's update as in one process (lib/optim/deferred.ts). Collectives of different sizes would
// hang, so before backward the ranks agree on the batch size and the map size (one small all-reduce); ranks whose
// maps differ reduce that layer's gradient whole.
//
// Optional: bf16 compression (each bucket travels as bfloat16, summed in float32 pairwise, averaged back into the
// float32 gradients), and SyncBatchNorm (batch statistics over every replica's batch, in forward and backward).
// Without it, BatchNorm keeps per-replica statistics, as DDP does; evaluation then uses rank 0's running statistics
// (broadcastBuffers()), as DDP's broadcast_buffers makes every replica's.
import { VGGNet } from '../models/vgg';
import { Dropout, Linear } from '../nn/layers';
import { Counter, DistributedStep, Parameter, PoolGeometry, StepContext } from '../nn/module';
import { SGD } from '../optim/sgd';
import { Tensor } from '../tensor';
import { eagerGate, runStep } from '../train/train_step';
import { ProcessGroup, getProcessGroup } from './process_group';
import {
  groupAllGather, groupFinish, groupReduceBucket, groupReduceExtras, groupRequestStop, groupStopVotes, groupSyncDevice,
} from './native_dist';

export interface DDPOptions {
  /** Default: the group initDistributed() made. */
  processGroup?: ProcessGroup;
  /** Bucket size in MB (default 25, DDP's bucket_cap_mb). */
  bucketCapMB?: number;
  /** The first bucket's size in MB (default 1, as DDP), so that the first all-reduce starts early in backward. */
  firstBucketMB?: number;
  /** 'bf16': gradients travel as bfloat16 (half the bytes), are averaged back into float32. Default 'none'. */
  gradientCompression?: 'none' | 'bf16';
  /** SyncBatchNorm: batch statistics over every replica's batch, in forward and backward. Default false. */
  syncBatchNorm?: boolean;
  /**
   * CPU groups: the classifier's linear layers work their averaged gradients out from every rank's rows of their
   * inputs and output gradients, gathered, instead of all-reducing the gradients (default true; false: all-reduced,
   * as PyTorch's DDP does). Equal up to float rounding (summation order).
   */
  gatherClassifierRows?: boolean;
}

export interface BucketInfo {
  /** Parameter names, in the order their gradients arrive. */
  names: string[];
  /** Float32 bytes of the gradients. */
  bytes: number;
}

interface Bucket extends BucketInfo {
  params: Parameter[];
}

const MB = 1024 * 1024;

// Rank r's dropout seed, derived from rank 0's: each replica draws its own masks, and a checkpoint (rank 0's seeds)
// restores every rank's.
function rankSeed(seed: number, rank: number): number {
  if (rank === 0) return seed >>> 0;
  let h = (seed ^ Math.imul(rank, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export class DistributedDataParallel implements DistributedStep {
  readonly module: VGGNet;
  readonly processGroup: ProcessGroup;
  readonly compression: 'none' | 'bf16';
  readonly buckets: readonly BucketInfo[];
  /** For the layers (StepContext): the group SyncBatchNorm reduces over, or null. */
  readonly syncBatchNorm: ProcessGroup | null;
  private readonly plan: Bucket[];
  private readonly bucketOf = new Map<Parameter, number>();
  private readonly ready: number[];
  private readonly seen = new Set<Parameter>();
  private launched = 0;
  private active = false;
  private lossOut: Tensor | null = null;
  /** This step's agreed form of the first classifier layer's weight gradient: pooled in this geometry, or whole. */
  private pooledForm: PoolGeometry | null = null;
  /** Whether every rank's first classifier layer takes its gradient alike this step (pooled alike, or whole). */
  private sameHead = false;
  /** This step's batch size, when every rank has the same one (their rows can be gathered), else 0. */
  private sharedRows = 0;
  private readonly pooledWeight: Parameter | undefined;
  readonly gatherClassifierRows: boolean;
  /** The classifier's linear layers' weights: the layers whose rows may be gathered. */
  private readonly gatherable = new Set<Parameter>();
  /** The parameters whose gradients this step's gathered rows made (averaged already: no bucket reduces them). */
  private readonly gathered = new Set<Parameter>();

  constructor(model: VGGNet, options: DDPOptions = {}) {
    if (!(model instanceof VGGNet)) throw new TypeError('DistributedDataParallel: expected a VGGNet model');
    const pg = options.processGroup ?? getProcessGroup();
    if (!pg) throw new Error('DistributedDataParallel: no process group: call initDistributed() first (or pass { processGroup })');
    if (model.device !== pg.device) {
      throw new Error(`DistributedDataParallel: the model is on ${model.device}, but the process group reduces ${pg.device} tensors`);
    }
    const capMB = options.bucketCapMB ?? 25;
    const firstMB = options.firstBucketMB ?? 1;
    if (!(capMB > 0) || !(firstMB > 0)) throw new RangeError(`DistributedDataParallel: bucket sizes must be > 0 MB, got ${capMB} and ${firstMB}`);
    const compression = options.gradientCompression ?? 'none';
    if (compression !== 'none' && compression !== 'bf16') throw new RangeError(`DistributedDataParallel: gradientCompression must be 'none' or 'bf16', got '${String(compression)}'`);
    this.module = model;
    this.processGroup = pg;
    this.compression = compression;
    this.syncBatchNorm = options.syncBatchNorm ? pg : null;

    // Buckets in the order backward produces the gradients: the parameters reversed.
    const plan: Bucket[] = [];
    let cur: Bucket = { names: [], params: [], bytes: 0 };
    for (const { name, param } of [...model.namedParameters()].reverse()) {
      cur.names.push(name);
      cur.params.push(param);
      cur.bytes += 4 * param.shape.reduce((a, b) => a * b, 1);
      if (cur.bytes >= (plan.length === 0 ? firstMB : capMB) * MB) {
        plan.push(cur);
        cur = { names: [], params: [], bytes: 0 };
      }
    }
    if (cur.params.length) plan.push(cur);
    plan.forEach((b, i) => b.params.forEach((p) => this.bucketOf.set(p, i)));
    this.plan = plan;
    this.buckets = plan.map(({ names, bytes }) => ({ names, bytes }));
    this.ready = new Array(plan.length).fill(0);
    const fc1 = model.classifier.layers[0];
    this.pooledWeight = fc1 instanceof Linear ? fc1.weight : undefined;
    this.gatherClassifierRows = (options.gatherClassifierRows ?? true) && pg.device === 'cpu';
    for (const l of model.classifier.layers) if (l instanceof Linear) this.gatherable.add(l.weight);

    // Every replica starts from rank 0's weights and buffers.
    this.broadcastState();
    this.applyRankSeeds();
  }

  get capturable(): boolean {
    return this.processGroup.capturable;
  }

  /** The context runStep / TrainStepRunner pass down through the model. */
  stepContext(): StepContext {
    return { distributed: this };
  }

  /** Copies rank 0's parameters and buffers (BatchNorm's running statistics) to every rank. */
  broadcastState(): void {
    const tensors: Tensor[] = this.module.namedParameters().map(({ param }) => param.value);
    this.processGroup.broadcast([...tensors, ...this.bufferTensors()], 0);
  }

  /** Copies rank 0's buffers to every rank (before evaluation: every rank then uses the same running statistics). */
  broadcastBuffers(): void {
    const b = this.bufferTensors();
    if (b.length) this.processGroup.broadcast(b, 0);
  }

  /** Derives this rank's dropout seeds from the current ones (rank 0's): call after loading rank 0's state. */
  applyRankSeeds(): void {
    for (const m of this.module.classifier.layers) if (m instanceof Dropout) m.seed = rankSeed(m.seed, this.processGroup.rank);
  }

  /** Asks every rank to stop after the step that carries the vote (the next one). */
  requestStop(on = true): void {
    groupRequestStop(this.processGroup.handle, on);
  }

  /** After a step (and waitForDevice): whether some rank voted to stop in it. */
  stopAgreed(): boolean {
    return groupStopVotes(this.processGroup.handle) > 0;
  }

  // ---- DistributedStep (called by runStep and the layers)

  beginBackward(loss: Tensor): void {
    this.active = true;
    this.ready.fill(0);
    this.seen.clear();
    this.launched = 0;
    this.gathered.clear();
    this.agreeOnForms();
    this.lossOut = Tensor.empty([1], { device: this.module.device });
    groupReduceExtras(this.processGroup.handle, loss, this.lossOut);
  }

  gradientsReady(params: Parameter[]): void {
    if (!this.active) return; // a backward outside a distributed step
    for (const p of params) {
      const i = this.bucketOf.get(p);
      if (i === undefined) throw new Error('DistributedDataParallel: a gradient of a parameter that is not in the wrapped model');
      this.ready[i]++;
      this.seen.add(p);
    }
    // Buckets start in order (every rank must issue the same collectives in the same order).
    while (this.launched < this.plan.length && this.ready[this.launched] === this.plan[this.launched].params.length) {
      const b = this.plan[this.launched++];
      const rest = b.params.filter((p) => !this.gathered.has(p)); // the same on every rank: they agreed on the forms
      if (rest.length) groupReduceBucket(this.processGroup.handle, rest.map((p) => this.gradientToReduce(p)), this.compression === 'bf16');
    }
  }

  gatherRows(layer: { weight: Parameter; bias?: Parameter }, x: Tensor, dy: Tensor): { x: Tensor; dy: Tensor } | undefined {
    if (!this.active || !this.gatherClassifierRows || this.sharedRows === 0 || !this.gatherable.has(layer.weight)) return undefined;
    if (layer.weight === this.pooledWeight && !this.sameHead) return undefined; // its input's width differs between ranks
    const rows = this.sharedRows;
    if (x.shape.length !== 2 || dy.shape.length !== 2 || x.shape[0] !== rows || dy.shape[0] !== rows) {
      throw new Error(`DistributedDataParallel: the ranks agreed on batches of ${rows}, but a linear layer's backward has ` +
        `input [${x.shape.join(', ')}] and output gradient [${dy.shape.join(', ')}]`);
    }
    const world = this.processGroup.worldSize;
    const gx = Tensor.empty([world * rows, x.shape[1]], { dtype: x.dtype });
    const gdy = Tensor.empty([world * rows, dy.shape[1]], { dtype: dy.dtype });
    try {
      // One collective for both; dy times the average's 1/ranks (exact for powers of 2).
      groupAllGather(this.processGroup.handle, [x, dy], [gx, gdy], [1, 1 / world]);
    } catch (e) {
      gx.dispose();
      gdy.dispose();
      throw e;
    }
    this.gathered.add(layer.weight);
    if (layer.bias) this.gathered.add(layer.bias);
    return { x: gx, dy: gdy };
  }

  finishGradients(): Tensor {
    if (!this.active || !this.lossOut) throw new Error('DistributedDataParallel: finishGradients() without beginBackward()');
    this.active = false;
    if (this.launched < this.plan.length) {
      const missing = this.plan.slice(this.launched).flatMap((b) => b.names.filter((_, k) => !this.seen.has(b.params[k])));
      throw new Error(`DistributedDataParallel: bucket ${this.launched} of ${this.plan.length} never got all its gradients this step ` +
        `(waiting for ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', ...' : ''}): every parameter must take part in the loss`);
    }
    groupFinish(this.processGroup.handle);
    const out = this.lossOut;
    this.lossOut = null;
    return out;
  }

  waitForDevice(): void {
    if (this.module.device === 'cuda') groupSyncDevice(this.processGroup.handle);
  }

  /**
   * One training step of a custom loop (the Trainer uses TrainStepRunner instead): forward, loss, backward with the
   * gradients averaged over the ranks, SGD. Returns the loss averaged over the ranks.
   */
  step(optimizer: SGD, images: Tensor, labels: Tensor): number {
    const params = this.module.namedParameters().map(({ param }) => param);
    const gate = (loss: Tensor) => {
      this.waitForDevice();
      return eagerGate(loss);
    };
    const out = runStep(this.module, optimizer, params, images, labels, gate, this.stepContext());
    try {
      return out.loss.item();
    } finally {
      out.logits.dispose();
      out.loss.dispose();
    }
  }

  /**
   * Before backward, what its collectives depend on (VGGNet.gradientForm): whether every rank has the same batch
   * size (their rows can be gathered) and hands the first classifier layer's weight gradient over alike (pooled in
   * the same geometry, or whole). One all-reduce of [1, code, code², rows, rows²] per step, where code encodes the
   * rank's map height and width (0: whole): every rank's value is the same exactly when n·Σv² = (Σv)²
   * (Cauchy–Schwarz); the sums are exact in float64. CUDA groups skip it: pooled gradients and gathered rows are
   * CPU-only, and a host round trip would break the step's capture.
   */
  private agreeOnForms(): void {
    this.pooledForm = null;
    this.sameHead = false;
    this.sharedRows = 0;
    if (this.processGroup.device !== 'cpu') return;
    const form = this.module.gradientForm();
    const g = form?.pooled ?? null;
    const code = g ? 1 + g[1] * (g[4] + 1) + g[2] : 0; // h ≤ oh, w ≤ ow: distinct per (h, w)
    const rows = form?.rows ?? 0;
    const [n, sum, squares, rowSum, rowSquares] = this.processGroup.allReduce([1, code, code * code, rows, rows * rows]);
    this.sameHead = n * squares === sum * sum;
    this.pooledForm = g && this.sameHead ? g : null;
    this.sharedRows = rows > 0 && n * rowSquares === rowSum * rowSum ? rows : 0;
  }

  /** The gradient a bucket all-reduces for p: the pooled buffer where the ranks agreed on it, else the whole one. */
  private gradientToReduce(p: Parameter): Tensor {
    if (!this.pooledForm || p !== this.pooledWeight) return p.grad;
    const g = p.gradForStep();
    if (!g.pooled || !g.pooled.every((v, i) => v === this.pooledForm![i])) {
      // Unreachable while gradientForm tells the truth: the other ranks are reducing a pooled buffer.
      throw new Error(`DistributedDataParallel: the ranks agreed to all-reduce ${this.bucketNameOf(p)}'s gradient pooled to ` +
        `${this.pooledForm.join('×')}, but this rank holds it ${g.pooled ? `pooled to ${g.pooled.join('×')}` : 'whole'}`);
    }
    return g.grad;
  }

  private bucketNameOf(p: Parameter): string {
    const b = this.plan[this.bucketOf.get(p)!];
    return b.names[b.params.indexOf(p)];
  }

  private bufferTensors(): Tensor[] {
    return this.module.namedBuffers().map(([, b]) => b).filter((b): b is Tensor => !(b instanceof Counter));
  }
}
