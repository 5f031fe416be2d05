#!/usr/bin/env node
// `node dist/predict.js --checkpoint PATH IMAGE...` (also `vggnet predict`): top-5 classes with probabilities for
// each image, with the class names and evaluation preprocessing (resize + center crop + normalize) of the checkpoint.
import * as fs from 'fs';
import sharp from 'sharp';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { addon } from './backend';
import { NativeDataset, DataLoader, transforms as T } from './data';
import { modelFromCheckpoint } from './train/index';
import type { CliIO } from './train';

/** Decoded images in native memory, run through the data module's eval pipeline. */
class ImageList extends NativeDataset {
  readonly classes: string[] = [];
  constructor(private readonly files: string[], transform: T.Transform) {
    super(transform);
  }
  async load(): Promise<void> {
    if (this.source) return;
    const images: Uint8Array[] = [];
    const shapes = new Int32Array(3 * this.files.length);
    for (const [i, f] of this.files.entries()) {
      let out: { data: Buffer; info: { width: number; height: number; channels: number } };
      try {
        out = await sharp(f).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
      } catch (e) {
        throw new Error(`${f}: expected a readable image (JPEG, PNG, WebP, ...), got: ${(e as Error).message}`);
      }
      // sharp gives HWC; the native source takes CHW.
      const { width: w, height: h } = out.info;
      const chw = new Uint8Array(3 * h * w);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) chw[c * h * w + y * w + x] = out.data[(y * w + x) * 3 + c];
      images.push(chw);
      shapes.set([3, h, w], 3 * i);
    }
    this.source = addon().dataMemorySource(images, shapes, new Int32Array(this.files.length).fill(-1), true);
  }
  protected notReady(): Error {
    return new Error('images not decoded yet');
  }
}

export interface Prediction {
  file: string;
  top: { class: string; index: number; probability: number }[];
}

/** Top-k predictions for image files with a training checkpoint. */
export async function predictFiles(checkpoint: string, files: string[], options: { top?: number; device?: 'cpu' | 'cuda' | 'auto'; imageSize?: number } = {}): Promise<Prediction[]> {
  const { model, meta } = modelFromCheckpoint(checkpoint, { device: options.device ?? 'cpu' });
  try {
    const size = options.imageSize ?? Number(meta.config?.imageSize ?? 224);
    const classes = meta.classes ?? Array.from({ length: model.options.numClasses }, (_, i) => `class ${i}`);
    const ds = new ImageList(files, T.compose([T.evalTransform(size), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]));
    const out: Prediction[] = [];
    for await (const b of new DataLoader(ds, { batchSize: 16 }).iterate(0)) {
      const x = b.images.device === model.device ? b.images : b.images.to(model.device);
      const probs = model.predict(x);
      for (const t of new Set([x, b.images, b.labels])) t.dispose();
      probs.forEach((p, j) => {
        const order = Array.from(p.keys()).sort((a, c) => p[c] - p[a] || a - c).slice(0, options.top ?? 5);
        out.push({ file: files[b.indices[j]], top: order.map((k) => ({ class: classes[k] ?? `class ${k}`, index: k, probability: p[k] })) });
      });
    }
    return out;
  } finally {
    model.dispose();
  }
}

export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const p = new Command('predict')
    .description('Top-k classes with probabilities for images, with a checkpoint written by train.')
    .requiredOption('--checkpoint <path>', 'a .safetensors checkpoint from train (best.safetensors, last.safetensors)')
    .option('--top <k>', 'how many classes to show', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--top must be an integer >= 1, got '${v}'.`);
      return n;
    }, 5)
    .addOption(new Option('--device <d>', 'where to run').choices(['auto', 'cpu', 'cuda']).default('cpu'))
    .option('--json', 'print JSON', false)
    .argument('<images...>', 'image files (JPEG, PNG, ...)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  try {
    p.parse(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
  const o = p.opts();
  try {
    for (const f of p.args) if (!fs.existsSync(f)) throw new Error(`${f}: no such file`);
    const res = await predictFiles(o.checkpoint, p.args, { top: o.top, device: o.device });
    if (o.json) {
      io.stdout.write(JSON.stringify(res, null, 2) + '\n');
    } else {
      for (const r of res) {
        io.stdout.write(`${r.file}\n`);
        for (const t of r.top) io.stdout.write(`  ${(100 * t.probability).toFixed(2).padStart(6)}%  ${t.class}\n`);
      }
    }
    return 0;
  } catch (e) {
    io.stderr.write(`error: ${(e as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((c) => (process.exitCode = c), (e) => {
    process.stderr.write(`error: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  });
}
