// Training checkpoints: one safetensors file holding the model's state dict (torchvision names) and the optimizer's
// state (prefixed `optimizer.`: momentum buffers, and in a checkpoint taken mid-epoch a deferred update's entries,
// lib/optim/deferred.ts), with everything else needed to resume exactly as JSON strings in the
// `__metadata__`: epoch, step, config, hyper-parameters, LR, scheduler state, RNG state, metrics, history.
// Written atomically (temporary file, fsync, rename) by writeSafetensors.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../tensor';
import { readSafetensors, writeSafetensors, StateRecord } from '../io/safetensors';
import { openRegularFileSync, pathArg } from '../io/files';
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
    /**
     * Where the loader stands: `sample` (samples of epoch `epoch` done) and `batchSize` are absent in older files;
     * `worldSize` is a distributed run's process count (its `sample` counts in rank 0's shard).
     */
    loader: { seed: number; epoch: number; batch: number; shuffle: boolean; sample?: number; batchSize?: number; worldSize?: number } | null;
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
  const model = meta.model as unknown;
  if (!isObj(model) || !Array.isArray(model.config)) bad('model', 'an object with a config array (the model description)', m.model);
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
  checkFields(meta, (field, expected, got) => bad(field, expected, got));
  return meta;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isPositive = (v: unknown): v is number => isCount(v) && v >= 1;
/** A metric value as encodeMeta writes it: a number, or the string of a non-finite one. */
const isMetric = (v: unknown) => typeof v === 'number' || v === 'NaN' || v === 'Infinity' || v === '-Infinity';
const PRECISIONS = ['fp32', 'tf32', 'bf16'];

/**
 * Every field below the top level that something reads back (rebuilding the model, resuming training, predict and
 * export): a wrong one is reported here with its path, not as a TypeError from deep inside the code that uses it.
 */
function checkFields(meta: CheckpointMeta, bad: (field: string, expected: string, got: unknown) => never): void {
  const model = meta.model as unknown as Record<string, unknown>;
  const config = model.config as unknown[];
  config.forEach((v, i) => {
    if (!(v === 'M' || isPositive(v))) bad(`model.config[${i}]`, "a layer width (an integer >= 1) or 'M' (a max pool)", v);
  });
  if (!config.some((v) => v !== 'M')) bad('model.config', 'at least one convolution width', config);
  if (!isPositive(model.numClasses)) bad('model.numClasses', 'an integer >= 1', model.numClasses);
  if (typeof model.batchNorm !== 'boolean') bad('model.batchNorm', 'true or false', model.batchNorm);
  if (!(typeof model.dropout === 'number' && model.dropout >= 0 && model.dropout < 1)) bad('model.dropout', 'a number in [0, 1)', model.dropout);
  if (!isPositive(model.hiddenFeatures)) bad('model.hiddenFeatures', 'an integer >= 1', model.hiddenFeatures);
  if (!isPositive(model.inChannels)) bad('model.inChannels', 'an integer >= 1', model.inChannels);
  if (!PRECISIONS.includes(model.precision as string)) bad('model.precision', `one of ${PRECISIONS.join(', ')}`, model.precision);
  if (!(typeof model.seed === 'number' && Number.isSafeInteger(model.seed))) bad('model.seed', 'an integer', model.seed);
  if (model.name !== undefined && model.name !== null && typeof model.name !== 'string') bad('model.name', 'a string', model.name);
  if (meta.classes !== null && meta.classes.length !== model.numClasses) {
    bad('classes', `${String(model.numClasses)} class names (model.numClasses)`, `${meta.classes.length} names`);
  }
  const config2 = meta.config as Record<string, unknown> | null;
  if (config2 && config2.imageSize !== undefined && !isPositive(config2.imageSize)) bad('config.imageSize', 'an integer >= 1', config2.imageSize);
  if (meta.rng !== null) {
    (meta.rng.dropout ?? []).forEach((d: unknown, i: number) => {
      if (!isObj(d) || !(typeof d.seed === 'number' && Number.isSafeInteger(d.seed)) || !isCount(d.calls)) {
        bad(`rng.dropout[${i}]`, 'an object { seed: integer, calls: integer >= 0 }', d);
      }
    });
    const l = meta.rng.loader as unknown;
    if (l !== null && l !== undefined && (!isObj(l) || !(typeof l.seed === 'number' && Number.isSafeInteger(l.seed)) || !isCount(l.epoch) ||
        !isCount(l.batch) || typeof l.shuffle !== 'boolean')) {
      bad('rng.loader', 'null or an object { seed: integer, epoch: integer >= 0, batch: integer >= 0, shuffle: boolean }', l);
    }
    // Distributed runs: the number of processes (the sample position is in rank 0's shard of that world).
    if (isObj(l) && l.worldSize !== undefined && !isPositive(l.worldSize)) bad('rng.loader.worldSize', 'an integer >= 1', l.worldSize);
  }
  if (meta.metrics !== null) {
    for (const [k, v] of Object.entries(meta.metrics)) if (!isMetric(v)) bad(`metrics.${k}`, 'a number', v);
  }
  if (meta.partial !== null) {
    const p = meta.partial as Record<string, unknown>;
    if (!(typeof p.lossSum === 'number' || isMetric(p.lossSum)) || !isCount(p.samples) || !isCount(p.correct1) || !isCount(p.correct5) ||
        (p.correct1 as number) > (p.samples as number) || (p.correct5 as number) > (p.samples as number)) {
      bad('partial', 'null or the running metrics { lossSum: number, correct1, correct5, samples: integers >= 0, correct <= samples }', p);
    }
  }
  (meta.history ?? []).forEach((h: unknown, i: number) => {
    if (!isObj(h)) bad(`history[${i}]`, 'an object of metrics', h);
    for (const [k, v] of Object.entries(h)) if (!isMetric(v)) bad(`history[${i}].${k}`, 'a number', v);
  });
  if (meta.best !== null) {
    const b = meta.best as unknown as Record<string, unknown>;
    if (!(typeof b.top1 === 'number' && b.top1 >= 0 && b.top1 <= 1) || !isCount(b.epoch)) bad('best', 'null or { top1: a number in [0, 1], epoch: integer >= 0 }', b);
  }
  for (const k of ['created', 'packageVersion'] as const) {
    if (meta[k] !== undefined && typeof meta[k] !== 'string') bad(k === 'created' ? 'created' : 'package_version', 'a string', meta[k]);
  }
}

/** How many numbers the state dict of this model holds (parameters and batch-norm running statistics). */
function specElements(s: ModelSpec): number {
  let inC = s.inChannels;
  let n = 0;
  for (const v of s.config) {
    if (v === 'M') continue;
    n += v * inC * 9 + v + (s.batchNorm ? 4 * v : 0);
    inC = v;
  }
  const h = s.hiddenFeatures;
  return n + inC * 49 * h + h + h * h + h + h * s.numClasses + s.numClasses;
}

/**
 * The checkpoint's weights against its own metadata: the classifier's last layer has model.numClasses rows (and so
 * as many class names), the first conv model.inChannels input channels. (Every other shape is checked when the
 * weights are loaded into the model the metadata describes.)
 */
function checkWeightsAgainstMeta(model: StateRecord, meta: CheckpointMeta, source: string): void {
  // First the element count, so a corrupt description (a width of 10^9) is refused before a model is built from it.
  const held = Object.values(model).reduce((a, v) => a + (v instanceof Tensor ? v.shape.reduce((x, y) => x * y, 1) : 0), 0);
  const want = specElements(meta.model);
  if (held !== want) {
    throw new Error(`${source}: checkpoint metadata 'model' describes a network of ${want} weights and statistics, the file holds ${held}`);
  }
  const last = Object.keys(model).map((k) => /^classifier\.(\d+)\.weight$/.exec(k)).filter((x): x is RegExpExecArray => x !== null)
    .sort((a, b) => Number(b[1]) - Number(a[1]))[0];
  const lastW = last ? model[last[0]] : undefined;
  if (lastW instanceof Tensor && lastW.shape[0] !== meta.model.numClasses) {
    throw new Error(`${source}: the weights have ${lastW.shape[0]} classes (${last![0]} is [${lastW.shape.join(', ')}]) but checkpoint metadata ` +
      `'model.numClasses' says ${meta.model.numClasses}${meta.classes ? ` and 'classes' names ${meta.classes.length}` : ''}`);
  }
  const first = model['features.0.weight'];
  if (first instanceof Tensor && first.shape.length === 4 && first.shape[1] !== meta.model.inChannels) {
    throw new Error(`${source}: the weights take ${first.shape[1]} input channels (features.0.weight is [${first.shape.join(', ')}]) but checkpoint metadata 'model.inChannels' says ${meta.model.inChannels}`);
  }
}

/** Reads a checkpoint's metadata only (cheap: the header). */
export function readCheckpointMeta(file: string): CheckpointMeta {
  const fail = (msg: string): never => {
    throw new Error(`${file}: not a valid safetensors file: ${msg}`);
  };
  const fd = openRegularFileSync(file);
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
  writeSafetensors(file, record, encodeMeta(meta)); // creates the folder
}

export interface LoadedCheckpoint {
  /** Where it was read from (errors about it name this). */
  source?: string;
  meta: CheckpointMeta;
  model: StateRecord;
  optimizer: Record<string, Tensor | bigint>;
  /** Frees the tensors read from the file. */
  dispose(): void;
}

export function loadCheckpoint(file: string): LoadedCheckpoint {
  pathArg(file, 'loadCheckpoint');
  if (!fs.existsSync(file)) throw new Error(`${file}: checkpoint not found`);
  const { tensors, metadata } = readSafetensors(file);
  const all = Object.values(tensors);
  const dispose = () => {
    for (const v of all) if (v instanceof Tensor) v.dispose();
  };
  let meta: CheckpointMeta;
  const model: StateRecord = {};
  const optimizer: Record<string, Tensor | bigint> = {};
  for (const [k, v] of Object.entries(tensors)) {
    if (k.startsWith(OPTIMIZER_PREFIX)) optimizer[k.slice(OPTIMIZER_PREFIX.length)] = v;
    else model[k] = v;
  }
  try {
    meta = decodeMeta(metadata, file);
    checkWeightsAgainstMeta(model, meta, file);
  } catch (e) {
    dispose();
    throw e;
  }
  return { source: file, meta, model, optimizer, dispose };
}

/** Rebuilds the model a checkpoint was trained with and loads its weights (for predict and fine-tuning). */
export function modelFromCheckpoint(file: string, options: { device?: 'cpu' | 'cuda' | 'auto'; precision?: 'fp32' | 'bf16' | 'tf32' } = {}): { model: VGGNet; meta: CheckpointMeta } {
  const ck = loadCheckpoint(file);
  try {
    const s = ck.meta.model; // validated by decodeMeta
    const model = new VGGNet(s.config, {
      numClasses: s.numClasses, batchNorm: s.batchNorm, dropout: s.dropout, hiddenFeatures: s.hiddenFeatures,
      inChannels: s.inChannels, initWeights: false, seed: s.seed, device: options.device ?? 'cpu',
      precision: options.precision,
    }, s.name);
    try {
      model.loadStateDict(ck.model, { strict: true });
    } catch (e) {
      model.dispose();
      throw new Error(`${file}: the weights do not fit the model its metadata describes (${(e as Error).message})`);
    }
    return { model, meta: ck.meta };
  } finally {
    ck.dispose();
  }
}
