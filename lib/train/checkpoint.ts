// Training checkpoints: one safetensors file holding the model's state dict (torchvision names) and the optimizer's
// momentum buffers (prefixed `optimizer.`), with everything else needed to resume exactly as JSON strings in the
// `__metadata__`: epoch, step, config, hyper-parameters, LR, scheduler state, RNG state, metrics, history.
// Written atomically (temporary file, fsync, rename) by writeSafetensors.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../tensor';
import { readSafetensors, writeSafetensors, StateRecord } from '../io/safetensors';
import { VGGNet } from '../models/vgg';
import type { VGGConfig, Precision } from '../models/vgg';

export const CHECKPOINT_FORMAT = 'vggnet-checkpoint/1';
export const OPTIMIZER_PREFIX = 'optimizer.';

export { packageVersion } from '../version';

/** What a model is, enough to rebuild it (predict, resume). */
export interface ModelSpec {
  name?: string;
  config: VGGConfig;
  numClasses: number;
  batchNorm: boolean;
  dropout: number;
  hiddenFeatures: number;
  inChannels: number;
  precision: Precision;
  seed: number;
}

export function modelSpec(model: VGGNet): ModelSpec {
  const o = model.options;
  return {
    name: o.name, config: o.config, numClasses: o.numClasses, batchNorm: o.batchNorm, dropout: o.dropout,
    hiddenFeatures: o.hiddenFeatures, inChannels: o.inChannels, precision: model.precision, seed: o.seed,
  };
}

/** The metadata of a checkpoint, parsed. */
export interface CheckpointMeta {
  format: string;
  packageVersion: string;
  /** Completed epochs. */
  epoch: number;
  /** Batches of epoch `epoch` already trained (non-zero only for a checkpoint taken mid-epoch, e.g. on Ctrl-C). */
  batchInEpoch: number;
  /** Optimizer steps so far. */
  step: number;
  lr: number;
  model: ModelSpec;
  /** Free-form run configuration (the CLI's options). */
  config: Record<string, unknown>;
  hyperParameters: Record<string, unknown>;
  scheduler: Record<string, unknown> | null;
  rng: {
    dropout: { seed: number; calls: number }[];
    /** Where the loader stands: `sample` (samples of epoch `epoch` done) and `batchSize` are absent in older files. */
    loader: { seed: number; epoch: number; batch: number; shuffle: boolean; sample?: number; batchSize?: number } | null;
  };
  /** Metrics of the last completed epoch. */
  metrics: Record<string, number> | null;
  /** Running training metrics of a partial epoch. */
  partial: Record<string, number> | null;
  history: Record<string, number>[];
  best: { top1: number; epoch: number } | null;
  classes: string[] | null;
  created: string;
}

const JSON_KEYS = ['model', 'config', 'hyperParameters', 'scheduler', 'rng', 'metrics', 'partial', 'history', 'best', 'classes'] as const;

export function encodeMeta(meta: CheckpointMeta): Record<string, string> {
  const out: Record<string, string> = {
    format: meta.format, package_version: meta.packageVersion, epoch: String(meta.epoch),
    batch_in_epoch: String(meta.batchInEpoch), step: String(meta.step), lr: String(meta.lr), created: meta.created,
  };
  for (const k of JSON_KEYS) out[k] = JSON.stringify(meta[k] ?? null, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));
  return out;
}

export function decodeMeta(m: Record<string, string>, source: string): CheckpointMeta {
  if (m.format !== CHECKPOINT_FORMAT) {
    throw new Error(`${source}: expected a vggnet training checkpoint (metadata format '${CHECKPOINT_FORMAT}'), got ${m.format ? `'${m.format}'` : 'plain weights without training state'}`);
  }
  const bad = (k: string, expected: string, got: unknown): never => {
    const shown = got === undefined ? 'nothing (the field is missing)' : typeof got === 'string' ? `'${got.length > 60 ? got.slice(0, 60) + '...' : got}'` : JSON.stringify(got)?.slice(0, 60);
    throw new Error(`${source}: checkpoint metadata '${k}': expected ${expected}, got ${shown}`);
  };
  const count = (k: string, fallback?: number): number => {
    const v = m[k];
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== 'string' || !/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) bad(k, 'a non-negative integer', v);
    return Number(v);
  };
  const epoch = count('epoch');
  const batchInEpoch = count('batch_in_epoch', 0);
  const step = count('step');
  const lr = m.lr;
  if (typeof lr !== 'string' || lr.trim() === '' || !Number.isFinite(Number(lr)) || Number(lr) < 0) bad('lr', 'a finite number >= 0', lr);
  const parse = (k: string): unknown => {
    try {
      return JSON.parse(m[k] ?? 'null');
    } catch (e) {
      throw new Error(`${source}: checkpoint metadata '${k}' is not JSON (${(e as Error).message})`);
    }
  };
  const meta = {
    format: m.format, packageVersion: m.package_version, epoch, batchInEpoch,
    step, lr: Number(lr), created: m.created,
  } as CheckpointMeta;
  for (const k of JSON_KEYS) (meta as unknown as Record<string, unknown>)[k] = parse(k);
  const isObj = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const model = meta.model as unknown;
  if (!isObj(model) || !Array.isArray((model as ModelSpec).config)) bad('model', 'an object with a config array (the model description)', m.model);
  for (const k of ['config', 'hyperParameters', 'scheduler', 'metrics', 'partial', 'best'] as const) {
    const v = meta[k] as unknown;
    if (v !== null && !isObj(v)) bad(k, 'a JSON object or null', m[k]);
  }
  const rng = meta.rng as unknown;
  if (rng !== null && (!isObj(rng) || ((rng as { dropout?: unknown }).dropout !== undefined && !Array.isArray((rng as { dropout: unknown }).dropout)))) {
    bad('rng', 'an object with a dropout array', m.rng);
  }
  if (meta.history !== null && !Array.isArray(meta.history)) bad('history', 'a JSON array or null', m.history);
  if (meta.classes !== null && (!Array.isArray(meta.classes) || !meta.classes.every((c) => typeof c === 'string'))) {
    bad('classes', 'an array of strings or null', m.classes);
  }
  return meta;
}

/** Reads a checkpoint's metadata only (cheap: the header). */
export function readCheckpointMeta(file: string): CheckpointMeta {
  const fail = (msg: string): never => {
    throw new Error(`${file}: not a valid safetensors file: ${msg}`);
  };
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const head = Buffer.alloc(8);
    if (size < 8 || fs.readSync(fd, head, 0, 8, 0) !== 8) fail(`${size} bytes, too short for the 8-byte header length`);
    const n = head.readBigUInt64LE(0);
    if (n > 100_000_000n) fail(`header length ${n} is over the 100000000-byte limit`);
    if (Number(n) > size - 8) fail(`header length ${n} runs past the end of the file (${size} bytes)`);
    const h = Buffer.alloc(Number(n));
    if (fs.readSync(fd, h, 0, h.length, 8) !== h.length) fail('the header could not be read in full');
    let header: unknown;
    try {
      header = JSON.parse(h.toString('utf8'));
    } catch (e) {
      fail(`header is not JSON (${(e as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
    const md = (header as Record<string, unknown>).__metadata__ ?? {};
    if (typeof md !== 'object' || md === null || Array.isArray(md)) fail('__metadata__ is not an object');
    for (const [k, v] of Object.entries(md as Record<string, unknown>)) if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
    return decodeMeta(md as Record<string, string>, file);
  } finally {
    fs.closeSync(fd);
  }
}

export function saveCheckpoint(file: string, model: StateRecord, optimizer: Record<string, Tensor>, meta: CheckpointMeta): void {
  const record: StateRecord = { ...model };
  for (const [k, v] of Object.entries(optimizer)) record[OPTIMIZER_PREFIX + k] = v;
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeSafetensors(file, record, encodeMeta(meta));
}

export interface LoadedCheckpoint {
  meta: CheckpointMeta;
  model: StateRecord;
  optimizer: Record<string, Tensor | bigint>;
  /** Frees the tensors read from the file. */
  dispose(): void;
}

export function loadCheckpoint(file: string): LoadedCheckpoint {
  if (!fs.existsSync(file)) throw new Error(`${file}: checkpoint not found`);
  const { tensors, metadata } = readSafetensors(file);
  const all = Object.values(tensors);
  const dispose = () => {
    for (const v of all) if (v instanceof Tensor) v.dispose();
  };
  let meta: CheckpointMeta;
  try {
    meta = decodeMeta(metadata, file);
  } catch (e) {
    dispose();
    throw e;
  }
  const model: StateRecord = {};
  const optimizer: Record<string, Tensor | bigint> = {};
  for (const [k, v] of Object.entries(tensors)) {
    if (k.startsWith(OPTIMIZER_PREFIX)) optimizer[k.slice(OPTIMIZER_PREFIX.length)] = v;
    else model[k] = v;
  }
  return { meta, model, optimizer, dispose };
}

/** Rebuilds the model a checkpoint was trained with and loads its weights (for predict and fine-tuning). */
export function modelFromCheckpoint(file: string, options: { device?: 'cpu' | 'cuda' | 'auto'; precision?: 'fp32' | 'bf16' | 'tf32' } = {}): { model: VGGNet; meta: CheckpointMeta } {
  const ck = loadCheckpoint(file);
  try {
    const s = ck.meta.model;
    if (!s || !Array.isArray(s.config)) throw new Error(`${file}: the checkpoint metadata has no model description`);
    const model = new VGGNet(s.config, {
      numClasses: s.numClasses, batchNorm: s.batchNorm, dropout: s.dropout, hiddenFeatures: s.hiddenFeatures,
      inChannels: s.inChannels, initWeights: false, seed: s.seed, device: options.device ?? 'cpu',
      precision: options.precision,
    }, s.name);
    model.loadStateDict(ck.model, { strict: true });
    return { model, meta: ck.meta };
  } finally {
    ck.dispose();
  }
}
