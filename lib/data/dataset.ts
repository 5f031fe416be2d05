// The dataset contract shared by STL10 and ImageFolder: samples live in a native source (files read with pread, or
// decoded images in native memory) so the DataLoader's worker threads can read and transform them off the JS thread.
import { Tensor } from '../tensor';
import { flatten, Transform, TransformOp } from './transforms';
import { NativeSource, sourceGet, sourceLabels, sourceLength } from './native_source';

export interface Sample {
  /** uint8 CHW without a transform; float32 CHW (the transform's output) with one. */
  image: Tensor;
  /** Class index, or -1 for unlabeled samples. */
  label: number;
}

export interface GetOptions {
  /** Randomness of the transform: the sample's result is a function of (seed, epoch, index). Default 0, 0. */
  seed?: number;
  /** See `seed`. */
  epoch?: number;
  /**
   * Use this transform instead of the dataset's for this sample; null: none, the stored image as uint8 CHW (what a
   * viewer shows).
   */
  transform?: Transform | null;
}

export interface Dataset {
  readonly length: number;
  readonly classes: string[];
  readonly transform?: Transform;
  get(index: number, options?: GetOptions): Sample;
  /** Makes the dataset ready (download, decode); idempotent. The DataLoader awaits it before the first batch. */
  load(): Promise<void>;
  /** @internal the native source handle */
  nativeSource(): NativeSource;
}

/** Shared implementation of get(i) over a native source. */
export abstract class NativeDataset implements Dataset {
  readonly transform?: Transform;
  protected readonly ops: TransformOp[];
  protected source: NativeSource | null = null;

  constructor(transform?: Transform) {
    this.transform = transform ?? undefined;
    this.ops = flatten(transform);
  }

  abstract readonly classes: string[];
  abstract load(): Promise<void>;
  protected abstract notReady(): Error;

  nativeSource(): NativeSource {
    if (!this.source) throw this.notReady();
    return this.source;
  }

  get length(): number {
    return sourceLength(this.nativeSource());
  }

  /** All labels in index order (Int32Array; -1 for unlabeled). */
  labels(): Int32Array {
    return sourceLabels(this.nativeSource());
  }

  get(index: number, options: GetOptions = {}): Sample {
    const src = this.nativeSource();
    const n = this.length;
    if (!Number.isInteger(index) || index < 0 || index >= n) {
      throw new RangeError(`${this.constructor.name}.get: index ${index} out of range [0, ${n})`);
    }
    const ops = options.transform === undefined ? this.ops : flatten(options.transform);
    return sourceGet(src, index, ops, options.seed ?? 0, options.epoch ?? 0);
  }
}
