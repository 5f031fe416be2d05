// DistributedSampler: torch.utils.data.DistributedSampler's semantics over this library's seeded permutation.
// An epoch's order is permutation(n, seed, epoch) — the very order a single-process DataLoader with the same seed
// shuffles to — padded by repeating its head until it divides evenly (or cut, with dropLast), and rank r takes
// positions r, r + W, r + 2W, ... So every rank takes the same number of steps, the ranks' shards are disjoint
// (apart from the padding), and with W ranks × batch b, step k's batches together are exactly batch k of one
// process with batch W·b. With W = 1 it is the single-process order.
//
// `pad: false` (not in torch) gives each rank r, r + W, ... < n and nothing more: uneven shards that cover the
// dataset exactly once, for evaluation, whose metrics are then summed across the ranks exactly.
import { permutation } from '../data/dataloader';
import type { Sampler } from '../data/dataloader';
import { getProcessGroup } from './process_group';

export interface DistributedSamplerOptions {
  /** Default: the default process group's world size, else $WORLD_SIZE. */
  numReplicas?: number;
  /** Default: the default process group's rank, else $RANK. */
  rank?: number;
  /** Default true. */
  shuffle?: boolean;
  /** Default 0; the order of epoch e is permutation(n, seed, e). */
  seed?: number;
  /** Default false: pad with the head of the order instead of dropping the tail. */
  dropLast?: boolean;
  /** Default true (torch's behaviour). false: no padding, uneven shards (evaluation). */
  pad?: boolean;
}

function defaultOf(what: 'numReplicas' | 'rank'): number {
  const g = getProcessGroup();
  if (g) return what === 'rank' ? g.rank : g.worldSize;
  const v = process.env[what === 'rank' ? 'RANK' : 'WORLD_SIZE'];
  if (v !== undefined && /^\d+$/.test(v)) return Number(v);
  throw new Error(`DistributedSampler: ${what} not given, and no process group (initDistributed()) or ${what === 'rank' ? 'RANK' : 'WORLD_SIZE'} to take it from`);
}

export class DistributedSampler implements Sampler {
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly pad: boolean;
  /** The epoch indices() gives when not told one (torch's set_epoch). */
  epoch = 0;

  constructor(readonly dataset: { readonly length: number }, options: DistributedSamplerOptions = {}) {
    this.numReplicas = options.numReplicas ?? defaultOf('numReplicas');
    this.rank = options.rank ?? defaultOf('rank');
    this.shuffle = options.shuffle ?? true;
    this.seed = options.seed ?? 0;
    this.dropLast = options.dropLast ?? false;
    this.pad = options.pad ?? true;
    if (!Number.isInteger(this.numReplicas) || this.numReplicas < 1) throw new RangeError(`DistributedSampler: numReplicas must be an integer >= 1, got ${this.numReplicas}`);
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.numReplicas) {
      throw new RangeError(`DistributedSampler: rank must be an integer in [0, ${this.numReplicas}), got ${this.rank}`);
    }
    if (!Number.isSafeInteger(this.seed) || this.seed < 0) throw new RangeError(`DistributedSampler: seed must be a non-negative integer, got ${this.seed}`);
    if (!this.pad && this.dropLast) throw new Error('DistributedSampler: pad: false and dropLast: true contradict each other (no padding means every sample, once)');
  }

  setEpoch(epoch: number): void {
    if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`DistributedSampler: epoch must be a non-negative integer, got ${epoch}`);
    this.epoch = epoch;
  }

  /** Samples this rank takes per epoch (torch's num_samples; the dataset must be loaded). */
  get length(): number {
    const n = this.dataset.length, w = this.numReplicas;
    if (!this.pad) return Math.max(0, Math.ceil((n - this.rank) / w));
    if (this.dropLast && n % w !== 0) return Math.ceil((n - w) / w);
    return Math.ceil(n / w);
  }

  /** All ranks' positions together (torch's total_size). */
  get totalSize(): number {
    return this.pad ? this.length * this.numReplicas : this.dataset.length;
  }

  /** This rank's dataset indices for an epoch, in order. */
  indices(epoch: number = this.epoch): Int32Array {
    const n = this.dataset.length, w = this.numReplicas;
    let order: Int32Array;
    if (this.shuffle) {
      order = permutation(n, this.seed, epoch);
    } else {
      order = new Int32Array(n);
      for (let i = 0; i < n; i++) order[i] = i;
    }
    if (!this.pad) {
      const out = new Int32Array(this.length);
      for (let i = 0; i < out.length; i++) out[i] = order[this.rank + i * w];
      return out;
    }
    const total = this.totalSize;
    const full = new Int32Array(total);
    if (this.dropLast) {
      full.set(order.subarray(0, total));
    } else if (n > 0) {
      for (let i = 0; i < total; i++) full[i] = order[i % n]; // the head repeated (as torch: indices * k, cut)
    }
    const out = new Int32Array(this.length);
    for (let i = 0; i < out.length; i++) out[i] = full[this.rank + i * w];
    return out;
  }
}
