#!/usr/bin/env node
// `node dist/predict.js [--checkpoint PATH] IMAGE...` (also `vggnet predict`): top-5 classes with probabilities for
// each image, with the class names and evaluation preprocessing (resize + center crop + normalize) of the checkpoint.
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ImageFiles, DataLoader, transforms as T } from '../data';
import { modelFromCheckpoint } from '../train/index';
import { CliIO, EXIT, checkpointFile, configure, parseArgs, runAsMain } from './support';

export interface Prediction {
  file: string;
  top: { class: string; index: number; probability: number }[];
}

/** Top-k predictions for image files with a training checkpoint. */
/** `note` receives what the model says of its precision (bf16 emulated on this CPU). */
export async function predictFiles(checkpoint: string, files: string[], options: { top?: number; device?: 'cpu' | 'cuda' | 'auto'; precision?: 'fp32' | 'bf16' | 'tf32'; imageSize?: number; maxPixels?: number; note?: (line: string) => void } = {}): Promise<Prediction[]> {
  const { model, meta } = modelFromCheckpoint(checkpoint, { device: options.device ?? 'cpu', precision: options.precision });
  try {
    if (model.precisionNote) options.note?.(model.precisionNote);
    const size = options.imageSize ?? Number(meta.config?.imageSize ?? 224);
    const classes = meta.classes ?? Array.from({ length: model.options.numClasses }, (_, i) => `class ${i}`);
    const ds = new ImageFiles(files, T.compose([T.evalTransform(size), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]), { maxPixels: options.maxPixels });
    const out: Prediction[] = [];
    await model.withFrozenWeights(async () => {
      for await (const b of new DataLoader(ds, { batchSize: 16 }).iterate(0)) {
        const x = b.images.device === model.device ? b.images : b.images.to(model.device);
        const probs = model.predict(x);
        for (const t of new Set([x, b.images, b.labels])) t.dispose();
        probs.forEach((p, j) => {
          const order = Array.from(p.keys()).sort((a, c) => p[c] - p[a] || a - c).slice(0, options.top ?? 5);
          out.push({ file: files[b.indices[j]], top: order.map((k) => ({ class: classes[k] ?? `class ${k}`, index: k, probability: p[k] })) });
        });
      }
    });
    return out;
  } finally {
    model.dispose();
  }
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
    .addOption(new Option('--precision <p>', "activations' precision (default: fp32 on the CPU, bf16 on CUDA; bf16 on a CPU without bf16 instructions is emulated: same rounding, slower; tf32: CUDA only)").choices(['fp32', 'bf16', 'tf32']))
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
    // notes on stderr: --json keeps stdout for the JSON
    const note = (line: string) => io.stderr.write(`note: ${line}\n`);
    const res = await predictFiles(checkpoint, p.args, { top: o.top, device: o.device, precision: o.precision, maxPixels: o.maxImagePixels, note });
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
