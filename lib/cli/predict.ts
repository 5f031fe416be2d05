#!/usr/bin/env node
// `node dist/predict.js [--checkpoint PATH] IMAGE...` (also `vggnet predict`): top-5 classes with probabilities for
// each image, with the class names and evaluation preprocessing (resize + center crop + normalize) of the checkpoint.
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ImageFiles, DataLoader, Dataset, Sampler, STL10, stl10Present, ensureSampleData, defaultDataRoot, transforms as T } from '../data';
import type { Transform } from '../data/transforms';
import { modelFromCheckpoint } from '../train/index';
import { Int8VGG, Int8Scales } from '../models/int8';
import * as ops from '../ops';
import { Tensor } from '../tensor';
import { readRegularFileSync } from '../io/files';
import { writeFileAtomic } from '../io/safetensors';
import { CliIO, EXIT, checkpointFile, configure, intArg, parseArgs, runAsMain } from './support';

export interface Prediction {
  file: string;
  top: { class: string; index: number; probability: number }[];
}

/** Top-k predictions for image files with a training checkpoint. */
/** `note` receives what the model says of its precision (bf16 emulated on this CPU, int8's calibration). */
export async function predictFiles(checkpoint: string, files: string[], options: PredictOptions = {}): Promise<Prediction[]> {
  const int8 = options.precision === 'int8';
  if (int8 && (options.device ?? 'cpu') === 'cuda') throw new Error('int8 inference runs on the CPU (oneDNN); use --device cpu');
  const { model, meta } = modelFromCheckpoint(checkpoint, { device: int8 ? 'cpu' : options.device ?? 'cpu', precision: options.precision === 'int8' ? 'fp32' : options.precision });
  let q: Int8VGG | undefined;
  try {
    if (model.precisionNote) options.note?.(model.precisionNote);
    const size = options.imageSize ?? Number(meta.config?.imageSize ?? 224);
    const classes = meta.classes ?? Array.from({ length: model.options.numClasses }, (_, i) => `class ${i}`);
    const transform = T.compose([T.evalTransform(size), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
    const out: Prediction[] = [];
    await model.withFrozenWeights(async () => {
      if (int8) {
        let how = 'saved scales';
        if (options.int8Scales) {
          q = Int8VGG.fromScales(model, options.int8Scales);
        } else {
          const source = options.calibrate ?? checkpointTrainData(meta.config ?? {}, checkpoint);
          const cal = await calibrationSet(source, options.calibrationImages ?? 256, transform, options.maxPixels);
          q = await Int8VGG.calibrate(model, imagesOf(new DataLoader(cal.dataset, { batchSize: 16, sampler: cal.sampler })));
          how = `scales calibrated on ${cal.sampler.length} images of ${cal.what}`;
          options.calibrated?.(q.scales);
        }
        const float = [ops.int8WeightMax() < 127 ? 'the first conv (no VNNI)' : '', q.scales.classifier.length ? '' : 'the classifier'].filter(Boolean);
        options.note?.(`int8: convolutions and classifier in int8 (oneDNN), weights per channel in ±${ops.int8WeightMax()}${float.length ? `, ${float.join(' and ')} in float32` : ''}; ${how}`);
      }
      const ds = new ImageFiles(files, transform, { maxPixels: options.maxPixels });
      for await (const b of new DataLoader(ds, { batchSize: 16 }).iterate(0)) {
        const x = b.images.device === model.device ? b.images : b.images.to(model.device);
        const probs = q ? q.predict(x) : model.predict(x);
        for (const t of new Set([x, b.images, b.labels])) t.dispose();
        probs.forEach((p, j) => {
          const order = Array.from(p.keys()).sort((a, c) => p[c] - p[a] || a - c).slice(0, options.top ?? 5);
          out.push({ file: files[b.indices[j]], top: order.map((k) => ({ class: classes[k] ?? `class ${k}`, index: k, probability: p[k] })) });
        });
      }
    });
    return out;
  } finally {
    q?.dispose();
    model.dispose();
  }
}

export interface PredictOptions {
  top?: number;
  device?: 'cpu' | 'cuda' | 'auto';
  /**
   * int8: CPU only (Int8VGG). Its activation scales come from `int8Scales` when given, else from calibration images:
   * `calibrate`, or by default the checkpoint's own training data.
   */
  precision?: 'fp32' | 'bf16' | 'tf32' | 'int8';
  /** int8: a folder of images (any depth) or an STL10 root (its train split) to calibrate on. */
  calibrate?: string;
  /** int8: how many calibration images, evenly spread over the source (default 256). */
  calibrationImages?: number;
  /** int8: scales from an earlier calibration (Int8VGG.scales), instead of calibrating. */
  int8Scales?: Int8Scales;
  /** int8, calibrating: receives the scales it measured (to save for later runs). */
  calibrated?: (scales: Int8Scales) => void;
  imageSize?: number;
  maxPixels?: number;
  note?: (line: string) => void;
}

/** The image batches of a loader, each disposed when the next is asked for. */
async function* imagesOf(loader: DataLoader): AsyncGenerator<Tensor> {
  for await (const b of loader.iterate(0)) {
    try {
      yield b.images;
    } finally {
      b.images.dispose();
      b.labels.dispose();
    }
  }
}

/** `count` of `length` indices, evenly spread (all of them when there are fewer). */
function evenlySpread(length: number, count: number): Int32Array {
  const n = Math.min(count, length);
  return Int32Array.from({ length: n }, (_, i) => Math.floor((i * length) / n));
}

/** What calibration reads: a dataset with the eval transform, the samples to take, and words for the note. */
export interface CalibrationSet {
  dataset: Dataset;
  sampler: Sampler;
  what: string;
}

/**
 * Calibration images from `dir`: its STL10 train split when it is an STL10 root (holds stl10_binary/), else the
 * .jpg/.jpeg/.png files under it at any depth, sorted; `count` of them evenly spread over that order.
 */
export async function calibrationSet(dir: string, count: number, transform: Transform, maxPixels?: number): Promise<CalibrationSet> {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new Error(`--calibrate ${dir}: no such folder`);
  }
  if (!st.isDirectory()) throw new Error(`--calibrate ${dir}: not a folder (give a folder of images, e.g. the training set's, or an STL10 root)`);
  if (stl10Present(dir)) {
    const dataset = await STL10.create({ root: dir, split: 'train', transform });
    await dataset.load();
    const idx = evenlySpread(dataset.length, count);
    return { dataset, sampler: { length: idx.length, indices: () => idx }, what: `STL10's train split in ${dir}` };
  }
  const all: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && /\.(jpe?g|png)$/i.test(e.name)) all.push(p);
    }
  };
  walk(dir);
  if (all.length === 0) throw new Error(`--calibrate ${dir}: no .jpg, .jpeg or .png images in it or its sub-folders, and no STL10 (stl10_binary/)`);
  const files = Array.from(evenlySpread(all.length, count), (i) => all[i]);
  const dataset = new ImageFiles(files, transform, { maxPixels });
  return { dataset, sampler: { length: files.length, indices: () => Int32Array.from(files.keys()) }, what: dir };
}

/**
 * The folder of the training data a checkpoint was trained on (train's --data and --dataset, resolved as
 * `train --evaluate` resolves them: relative to this folder), for int8 calibration without --calibrate.
 */
export function checkpointTrainData(config: Record<string, unknown>, checkpoint: string): string {
  const kind = String(config.dataset ?? 'auto');
  const data = typeof config.data === 'string' ? config.data : undefined;
  const dir = kind === 'folder' && data ? path.join(data, 'train')
    : (kind === 'stl10' || kind === 'auto') && data && stl10Present(data) ? data
      : kind === 'sample' || kind === 'auto' ? ensureSampleData(defaultDataRoot())
        : undefined;
  if (!dir || !fs.existsSync(dir)) {
    throw new Error(`int8 needs calibration images: ${checkpoint} was trained on ${kind}${data ? ` data in ${data}` : ''}, which is not here; give --calibrate DIR (a folder of images like those to predict, or an STL10 root) or --int8-scales FILE (saved by --save-int8-scales)`);
  }
  return dir;
}

/** Scales saved by `--save-int8-scales FILE`, checked for shape here (against the model in Int8VGG.fromScales). */
export function readInt8Scales(file: string): Int8Scales {
  let v: unknown;
  try {
    v = JSON.parse(readRegularFileSync(file, 1 << 20).toString('utf8'));
  } catch (e) {
    throw new Error(`--int8-scales ${file}: ${(e as Error).message}`);
  }
  const o = v as Partial<Int8Scales> | null;
  if (!o || typeof o !== 'object' || o.format !== 'vggnet-int8-scales/1' || typeof o.model !== 'string' || !Array.isArray(o.channels)
    || typeof o.input !== 'number' || !Array.isArray(o.activations) || !Array.isArray(o.classifier)) {
    throw new Error(`--int8-scales ${file}: expected the JSON that predict --precision int8 --save-int8-scales FILE writes ({"format": "vggnet-int8-scales/1", "model", "channels", "input", "activations", "classifier"})`);
  }
  return o as Int8Scales;
}

/** What predict uses without --checkpoint: train's default output. */
export const DEFAULT_CHECKPOINT = path.join('checkpoint', 'best.safetensors');

export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const p = new Command('predict')
    .description('Top-k classes with probabilities for images, with a checkpoint written by train.')
    .option('--checkpoint <path>', `a checkpoint written by train (a .safetensors file, or a folder: its best.safetensors); default ${DEFAULT_CHECKPOINT} when it exists`)
    .option('--top <k>', 'how many classes to show', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--top must be an integer >= 1, got '${v}'.`);
      return n;
    }, 5)
    .addOption(new Option('--device <d>', 'where to run').choices(['auto', 'cpu', 'cuda']).default('cpu'))
    .addOption(new Option('--precision <p>', "activations' precision (default: fp32 on the CPU, bf16 on CUDA; bf16 on a CPU without bf16 instructions is emulated: same rounding, slower; tf32: CUDA only; int8: CPU only, needs --calibrate or --int8-scales)").choices(['fp32', 'bf16', 'tf32', 'int8']))
    .option('--calibrate <dir>', "int8: calibrate on images under this folder (any depth) or an STL10 root's train split (default: the checkpoint's own training data, when it is here)")
    .option('--calibration-images <n>', 'int8: how many calibration images, evenly spread over the source', intArg('--calibration-images', 1), 256)
    .option('--save-int8-scales <file>', 'int8: write the calibrated scales here (JSON), for --int8-scales later')
    .option('--int8-scales <file>', 'int8: use the scales an earlier calibration saved, instead of calibrating')
    .option('--max-image-pixels <n>', 'refuse images that decode to more pixels than this (default: $VGGNET_MAX_IMAGE_PIXELS, else 178956970, PIL\'s limit)', (v: string) => {
      const n = Number(v);
      if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`--max-image-pixels must be a positive integer, got '${v}'.`);
      return n;
    })
    .option('--json', 'print JSON', false)
    .argument('<images...>', 'image files (JPEG, PNG, ...)');
  const parsed = parseArgs(configure(p, io), argv);
  if (parsed !== null) return parsed;
  const o = p.opts();
  try {
    let checkpoint: string;
    if (o.checkpoint !== undefined) {
      checkpoint = checkpointFile('--checkpoint', o.checkpoint, ['best.safetensors', 'last.safetensors']);
    } else if (fs.existsSync(DEFAULT_CHECKPOINT)) {
      checkpoint = DEFAULT_CHECKPOINT;
    } else {
      io.stderr.write(`error: no --checkpoint given, and there is no ${DEFAULT_CHECKPOINT} here (${path.resolve(DEFAULT_CHECKPOINT)}) to use instead: train one first, or give --checkpoint PATH\n`);
      return EXIT.usage;
    }
    for (const f of p.args) if (!fs.existsSync(f)) throw new Error(`${f}: no such file`);
    const int8Flags = ['calibrate', 'calibrationImages', 'saveInt8Scales', 'int8Scales'].filter((k) => o[k] !== undefined && p.getOptionValueSource(k) !== 'default');
    if (o.precision !== 'int8' && int8Flags.length) {
      io.stderr.write(`error: --${int8Flags[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is for --precision int8\n`);
      return EXIT.usage;
    }
    if (o.int8Scales !== undefined && (o.calibrate !== undefined || o.saveInt8Scales !== undefined)) {
      io.stderr.write('error: --int8-scales uses saved scales; --calibrate and --save-int8-scales are for calibrating anew\n');
      return EXIT.usage;
    }
    const int8Scales = o.int8Scales !== undefined ? readInt8Scales(o.int8Scales) : undefined;
    const save = o.saveInt8Scales as string | undefined;
    const calibrated = save ? (s: Int8Scales) => writeFileAtomic(save, [Buffer.from(JSON.stringify(s, null, 2) + '\n')]) : undefined;
    // notes on stderr: --json keeps stdout for the JSON
    const note = (line: string) => io.stderr.write(`note: ${line}\n`);
    const res = await predictFiles(checkpoint, p.args, {
      top: o.top, device: o.device, precision: o.precision, maxPixels: o.maxImagePixels, note,
      calibrate: o.calibrate, calibrationImages: o.calibrationImages, int8Scales, calibrated,
    });
    if (o.json) {
      io.stdout.write(JSON.stringify(res, null, 2) + '\n');
    } else {
      for (const r of res) {
        io.stdout.write(`${r.file}\n`);
        for (const t of r.top) io.stdout.write(`  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${t.class}\n`);
      }
    }
    return EXIT.ok;
  } catch (e) {
    io.stderr.write(`error: ${(e as Error).message}\n`);
    return EXIT.error;
  }
}

runAsMain(module, (argv) => main(argv));
