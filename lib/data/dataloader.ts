// DataLoader: batches of (images float32 [N,3,H,W], labels int32 [N]) assembled natively on worker threads, with
// `prefetch` batches in flight so the next batches are prepared while the caller trains on this one.
//
// Order and augmentation are functions of (seed, epoch): the shuffle is a seeded permutation per epoch and each
// sample's transform randomness comes from (seed, epoch, dataset index) — so an epoch is reproducible whatever the
// thread count, and `iterate(epoch, { startBatch })` resumes exactly mid-epoch.
import * as os from 'os';
import { Tensor } from '../tensor';
import { Dataset } from './dataset';
import { flatten, TransformOp } from './transforms';
import { DeferredAugment } from './augment';
import { augmentSupport, loadBatch } from './native_source';

/** Which dataset indices an epoch visits, in order (DistributedSampler: this rank's shard). */
export interface Sampler {
  /** Indices per epoch (the dataset must be loaded). */
  readonly length: number;
  indices(epoch: number): Int32Array;
}

export interface DataLoaderOptions {
  /** Samples per batch (default 1). */
  batchSize?: number;
  /** A new seeded permutation every epoch (default false: dataset order). */
  shuffle?: boolean;
  /** Decides the order instead of `shuffle` (which must then be false), e.g. a DistributedSampler. */
  sampler?: Sampler;
  /** Drives the shuffle and the augmentation: a sample's transform is a function of (seed, epoch, index). Default 0. */
  seed?: number;
  /** Drop the last batch when it is smaller than batchSize (default false: it is kept). */
  dropLast?: boolean;
  /** Threads per batch (default os.availableParallelism()). */
  workers?: number;
  /** Batches in flight ahead of the consumer (default 2; at most 3 so libuv's pool keeps a thread for I/O). */
  prefetch?: number;
  /** The epoch the next `for await` iterates (default 0); it advances by one after each complete pass. */
  epoch?: number;
}

export interface Batch {
  /**
   * float32 [N, C, H, W]. The consumer owns the tensors (dispose them, or the finaliser frees them). With
   * `deferAugment`: the untransformed uint8 [N, 3, H, W] images, to be passed to `augmentBatch` with `augment`.
   */
  images: Tensor;
  /** int32 [N] (-1 for unlabeled samples). */
  labels: Tensor;
  /** Dataset indices of the samples. */
  indices: Int32Array;
  /** Position of this batch in the epoch. */
  batch: number;
  epoch: number;
  /** Only with `deferAugment`: the transform left to run (on the GPU) and each sample's drawn parameters. */
  augment?: DeferredAugment;
}

export interface IterateOptions {
  /** Skip the first batches of the epoch (exact resume). */
  startBatch?: number;
  /**
   * Skip the first samples of the epoch's order instead, and batch from there (resume at the same sample with another
   * batch size). The batches' `batch` numbers then count from floor(startSample / batchSize). Not with startBatch.
   */
  startSample?: number;
  /**
   * Ship the source images as uint8 plus each sample's transform parameters (drawn exactly as the CPU pipeline draws
   * them) instead of transforming on the worker threads; `augmentBatch` then runs the transform, on the GPU for
   * CUDA tensors. Needs a pipeline and dataset `augmentSupport()` accepts (null), else iterating throws its reason.
   */
  deferAugment?: boolean;
}

// Seeded permutation: Fisher-Yates over a 32-bit counter hash of (seed, epoch, step); cheap for 100k samples.
function hash32(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35) ^ Math.imul(c ^ 0x165667b1, 0x27d4eb2f);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
export function permutation(n: number, seed: number, epoch: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const s = hash32(seed >>> 0, Math.floor(seed / 4294967296), 0x5eed);
  for (let i = n - 1; i > 0; i--) {
    const u = (hash32(s, epoch, i) * 2097152 + (hash32(s ^ 0xabcdef, epoch, i) >>> 11)) / 9007199254740992;
    const j = Math.floor(u * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

export class DataLoader implements AsyncIterable<Batch> {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly workers: number;
  readonly prefetch: number;
  readonly sampler: Sampler | null;
  /** The epoch the next `for await (... of loader)` iterates. */
  epoch: number;
  private readonly ops: TransformOp[];
  private readonly options: DataLoaderOptions;

  constructor(dataset: Dataset, options: DataLoaderOptions = {}) {
    if (typeof dataset !== 'object' || dataset === null || typeof (dataset as Dataset).get !== 'function' || typeof (dataset as Dataset).load !== 'function') {
      throw new TypeError(`DataLoader: expected a dataset (STL10, ImageFolder, ImageFiles, ...), got ${dataset === null ? 'null' : typeof dataset}`);
    }
    this.dataset = dataset;
    this.options = { ...options };
    this.batchSize = options.batchSize ?? 1;
    this.shuffle = options.shuffle ?? false;
    this.sampler = options.sampler ?? null;
    if (this.sampler && this.shuffle) throw new Error('DataLoader: sampler and shuffle: true exclude each other (the sampler decides the order)');
    this.seed = options.seed ?? 0;
    this.dropLast = options.dropLast ?? false;
    this.workers = options.workers ?? (os.availableParallelism?.() ?? os.cpus().length);
    this.prefetch = options.prefetch ?? 2;
    this.epoch = options.epoch ?? 0;
    const int = (v: number, name: string, min: number): void => {
      if (!Number.isInteger(v) || v < min) throw new RangeError(`DataLoader: ${name} must be an integer >= ${min}, got ${v}`);
    };
    int(this.batchSize, 'batchSize', 1);
    int(this.workers, 'workers', 1);
    int(this.prefetch, 'prefetch', 1);
    int(this.epoch, 'epoch', 0);
    if (!Number.isSafeInteger(this.seed) || this.seed < 0) throw new RangeError(`DataLoader: seed must be a non-negative integer, got ${this.seed}`);
    if (this.prefetch > 3) this.prefetch = 3;
    this.ops = flatten(dataset.transform);
  }

  /**
   * Why batches of this loader cannot be augmented by `augmentBatch` (deferAugment), or null when they can: the
   * transform must be [randomResizedCrop | resize]? [randomHorizontalFlip]? [colorJitter]? [normalize]? and every
   * image 3-channel and of one size (STL10: yes). Needs the dataset loaded.
   */
  augmentSupport(): string | null {
    return augmentSupport(this.dataset.nativeSource(), this.ops);
  }

  /** Samples per epoch: the sampler's (a rank's shard) or the whole dataset's (needs the dataset loaded). */
  get samplesPerEpoch(): number {
    return this.sampler ? this.sampler.length : this.dataset.length;
  }

  /** Batches per epoch (needs the dataset loaded: `await dataset.load()` for downloads and ImageFolder). */
  get length(): number {
    const n = this.samplesPerEpoch;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The same loader (dataset, batch size, seed, workers) with another sampler (and no shuffle of its own). */
  withSampler(sampler: Sampler): DataLoader {
    return new DataLoader(this.dataset, { ...this.options, shuffle: false, sampler, epoch: this.epoch });
  }

  setEpoch(epoch: number): void {
    if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`DataLoader: epoch must be a non-negative integer, got ${epoch}`);
    this.epoch = epoch;
  }

  /** Sample order of an epoch. */
  order(epoch: number): Int32Array {
    if (this.sampler) return this.sampler.indices(epoch);
    const n = this.dataset.length;
    if (this.shuffle) return permutation(n, this.seed, epoch);
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return p;
  }

  /** Iterates `loader.epoch` and then advances it. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    const epoch = this.epoch;
    yield* this.iterate(epoch);
    this.epoch = epoch + 1;
  }

  /** The batches of one epoch (does not change `loader.epoch`). Breaking out early frees the batches in flight. */
  async *iterate(epoch: number = this.epoch, options: IterateOptions = {}): AsyncGenerator<Batch> {
    await this.dataset.load();
    const source = this.dataset.nativeSource();
    const order = this.order(epoch);
    let next = options.startBatch ?? 0;
    if (!Number.isInteger(next) || next < 0) throw new RangeError(`DataLoader: startBatch must be a non-negative integer, got ${next}`);
    const skip = options.startSample ?? 0;
    if (!Number.isInteger(skip) || skip < 0) throw new RangeError(`DataLoader: startSample must be a non-negative integer, got ${skip}`);
    if (skip > 0 && next > 0) throw new TypeError('DataLoader: give startBatch or startSample, not both');
    // batch b (counted from the start sample) holds order[skip + b*B, skip + (b+1)*B)
    const bs = this.batchSize;
    const nb = skip === 0 ? this.length : this.dropLast ? Math.floor((order.length - skip) / bs) : Math.ceil(Math.max(0, order.length - skip) / bs);
    const batchBase = Math.floor(skip / bs);
    const defer = Boolean(options.deferAugment);
    if (defer) {
      const why = this.augmentSupport();
      if (why !== null) throw new Error(`DataLoader: deferAugment: ${why}`);
    }
    const pending: Promise<Batch>[] = [];
    const launch = (): void => {
      while (pending.length < this.prefetch && next < nb) {
        const b = next++;
        const indices = order.subarray(skip + b * bs, Math.min(order.length, skip + (b + 1) * bs));
        const idx = Int32Array.from(indices);
        let p: Promise<Batch>;
        try {
          p = loadBatch(source, idx, this.ops, this.seed, epoch, this.workers, defer).then((r) => {
            const out: Batch = { images: r.images, labels: r.labels, indices: idx, batch: skip === 0 ? b : batchBase + b, epoch };
            if (r.params) out.augment = { params: r.params, ops: this.ops };
            return out;
          });
        } catch (e) {
          p = Promise.reject(e);
        }
        p.catch(() => undefined); // rejections are seen when awaited; never "unhandled" while waiting in line
        pending.push(p);
      }
    };
    try {
      launch();
      while (pending.length > 0) {
        const batch = await pending.shift()!;
        launch();
        yield batch;
      }
    } finally {
      // abandoned mid-epoch (break / throw): free the batches that were still being prepared
      for (const p of pending.splice(0)) {
        p.then((b) => {
          b.images.dispose();
          b.labels.dispose();
          b.augment?.params.dispose();
        }, () => undefined);
      }
    }
  }
}
