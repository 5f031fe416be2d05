// Trainer: the training loop of a VGGNet with an SGD optimizer — epochs over a DataLoader, evaluation every epoch in
// eval mode, an LR scheduler stepped once per epoch, checkpoints that resume exactly, progress, logs and plots.
//
//   const trainer = new Trainer(model, { optimizer: sgd({ lr: 0.01, momentum: 0.9 }), scheduler, checkpointDir });
//   await trainer.fit(trainLoader, { epochs: 10, validation: testLoader });
//   const { top1, confusion } = await trainer.evaluate(testLoader);
//
// Exact resume: a checkpoint holds the weights, BN statistics, momentum buffers, LR, scheduler state, the dropout
// layers' call counters and the loader position (epoch, batch); the DataLoader's order and augmentation are functions
// of (seed, epoch, index), so N epochs straight and N/2 + resume + N/2 give the same bits on the CPU backend.
//
// Distributed (`distributed: true` or a DistributedDataParallel, after initDistributed()): every rank runs fit() on
// its shard of the data (a DistributedSampler is put on loaders that have none: padded for training, exact for
// evaluation), gradients are averaged over the ranks in each step, the logged loss is the ranks' mean, the epoch's
// metrics are summed over the ranks (counts, not averages of averages), and only rank 0 prints, logs and writes
// checkpoints. A stop (Ctrl-C, stop()) on any rank stops every rank after the same step.
import * as path from 'path';
import { Tensor } from '../tensor';
import { VGGNet, Precision } from '../models/vgg';
import { Dropout } from '../nn/layers';
import { noGrad } from '../nn/module';
import { crossEntropy } from '../nn/loss';
import { SGD } from '../optim/sgd';
import { Scheduler } from '../optim/schedulers';
import type { DataLoader, Batch } from '../data';
import { augmentBatch } from '../data/augment';
import { TrainStepRunner } from './train_step';
import { MetricAccumulator, EvalResult } from './metrics';
import {
  CHECKPOINT_FORMAT, CheckpointMeta, LoadedCheckpoint, loadCheckpoint, modelSpec, packageVersion, saveCheckpoint,
} from './checkpoint';
import { probeWritableDir } from '../io/files';
import { Progress, ProgressStream, formatDuration } from './progress';
import { writeMetrics, EpochRecord, logEpochTensorBoard } from './logs';
import { TensorBoardWriter } from '../io/tensorboard';
import { Dashboard, DashboardOptions } from './dashboard';
import { DistributedDataParallel } from '../dist/ddp';
import { DistributedSampler } from '../dist/sampler';

/** What `onStep` gets after each optimizer step. */
export interface StepInfo {
  /** The epoch being trained, 0-based. */
  epoch: number;
  /** Batches done in this epoch, counting this one (1-based). */
  batch: number;
  /** Batches in an epoch. */
  batches: number;
  /** Optimizer steps so far, this one included. */
  step: number;
  /** This batch's mean cross-entropy. */
  loss: number;
  /** Samples in this batch. */
  batchSize: number;
  /** The learning rate this step used. */
  lr: number;
}

/** What `onEpochEnd` gets after each epoch (its checkpoints and logs written). */
export interface EpochInfo {
  /** The epoch just finished, 1-based (= completed epochs). */
  epoch: number;
  /** Its row of metrics.jsonl: loss, top-1/top-5, lr, time, img/s. */
  metrics: EpochRecord;
  /** The validation result (per-class accuracy, confusion matrix) when fit() was given a validation loader. */
  validation?: EvalResult;
  /** Whether this epoch has the best validation top-1 so far (and was saved as `best`). */
  isBest: boolean;
}

/** The part of an AbortSignal the Trainer uses (Node's and the DOM's both fit; no @types/node needed to name it). */
export interface AbortSignalLike {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void): void;
}

export interface TrainerOptions {
  /** The optimizer, `sgd({ lr, momentum, weightDecay })`; the Trainer steps it and saves its state in checkpoints. */
  optimizer: SGD;
  /** Stepped once per epoch after validation (`reduceLROnPlateau`, `stepLR`, `cosineAnnealing`, `linearWarmup`). */
  scheduler?: Scheduler | null;
  /** Where last/best/epoch-NNNN.safetensors go (created). No checkpoints when unset. */
  checkpointDir?: string;
  /** Also keep epoch-NNNN.safetensors every this many epochs (0: never). */
  saveEvery?: number;
  /** Where metrics.jsonl, metrics.csv, metrics.svg and a TensorBoard event file go (created). No logs when unset. */
  logDir?: string;
  /** Write the TensorBoard event file in logDir (default true). */
  tensorboard?: boolean;
  /** TensorBoard gets the training loss every this many steps (default 10), besides the per-epoch scalars. */
  logEvery?: number;
  /** Must match the model's precision when given (the model owns it: vgg16({ precision })). */
  precision?: Precision;
  /** Class names, saved in checkpoints (default: the training dataset's). */
  classes?: string[];
  /** Run configuration saved in checkpoint metadata (the CLI saves its options). */
  config?: Record<string, unknown>;
  /** Progress bar / lines and per-epoch summaries go here (default process.stdout); null: silent. */
  output?: ProgressStream | null;
  /** What the per-epoch summary calls the validation set (default 'val'; the CLI, which validates on the test split: 'test'). */
  validationName?: string;
  /** Force the TTY progress bar on or off (default: output.isTTY). */
  tty?: boolean;
  /** Show the progress bar / periodic lines (default true; the per-epoch summaries are printed either way). */
  progress?: boolean;
  /** Seconds between plain progress lines when not on a TTY (default 10). */
  progressInterval?: number;
  /** Called after every optimizer step; fit() awaits it. */
  onStep?: (info: StepInfo) => void | Promise<void>;
  /** Called after every epoch (validation, scheduler step, checkpoints and logs done); fit() awaits it. */
  onEpochEnd?: (info: EpochInfo) => void | Promise<void>;
  /** Called after each checkpoint file is written, with its path and kind. */
  onCheckpoint?: (file: string, kind: 'last' | 'best' | 'epoch') => void;
  /** Aborting finishes the current step, saves `last` and makes fit() return with interrupted: true. */
  signal?: AbortSignalLike;
  /**
   * A live page while fit() runs (lib/train/dashboard.ts): loss/accuracy curves, learning rate, img/s, the last
   * evaluation and a few test images with their predictions. Options: the Trainer starts it when fit() starts (the URL
   * is printed to `output`) and closes it when fit() ends. A Dashboard you made: you start and close it.
   */
  dashboard?: DashboardOptions | Dashboard;
  /**
   * Model on CUDA: run the training transform on the GPU from uint8 batches (the loader's `deferAugment`). Default:
   * on when the loader's transform and dataset allow it (`loader.augmentSupport()` is null), else the CPU transforms;
   * true: required (an error says why it cannot be); false: always the CPU transforms. No effect on a CPU model.
   */
  gpuAugment?: boolean;
  /**
   * Model on CUDA: capture the training step as a CUDA graph once a batch shape has run two eager steps, and replay
   * it (lib/train/train_step.ts). Default true; a failed capture prints why and the run goes on eagerly. No effect on a
   * CPU model.
   */
  cudaGraph?: boolean;
  /**
   * Data-parallel training over the default process group (true: DistributedDataParallel with its defaults), or
   * over the given wrapper of this model (bucket size, bf16 compression, SyncBatchNorm). Needs initDistributed().
   */
  distributed?: boolean | DistributedDataParallel;
}

export interface FitOptions {
  /** Train until this many epochs are complete, counting those of a resumed run. */
  epochs: number;
  /** Evaluated after every epoch (loss, top-1/top-5, per-class accuracy, confusion matrix); picks `best`. */
  validation?: DataLoader | null;
  /** A checkpoint to continue from (or call trainer.resume() first). */
  resume?: string;
}

export interface FitResult {
  /** Completed epochs. */
  epochs: number;
  step: number;
  history: EpochRecord[];
  best: { top1: number; epoch: number } | null;
  /** The last epoch's full validation result (per-class accuracy, confusion matrix). */
  validation?: EvalResult;
  interrupted: boolean;
  /** The checkpoint written last (where to resume from). */
  lastCheckpoint?: string;
}

export class TrainingDivergedError extends Error {
  constructor(message: string, readonly lastCheckpoint?: string) {
    super(message);
    this.name = 'TrainingDivergedError';
  }
}

const tick = () => new Promise<void>((r) => setImmediate(r));

/** A batch with its images and labels on the model's device (the images transformed when augmentation was deferred). */
interface DeviceBatch {
  batch: Batch;
  images: Tensor;
  labels: Tensor;
}
/** A batch whose host->device copies have been started (CUDA). */
interface StagedBatch {
  batch: Batch;
  images: Tensor;
  labels: Tensor;
  params: Tensor | null;
}

export class Trainer {
  readonly model: VGGNet;
  readonly optimizer: SGD;
  readonly scheduler: Scheduler | null;
  readonly options: TrainerOptions;
  /** Completed epochs. */
  epoch = 0;
  /** Batches of epoch `epoch` already trained (mid-epoch resume). */
  batchInEpoch = 0;
  /**
   * Samples of epoch `epoch` already trained: where a mid-epoch resume continues in the epoch's sample order, whatever
   * the batch size (-1 after resuming a checkpoint that predates it: batchInEpoch × the loader's batch size).
   */
  sampleInEpoch = 0;
  step = 0;
  history: EpochRecord[] = [];
  best: { top1: number; epoch: number } | null = null;
  lastValidation?: EvalResult;
  private partial: Record<string, number> | null = null;
  private schedulerAttached = false;
  private stopRequested = false;
  private loaderInfo: { seed: number; shuffle: boolean; batchSize: number } | null = null;
  private classes: string[] | null;
  private lastSaved: string | undefined;
  private stepper: TrainStepRunner | null = null;
  /** The live dashboard (TrainerOptions.dashboard), or null; `trainer.dashboard.url` once fit() is serving it. */
  readonly dashboard: Dashboard | null;
  private readonly ownsDashboard: boolean;
  /** The data-parallel wrapper when distributed, else null. */
  readonly ddp: DistributedDataParallel | null;
  /** Whether this process prints, logs and writes checkpoints (rank 0, or the only process). */
  readonly isMain: boolean;

  constructor(model: VGGNet, options: TrainerOptions) {
    if (!(model instanceof VGGNet)) throw new TypeError('Trainer: expected a VGGNet model');
    if (!options || !(options.optimizer instanceof SGD)) throw new TypeError('Trainer: options.optimizer must be an SGD optimizer (sgd({ lr, ... }))');
    if (options.precision && options.precision !== model.precision) {
      throw new Error(`Trainer: precision '${options.precision}' differs from the model's '${model.precision}'; build the model with { precision: '${options.precision}' }`);
    }
    const se = options.saveEvery ?? 0;
    if (!Number.isInteger(se) || se < 0) throw new RangeError(`Trainer: saveEvery must be an integer >= 0, got ${se}`);
    this.model = model;
    this.optimizer = options.optimizer;
    this.scheduler = options.scheduler ?? null;
    this.options = options;
    this.classes = options.classes ?? null;
    const d = options.distributed;
    if (d instanceof DistributedDataParallel && d.module !== model) throw new Error('Trainer: options.distributed wraps another model than the one being trained');
    this.ddp = d instanceof DistributedDataParallel ? d : d ? new DistributedDataParallel(model) : null;
    this.isMain = !this.ddp || this.ddp.processGroup.rank === 0;
    const dash = options.dashboard;
    this.ownsDashboard = this.isMain && dash !== undefined && !(dash instanceof Dashboard);
    // Distributed: rank 0 serves the dashboard (the others would only fight for its port).
    this.dashboard = dash === undefined || !this.isMain ? null : dash instanceof Dashboard ? dash : new Dashboard(dash);
    options.signal?.addEventListener('abort', () => this.stop());
  }

  /**
   * Ask the loop to stop after the current step; fit() then saves `last` and returns interrupted: true. Distributed:
   * every rank stops after the same step (the vote travels with the next step's collectives).
   */
  stop(): void {
    this.stopRequested = true;
    this.ddp?.requestStop();
  }

  /** Whether to stop now: this process's request, or, distributed, any rank's vote in the last step. */
  private get stopAgreed(): boolean {
    return this.ddp ? this.ddp.stopAgreed() : this.stopRequested;
  }

  private get out(): ProgressStream | null {
    if (!this.isMain) return null;
    return this.options.output === undefined ? process.stdout : this.options.output;
  }

  /**
   * Distributed: the metrics summed over the ranks (and whether any rank wants to stop), in one collective. Counts
   * stay exact (float64).
   */
  private reduceMetrics(acc: MetricAccumulator, withConfusion: boolean): boolean {
    if (!this.ddp) return this.stopRequested;
    const c = acc.numClasses;
    const v = [acc.lossSum, acc.correct1, acc.correct5, acc.samples, this.stopRequested ? 1 : 0];
    if (withConfusion) for (const row of acc.confusion) v.push(...row);
    const r = this.ddp.processGroup.allReduce(v);
    acc.loadState({ lossSum: r[0], correct1: r[1], correct5: r[2], samples: r[3] });
    if (withConfusion) for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) acc.confusion[i][j] = r[5 + i * c + j];
    return r[4] > 0;
  }

  /** Distributed: this rank's shard of a loader that has no DistributedSampler of its own. */
  private shard(loader: DataLoader, train: boolean): DataLoader {
    if (!this.ddp || loader.sampler instanceof DistributedSampler) return loader;
    const pg = this.ddp.processGroup;
    return loader.withSampler(new DistributedSampler(loader.dataset, {
      numReplicas: pg.worldSize, rank: pg.rank, shuffle: train && loader.shuffle, seed: loader.seed, pad: train,
    }));
  }
  private log(line: string): void {
    this.out?.write(line + '\n');
  }

  private dropouts(): Dropout[] {
    return this.model.classifier.layers.filter((m): m is Dropout => m instanceof Dropout);
  }

  /**
   * Loss, top-1, top-5, per-class accuracy and confusion matrix over every sample of the loader, in eval mode.
   * Distributed: each rank evaluates its shard with rank 0's BatchNorm statistics, and the counts are summed.
   */
  async evaluate(loader: DataLoader): Promise<EvalResult> {
    const model = this.model;
    const wasTraining = model.training;
    model.eval();
    const acc = new MetricAccumulator(model.options.numClasses);
    this.ddp?.broadcastBuffers();
    try {
      // Weights are constant for the whole pass: derived ones are worked out once (see VGGNet.withFrozenWeights).
      await model.withFrozenWeights(async () => {
        for await (const { batch, images, labels } of this.onDevice(this.shard(loader, false).iterate(0))) {
          try {
            const logits = noGrad(() => model.forward(images)); // keeps no activations
            const { loss, grad } = crossEntropy(logits, labels);
            grad.dispose();
            acc.add(logits.toArray() as Float32Array, labels.toArray() as Int32Array, loss);
            logits.dispose();
          } finally {
            this.disposeBatch(batch, images, labels);
          }
          await tick();
        }
      });
    } finally {
      model.train(wasTraining);
    }
    if (this.reduceMetrics(acc, true)) this.stopRequested = true;
    return acc.result();
  }

  private toDevice(batch: Batch): { images: Tensor; labels: Tensor } {
    const dev = this.model.device;
    return {
      images: batch.images.device === dev ? batch.images : batch.images.to(dev),
      labels: batch.labels.device === dev ? batch.labels : batch.labels.to(dev),
    };
  }
  private disposeBatch(batch: Batch, images: Tensor, labels: Tensor): void {
    for (const t of new Set([batch.images, batch.labels, images, labels])) t.dispose();
  }

  /**
   * The loader's batches on the model's device. On the CPU: toDevice, nothing else. On CUDA, one batch of lookahead:
   * batch i+1's host->device copies are started (non-blocking: pinned staging, their own stream) before batch i is
   * handed out, so they overlap batch i's step; a deferred augmentation is queued when its batch is handed out.
   */
  private async *onDevice(batches: AsyncIterable<Batch>): AsyncGenerator<DeviceBatch> {
    if (this.model.device !== 'cuda') {
      for await (const batch of batches) yield { batch, ...this.toDevice(batch) };
      return;
    }
    let ahead: StagedBatch | null = null;
    try {
      for await (const batch of batches) {
        const cur: StagedBatch | null = ahead;
        ahead = null;
        try {
          ahead = this.stage(batch);
        } catch (e) {
          if (cur) this.disposeStaged(cur);
          throw e;
        }
        if (cur) yield this.finish(cur);
      }
      if (ahead) {
        const last: StagedBatch = ahead;
        ahead = null;
        yield this.finish(last);
      }
    } finally {
      if (ahead) this.disposeStaged(ahead); // abandoned (break, stop, error): the batch copied ahead
    }
  }

  private stage(batch: Batch): StagedBatch {
    // Checked here, on the host: a captured step cannot copy labels back to check them (its loss would be NaN).
    const nc = this.model.options.numClasses;
    const ys = batch.labels.toArray() as Int32Array;
    for (let i = 0; i < ys.length; i++) {
      if (!(ys[i] >= 0 && ys[i] < nc)) {
        for (const t of [batch.images, batch.labels, batch.augment?.params]) t?.dispose();
        throw new RangeError(`Trainer: label ${ys[i]} at index ${i} of a batch is out of range [0, ${nc})`);
      }
    }
    const made: Tensor[] = [];
    const copy = (t: Tensor): Tensor => {
      const d = t.to('cuda', { nonBlocking: true });
      made.push(d);
      return d;
    };
    try {
      return {
        batch,
        images: copy(batch.images),
        labels: copy(batch.labels),
        params: batch.augment ? copy(batch.augment.params) : null,
      };
    } catch (e) {
      for (const t of made) t.dispose();
      throw e;
    } finally {
      // staged (or failed): the host copies are no longer needed
      batch.images.dispose();
      batch.labels.dispose();
      batch.augment?.params.dispose();
    }
  }

  private finish(s: StagedBatch): DeviceBatch {
    const aug = s.batch.augment;
    if (!aug || !s.params) return { batch: s.batch, images: s.images, labels: s.labels };
    try {
      // What VGGNet.forward converts its input to (lib/models/vgg.ts): the compute dtype, channels-last except in
      // strict fp32; writing exactly that spares the conversion.
      const m = this.model;
      const images = augmentBatch(s.images, { params: s.params, ops: aug.ops }, {
        dtype: m.precision === 'bf16' ? 'bfloat16' : 'float32',
        layout: m.precision === 'fp32' ? 'nchw' : 'nhwc',
      });
      return { batch: s.batch, images, labels: s.labels };
    } catch (e) {
      s.labels.dispose();
      throw e;
    } finally {
      s.images.dispose(); // the uint8 source (the kernels reading it are queued: the allocator orders its reuse)
      s.params.dispose();
    }
  }

  private disposeStaged(s: StagedBatch): void {
    s.images.dispose();
    s.labels.dispose();
    s.params?.dispose();
  }

  /** Whether fit() defers the training transform to the GPU for this loader (see TrainerOptions.gpuAugment). */
  private gpuAugmentFor(loader: DataLoader): boolean {
    const want = this.options.gpuAugment;
    if (this.model.device !== 'cuda' || want === false) return false;
    const why = loader.augmentSupport();
    if (why !== null && want === true) throw new Error(`Trainer: gpuAugment: ${why}`);
    return why === null;
  }

  /** Restores everything from a checkpoint written by this trainer (or the CLI). */
  resume(source: string | LoadedCheckpoint): CheckpointMeta {
    const ck = typeof source === 'string' ? loadCheckpoint(source) : source;
    const name = typeof source === 'string' ? source : source.source ?? 'checkpoint';
    try {
      const meta = ck.meta;
      const spec = modelSpec(this.model);
      if (JSON.stringify(meta.model.config) !== JSON.stringify(spec.config) || meta.model.numClasses !== spec.numClasses ||
          meta.model.batchNorm !== spec.batchNorm || meta.model.hiddenFeatures !== spec.hiddenFeatures) {
        throw new Error(`${name}: the checkpoint is of a different model (${meta.model.name ?? JSON.stringify(meta.model.config)}, ` +
          `${meta.model.numClasses} classes, batchNorm ${meta.model.batchNorm}) than the one being trained (${spec.name ?? JSON.stringify(spec.config)}, ` +
          `${spec.numClasses} classes, batchNorm ${spec.batchNorm})`);
      }
      // Everything that can be checked is checked before anything changes, so a bad checkpoint leaves the run as it was.
      const drops = this.dropouts();
      const saved = meta.rng?.dropout ?? [];
      if (saved.length !== drops.length) throw new Error(`${name}: RNG state for ${saved.length} dropout layers, the model has ${drops.length}`);
      this.optimizer.checkStateDict(this.model.namedParameters(), ck.optimizer as Record<string, Tensor>, name);
      if (this.scheduler && meta.scheduler) {
        try {
          this.scheduler.loadState(meta.scheduler); // checks the whole state before setting any of it
        } catch (e) {
          throw new Error(`${name}: checkpoint metadata 'scheduler': ${(e as Error).message}`);
        }
      }
      this.model.loadStateDict(ck.model, { strict: true });
      this.optimizer.loadStateDict(this.model.namedParameters(), ck.optimizer as Record<string, Tensor>, name);
      this.optimizer.stepCount = meta.step;
      if (this.scheduler) {
        if (!meta.scheduler) this.scheduler.attach(meta.lr);
        this.schedulerAttached = true;
      }
      // The schedule is the truth: the same as meta.lr unless its shape changed (a cosine re-planned over more epochs).
      this.optimizer.lr = this.scheduler ? this.scheduler.lr : meta.lr;
      drops.forEach((d, i) => {
        d.seed = saved[i].seed;
        d.calls = saved[i].calls;
      });
      // Rank 0's checkpoint: every rank's dropout seeds derive from it.
      this.ddp?.applyRankSeeds();
      // A mid-epoch position counts samples in rank 0's shard of that world: only the same number of processes can
      // continue from it (one process too: its order is not the shards').
      const w = meta.rng?.loader?.worldSize ?? 1;
      const here = this.ddp ? this.ddp.processGroup.worldSize : 1;
      if (meta.batchInEpoch > 0 && w !== here) {
        throw new Error(`${name}: the checkpoint was taken mid-epoch (batch ${meta.batchInEpoch}) by ${w} process(es), and this run has ${here}; ` +
          `resume it with ${w} (or from a checkpoint at an epoch's end, which any number can resume)`);
      }
      this.epoch = meta.epoch;
      this.batchInEpoch = meta.batchInEpoch;
      const sample = meta.rng?.loader?.sample;
      if (sample !== undefined && !(Number.isSafeInteger(sample) && sample >= 0)) {
        throw new TypeError(`${name}: checkpoint metadata 'rng.loader.sample': expected a non-negative integer, got ${JSON.stringify(sample)}`);
      }
      this.sampleInEpoch = meta.batchInEpoch === 0 ? 0 : sample ?? -1;
      this.step = meta.step;
      this.history = meta.history ?? [];
      this.best = meta.best;
      // The partial epoch's metrics are summed over the ranks already: rank 0 carries them.
      this.partial = this.isMain ? meta.partial : null;
      if (meta.classes) this.classes = meta.classes;
      this.lastSaved = typeof source === 'string' ? source : undefined;
      return meta;
    } finally {
      if (typeof source === 'string') ck.dispose();
    }
  }

  private meta(metrics: EpochRecord | null, loaderEpochBatch: number): CheckpointMeta {
    const o = this.optimizer;
    return {
      format: CHECKPOINT_FORMAT,
      packageVersion: packageVersion(),
      epoch: this.epoch,
      batchInEpoch: loaderEpochBatch,
      step: this.step,
      lr: o.lr,
      model: modelSpec(this.model),
      config: this.options.config ?? {},
      hyperParameters: {
        optimizer: 'sgd', lr: o.lr, momentum: o.momentum, dampening: o.dampening, weightDecay: o.weightDecay, nesterov: o.nesterov,
        scheduler: this.scheduler?.type ?? null,
      },
      scheduler: this.scheduler ? this.scheduler.state() : null,
      rng: {
        dropout: this.dropouts().map((d) => ({ seed: d.seed, calls: d.calls })),
        loader: this.loaderInfo
          ? {
            ...this.loaderInfo, epoch: this.epoch, batch: loaderEpochBatch, sample: loaderEpochBatch > 0 ? this.sampleInEpoch : 0,
            ...(this.ddp ? { worldSize: this.ddp.processGroup.worldSize } : {}),
          }
          : null,
      },
      metrics,
      partial: loaderEpochBatch > 0 ? this.partial : null,
      history: this.history,
      best: this.best,
      classes: this.classes,
      created: new Date().toISOString(),
    };
  }

  private save(kind: 'last' | 'best' | 'epoch', metrics: EpochRecord | null, batchInEpoch = 0): string | undefined {
    const dir = this.options.checkpointDir;
    if (!dir) return undefined;
    if (!this.isMain) {
      // Rank 0 writes; the others know where.
      const file = path.join(dir, kind === 'epoch' ? `epoch-${String(this.epoch).padStart(4, '0')}.safetensors` : `${kind}.safetensors`);
      if (kind === 'last') this.lastSaved = file;
      return file;
    }
    const file = path.join(dir, kind === 'epoch' ? `epoch-${String(this.epoch).padStart(4, '0')}.safetensors` : `${kind}.safetensors`);
    saveCheckpoint(file, this.model.stateDict(), this.optimizer.stateDict(this.model.namedParameters()), this.meta(metrics, batchInEpoch));
    if (kind === 'last') this.lastSaved = file;
    this.options.onCheckpoint?.(file, kind);
    return file;
  }

  /** About what one checkpoint file takes: the state dict and the momentum buffers as float32, and the metadata. */
  private checkpointBytes(): number {
    let n = 0;
    for (const v of Object.values(this.model.stateDict())) n += typeof v === 'bigint' ? 8 : 4 * v.shape.reduce((a, b) => a * b, 1);
    const params = this.model.namedParameters().reduce((a, { param }) => a + 4 * param.shape.reduce((x, y) => x * y, 1), 0);
    return n + (this.optimizer.momentum !== 0 ? params : 0) + (1 << 20);
  }

  private writeLogs(): void {
    if (this.options.logDir && this.isMain) writeMetrics(this.options.logDir, this.history);
  }

  async fit(trainLoader: DataLoader, options: FitOptions): Promise<FitResult> {
    const { epochs, validation = null } = options;
    const loader = this.shard(trainLoader, true);
    if (!Number.isInteger(epochs) || epochs < 0) throw new RangeError(`Trainer.fit: epochs must be an integer >= 0, got ${epochs}`);
    if (options.resume) this.resume(options.resume);
    // A read-only, missing-parent or full folder is found now, not when the first checkpoint is saved after an epoch.
    if (this.options.checkpointDir && this.isMain) probeWritableDir(this.options.checkpointDir, this.checkpointBytes(), 'Trainer: checkpoint folder');
    if (this.options.logDir && this.isMain) probeWritableDir(this.options.logDir, 0, 'Trainer: log folder');
    this.stopRequested = this.stopRequested || Boolean(this.options.signal?.aborted);
    const model = this.model;
    const opt = this.optimizer;
    const stepper = (this.stepper ??= new TrainStepRunner(model, opt, {
      cudaGraph: this.options.cudaGraph,
      onGraphDisabled: (reason) => this.log(`note: ${reason}`),
      distributed: this.ddp ?? undefined,
    }));
    await loader.dataset.load();
    if (validation) await validation.dataset.load();
    this.classes = this.classes ?? (loader.dataset.classes?.length ? loader.dataset.classes : null);
    this.loaderInfo = { seed: trainLoader.seed, shuffle: trainLoader.shuffle, batchSize: trainLoader.batchSize };
    if (this.scheduler && !this.schedulerAttached) {
      opt.lr = this.scheduler.attach(opt.lr);
      this.schedulerAttached = true;
    }
    const numClasses = model.options.numClasses;
    const dash = this.dashboard;
    if (dash) {
      try {
        if (!dash.listening) this.log(`dashboard: ${await dash.start()}`);
        await dash.beginFit({
          title: `${model.options.name ?? 'vgg'} on ${model.device} (${model.precision})`, model,
          classes: this.classes ?? Array.from({ length: numClasses }, (_, i) => String(i)), epochs, batches: loader.length,
          history: this.history, step: this.step, samplesFrom: validation ? validation.dataset : null,
        });
      } catch (e) {
        if (this.ownsDashboard) await dash.close(); // a listening server would keep the process alive
        throw e;
      }
    }
    let status: 'done' | 'interrupted' | 'failed' = 'failed';
    let failure = '';
    const progress = this.out && this.options.progress !== false ? new Progress(this.out, { tty: this.options.tty, interval: this.options.progressInterval }) : null;
    const tb = this.options.logDir && this.options.tensorboard !== false && this.isMain ? new TensorBoardWriter(this.options.logDir) : null;
    const logEvery = this.options.logEvery ?? 10;
    const result = (interrupted: boolean): FitResult => ({
      epochs: this.epoch, step: this.step, history: this.history, best: this.best, validation: this.lastValidation,
      interrupted, lastCheckpoint: this.lastSaved,
    });

    try {
      while (this.epoch < epochs) {
        const e = this.epoch;
        // Resume at the same sample of the epoch's order; with another batch size than the checkpoint's, the batches
        // before it are counted as floor(sample / batch size).
        const startSample = this.sampleInEpoch >= 0 ? this.sampleInEpoch : this.batchInEpoch * loader.batchSize;
        const n = loader.samplesPerEpoch; // distributed: this rank's shard, and startSample counts in it
        if (startSample > 0 && startSample >= n) {
          throw new RangeError(`Trainer: the checkpoint resumes epoch ${e + 1} at sample ${startSample}, but the training set${this.ddp ? "'s shard of each rank" : ''} has ${n} samples`);
        }
        const startBatch = Math.floor(startSample / loader.batchSize);
        const rest = loader.dropLast ? Math.floor((n - startSample) / loader.batchSize) : Math.ceil((n - startSample) / loader.batchSize);
        const batches = startBatch + rest;
        this.batchInEpoch = startBatch;
        this.sampleInEpoch = startSample;
        model.train();
        const acc = new MetricAccumulator(numClasses);
        if (startBatch > 0 && this.partial) acc.loadState(this.partial as never);
        const t0 = Date.now();
        let seen = 0;
        progress?.start(startBatch);
        const deferAugment = this.gpuAugmentFor(loader);
        for await (const { batch, images, labels } of this.onDevice(loader.iterate(e, { startSample, deferAugment }))) {
          const bn = labels.shape[0];
          let loss: number;
          try {
            const r = stepper.run(images, labels);
            loss = r.loss;
            if (!Number.isFinite(loss)) {
              const where = this.lastSaved ? `the last good checkpoint is ${this.lastSaved} (not overwritten)` : 'no checkpoint was written';
              throw new TrainingDivergedError(
                `training diverged: the loss is ${loss} at epoch ${e + 1}, batch ${this.batchInEpoch + 1} (step ${this.step + 1}, lr ${opt.lr}); ` +
                `stopped before updating the weights; ${where}. Try a lower learning rate (--lr) or batch norm (--batch-norm).`,
                this.lastSaved,
              );
            }
            acc.add(r.logits, labels.toArray() as Int32Array, loss);
          } finally {
            this.disposeBatch(batch, images, labels);
          }
          this.step++;
          this.batchInEpoch++;
          this.sampleInEpoch += bn;
          seen += bn;
          this.partial = acc.state();
          if (tb && logEvery > 0 && this.step % logEvery === 0) tb.addScalar('loss/train_step', loss, this.step);
          dash?.step({ epoch: e, batch: this.batchInEpoch, batches, step: this.step, loss, batchSize: bn, lr: opt.lr });
          if (this.options.onStep) {
            await this.options.onStep({ epoch: e, batch: this.batchInEpoch, batches, step: this.step, loss, batchSize: bn, lr: opt.lr });
          }
          progress?.update({ epoch: e + 1, epochs, batch: this.batchInEpoch, batches, samples: seen, loss: acc.loss, acc: acc.top1, lr: opt.lr }, this.batchInEpoch === batches);
          await tick(); // keep the event loop responsive (signals, I/O, timers) between steps
          if (this.stopAgreed && this.batchInEpoch < batches) {
            progress?.end();
            if (this.ddp) {
              // Every rank stops here: the partial epoch's metrics, summed over the ranks, go into rank 0's checkpoint.
              const all = new MetricAccumulator(numClasses);
              all.loadState(acc.state());
              this.reduceMetrics(all, false);
              this.partial = all.state();
            }
            this.save('last', null, this.batchInEpoch);
            status = 'interrupted';
            return result(true);
          }
        }
        progress?.end();
        // Deferred updates (lib/optim/deferred.ts) end here, in every run alike: the epoch's checkpoints then hold
        // plain weights and momentum buffers, and each epoch's deferral starts from the weights it saved.
        opt.settle();
        // Distributed: the epoch's training metrics over every rank's samples (and any rank's stop request).
        if (this.reduceMetrics(acc, false)) this.stopRequested = true;
        if (this.ddp) seen *= this.ddp.processGroup.worldSize; // every rank trains as many samples (the sampler pads)
        const trainTime = (Date.now() - t0) / 1000;
        const lrUsed = opt.lr;
        let val: EvalResult | undefined;
        if (validation) {
          dash?.evaluating();
          val = await this.evaluate(validation);
          this.lastValidation = val;
          if (!Number.isFinite(val.loss)) {
            throw new TrainingDivergedError(`training diverged: the validation loss is ${val.loss} after epoch ${e + 1} (lr ${lrUsed}); ` +
              `${this.lastSaved ? `the last good checkpoint is ${this.lastSaved} (not overwritten)` : 'no checkpoint was written'}.`, this.lastSaved);
          }
        }
        const rec: EpochRecord = {
          epoch: e + 1, step: this.step, lr: lrUsed, 'train.loss': acc.loss, 'train.top1': acc.top1,
          ...(val ? { 'val.loss': val.loss, 'val.top1': val.top1, 'val.top5': val.top5 } : {}),
          time_s: Number(((Date.now() - t0) / 1000).toFixed(3)), img_per_s: Number((seen / Math.max(1e-9, trainTime)).toFixed(2)),
          'train.top5': acc.top5,
        };
        this.history.push(rec);
        const isBest = val !== undefined && (this.best === null || val.top1 > this.best.top1);
        if (isBest) this.best = { top1: val!.top1, epoch: e + 1 };
        if (this.scheduler) opt.lr = this.scheduler.step(rec);
        this.epoch = e + 1;
        this.batchInEpoch = 0;
        this.sampleInEpoch = 0;
        this.partial = null;
        this.save('last', rec);
        if (isBest) this.save('best', rec);
        const se = this.options.saveEvery ?? 0;
        if (se > 0 && this.epoch % se === 0) this.save('epoch', rec);
        this.writeLogs();
        if (tb) await logEpochTensorBoard(tb, rec, this.step, val);
        this.log(
          `epoch ${e + 1}/${epochs}  train loss ${acc.loss.toFixed(4)} top1 ${(100 * acc.top1).toFixed(2)}%` +
          (val ? `  ${this.options.validationName ?? 'val'} loss ${val.loss.toFixed(4)} top1 ${(100 * val.top1).toFixed(2)}% top5 ${(100 * val.top5).toFixed(2)}%` : '') +
          `  lr ${lrUsed.toPrecision(3)}${opt.lr !== lrUsed ? `→${opt.lr.toPrecision(3)}` : ''}  ${formatDuration(rec.time_s)} ${rec.img_per_s.toFixed(1)} img/s${isBest ? '  *best' : ''}`,
        );
        await dash?.endEpoch(rec, val);
        if (this.options.onEpochEnd) await this.options.onEpochEnd({ epoch: e + 1, metrics: rec, validation: val, isBest });
        if (this.stopRequested && this.epoch < epochs) { // (distributed: agreed in reduceMetrics)
          status = 'interrupted';
          return result(true);
        }
      }
      this.writeLogs();
      status = 'done';
      return result(false);
    } catch (err) {
      failure = (err as Error).message;
      throw err;
    } finally {
      stepper.dispose(); // the graph's memory goes back; the next fit() captures again
      tb?.close();
      if (dash) {
        dash.endFit(status, failure);
        if (this.ownsDashboard && !dash.keepOpen) await dash.close();
      }
    }
  }
}
