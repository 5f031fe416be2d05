// `npm run bench -- gpu`: training img/s of vgg16 224² b64 and vgg19 224² b32 in fp32, tf32 and bf16 on the GPU (and
// the data path alone: STL10 loading + GPU augmentation, against the fastest step), with
// peak device memory and share of the GPU's dense peak FLOP/s; the same step in PyTorch (scripts/bench_torch_gpu.py:
// eager, cudnn.benchmark, channels_last, bf16 autocast, SGD) when torch with CUDA is installed, and the ratio.
// Each result is also printed as one `BENCH_JSON {...}` line (scripts/gpu-check.sh collects them).
import { spawnSync } from 'child_process';
import { pythonWith } from './python';
import { trainFlopsPerImage, vggMacs } from './flops';
import { profilerInstalled, profileReport, profileTotals } from '../profile';
import * as path from 'path';

import { backends, memoryStats, resetPeakMemory, synchronize } from '../backend';
import * as ops from '../ops';
import { cfgs, vgg16, vgg19, type Precision } from '../models/vgg';
import { TrainStepRunner } from '../train/train_step';
import { sgd } from '../optim/sgd';
import { Tensor } from '../tensor';
import { DataLoader, STL10, defaultDataRoot, ensureSampleData, transforms as T } from '../data';
import { augmentBatch } from '../data/augment';
import * as os from 'os';

interface Config {
  model: 'vgg16' | 'vgg19';
  batch: number;
  precision: Precision;
}
export interface GpuBenchResult extends Config {
  imgPerSec?: number;
  peakMiB?: number;
  peakFlopsPct?: number;
  torchImgPerSec?: number;
  torchPeakMiB?: number;
  /** VGGNET_BENCH_TORCH_COMPILE=1: PyTorch's step through torch.compile, a second column. */
  torchCompiledImgPerSec?: number;
  torchCompiledError?: string;
  ratio?: number;
  /** VGGNET_PROFILE=1: the ten costliest ops of the timed (eager, op-synchronised) steps, ms per step. */
  profile?: { op: string; msPerStep: number; calls: number; pct: number }[];
  /** Whether the timed steps ran as CUDA-graph replays (VGGNET_BENCH_CUDA_GRAPH=0: eager), and why not. */
  graphed?: boolean;
  graphNote?: string;
  error?: string;
  torchError?: string;
}

// Most telling first (bf16 is the default and the goal's precision), so a time-boxed run loses the least.
const CONFIGS: Config[] = [
  { model: 'vgg16', batch: 64, precision: 'bf16' },
  { model: 'vgg19', batch: 32, precision: 'bf16' },
  { model: 'vgg16', batch: 64, precision: 'tf32' },
  { model: 'vgg19', batch: 32, precision: 'tf32' },
  { model: 'vgg16', batch: 64, precision: 'fp32' },
  { model: 'vgg19', batch: 32, precision: 'fp32' },
];

/** Dense peak FLOP/s of known GPUs per precision (tensor cores for tf32/bf16), else undefined. */
export function peakFlops(deviceName: string, precision: Precision): number | undefined {
  const table: [RegExp, Record<Precision, number>][] = [
    [/H200|H100.*(SXM|HBM3)|GH200/i, { fp32: 67e12, tf32: 494.7e12, bf16: 989.4e12 }],
    [/H100.*(PCIe|NVL)|H100/i, { fp32: 51e12, tf32: 378e12, bf16: 756e12 }],
    [/A100/i, { fp32: 19.5e12, tf32: 156e12, bf16: 312e12 }],
    [/L40S/i, { fp32: 91.6e12, tf32: 183e12, bf16: 362e12 }],
    [/A10\b/i, { fp32: 31.2e12, tf32: 62.5e12, bf16: 125e12 }],
  ];
  for (const [re, p] of table) if (re.test(deviceName)) return p[precision];
  return undefined;
}

function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? Math.floor(v) : dflt;
}

function runOurs(c: Config, steps: number, warmup: number): { imgPerSec: number; peakMiB: number; graphed: boolean; graphNote?: string } {
  const factory = c.model === 'vgg16' ? vgg16 : vgg19;
  // Float32 math of the CUDA backend (TF32 or not); the model may set it too from its precision.
  ops.setCudaMathMode(c.precision);
  const model = factory({ numClasses: 1000, device: 'cuda', precision: c.precision, seed: 1 });
  model.train();
  const opt = sgd({ lr: 0.01, momentum: 0.9, weightDecay: 5e-4 });
  const n = c.batch * 3 * 224 * 224;
  const host = new Float32Array(n);
  let seed = 12345;
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    host[i] = (seed / 4294967296) * 2 - 1;
  }
  const labelsHost = new Int32Array(c.batch);
  for (let i = 0; i < c.batch; i++) labelsHost[i] = (i * 37) % 1000;
  const x = Tensor.from(host, [c.batch, 3, 224, 224], { device: 'cuda' });
  const labels = Tensor.from(labelsHost, [c.batch], { device: 'cuda' });
  // What the Trainer runs: after two eager steps (inside the warm-up) the step is captured and replayed.
  const runner = new TrainStepRunner(model, opt, { cudaGraph: process.env.VGGNET_BENCH_CUDA_GRAPH !== '0' });
  let graphed = false;
  const step = (): number => {
    const r = runner.run(x, labels);
    graphed = r.graphed;
    return r.loss;
  };
  try {
    for (let i = 0; i < warmup; i++) step();
    synchronize('cuda');
    resetPeakMemory('cuda');
    if (profilerInstalled()) profileTotals(true); // the profile is of the timed steps: not the warm-up's algorithm search
    const t0 = process.hrtime.bigint();
    let last = 0;
    for (let i = 0; i < steps; i++) last = step();
    synchronize('cuda');
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (!Number.isFinite(last)) throw new Error(`loss is ${last}`);
    return {
      imgPerSec: (c.batch * steps) / secs, peakMiB: memoryStats('cuda').peak / 2 ** 20, graphed,
      graphNote: runner.disabledReason ?? undefined,
    };
  } finally {
    runner.dispose();
    x.dispose();
    labels.dispose();
    model.dispose();
  }
}

function runTorch(configs: Config[], steps: number, warmup: number, compile = false): Map<string, any> {
  const res = new Map<string, any>();
  const script = path.join(__dirname, '..', '..', 'scripts', 'bench_torch_gpu.py');
  const arg = configs.map((c) => `${c.model}:${c.batch}:${c.precision}`).join(',');
  const limit = envInt('VGGNET_BENCH_TORCH_TIMEOUT', 300);
  const r = spawnSync(pythonWith('torch') ?? 'python3', [script, '--configs', arg, '--steps', String(steps), '--warmup', String(warmup), ...(compile ? ['--compile'] : [])], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: limit * 1000,
  });
  // One JSON line per config as it finishes: keep what arrived even when the run was cut short.
  for (const line of (r.stdout ?? '').split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    const j = JSON.parse(line);
    if (j.model) res.set(`${j.model}:${j.batch}:${j.precision}`, j);
    else if (j.error) res.set('*', j);
  }
  if (r.error || r.status !== 0) {
    const why = r.error && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT'
      ? `PyTorch reference stopped after ${limit} s (VGGNET_BENCH_TORCH_TIMEOUT)`
      : `PyTorch reference did not run: ${r.error?.message ?? (r.stderr || '').trim().split('\n').slice(-1)[0]}`;
    if (!res.has('*')) res.set('*', { error: why });
  }
  return res;
}

/**
 * img/s of the data path alone as the Trainer runs it on CUDA: STL10-format 96² uint8 images read and their transform
 * parameters drawn by the DataLoader on every core, copied non-blocking, then randomResizedCrop(224) + flip +
 * colorJitter + normalize on the GPU into bf16 channels-last (the trainer's `gpuAugment`). No training step.
 */
async function gpuDataRate(images: number): Promise<{ imgPerSec: number; workers: number }> {
  const root = ensureSampleData(defaultDataRoot());
  const transform = T.compose([
    T.randomResizedCrop(224), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD),
  ]);
  const workers = os.availableParallelism?.() ?? os.cpus().length;
  const loader = new DataLoader(new STL10({ root, split: 'train', transform }), { batchSize: 64, shuffle: true, seed: 1, workers, dropLast: true });
  let n = 0;
  let t0 = 0;
  for (let epoch = 0; n < images; epoch++) {
    for await (const b of loader.iterate(epoch, { deferAugment: true })) {
      const x = b.images.to('cuda', { nonBlocking: true });
      const params = b.augment!.params.to('cuda', { nonBlocking: true });
      const out = augmentBatch(x, { params, ops: b.augment!.ops }, { dtype: 'bfloat16', layout: 'nhwc' });
      const k = b.images.shape[0];
      for (const t of [b.images, b.labels, b.augment!.params, x, params, out]) t.dispose();
      if (t0 === 0) {
        synchronize('cuda'); // the first batch warms threads, caches and the kernels: not timed
        t0 = performance.now();
        continue;
      }
      n += k;
      if (n >= images) break;
    }
  }
  synchronize('cuda');
  return { imgPerSec: n / ((performance.now() - t0) / 1000), workers };
}

const fmt = (v: number | undefined, d = 1) => (v === undefined ? '-' : v.toFixed(d));

export async function benchGpu(): Promise<void> {
  const info = backends();
  if (!info.cuda.built || info.cuda.devices.length === 0) {
    console.log(`bench gpu: no usable CUDA device (${info.cuda.built ? info.cuda.error ?? 'no device' : 'addon built CPU-only'})`);
    return;
  }
  const dev = info.cuda.devices[0];
  console.log(`bench gpu: ${dev.name} (cc ${dev.cc}), CUDA ${info.cuda.runtime}, cuDNN ${info.cuda.cudnn}, cuBLAS ${info.cuda.cublas}`);
  const steps = envInt('VGGNET_BENCH_STEPS', 10);
  const warmup = envInt('VGGNET_BENCH_WARMUP', 3); // >= 3: two eager steps, then the capture, before timing
  const only = process.env.VGGNET_BENCH_CONFIGS; // e.g. "vgg16:64:bf16"
  const configs = only
    ? CONFIGS.filter((c) => only.split(',').includes(`${c.model}:${c.batch}:${c.precision}`))
    : CONFIGS;
  // (VGGNET_BENCH_TORCH_COMPILE=1 adds PyTorch through torch.compile per config: its compilation takes minutes.)
  // Per config, PyTorch's side first and then ours: a run cut short by its time box keeps both numbers of every
  // config it finished, and neither side always runs on a GPU warmed (or heated) by the other.
  const torchOn = process.env.VGGNET_BENCH_NO_TORCH !== '1';
  const results: GpuBenchResult[] = [];
  for (const c of configs) {
    const torch = torchOn ? runTorch([c], steps, warmup) : undefined;
    const t = torch && (torch.get(`${c.model}:${c.batch}:${c.precision}`) ?? torch.get('*'));
    const compiled = torchOn && process.env.VGGNET_BENCH_TORCH_COMPILE === '1'
      ? runTorch([c], steps, Math.max(warmup, 3), true).get(`${c.model}:${c.batch}:${c.precision}`) ?? { error: 'no result' }
      : undefined;
    if (compiled) console.log(`  torch.compile ${c.model} b${c.batch} ${c.precision}: ${compiled.error ? 'ERROR ' + compiled.error : `${fmt(compiled.imgPerSec)} img/s`}`);
    if (torch) console.log(`  torch ${c.model} b${c.batch} ${c.precision}: ${!t || t.error ? 'ERROR ' + (t?.error ?? 'no result') : `${fmt(t.imgPerSec)} img/s, peak ${t.peakMiB} MiB`}`);
    const r: GpuBenchResult = { ...c };
    try {
      const o = runOurs(c, steps, warmup);
      r.imgPerSec = Math.round(o.imgPerSec * 10) / 10;
      r.peakMiB = Math.round(o.peakMiB);
      r.graphed = o.graphed;
      if (o.graphNote) r.graphNote = o.graphNote;
      const peak = peakFlops(dev.name, c.precision);
      const flopsPerImg = trainFlopsPerImage(vggMacs(cfgs[c.model === 'vgg16' ? 'D' : 'E'], 224));
      if (peak) r.peakFlopsPct = Math.round(((o.imgPerSec * flopsPerImg) / peak) * 1000) / 10;
    } catch (e) {
      r.error = (e as Error).message;
    }
    if (torch && (!t || t.error)) r.torchError = t?.error ?? 'no result';
    else if (t) {
      r.torchImgPerSec = t.imgPerSec;
      r.torchPeakMiB = t.peakMiB;
      if (r.imgPerSec && t.imgPerSec) r.ratio = Math.round((r.imgPerSec / t.imgPerSec) * 100) / 100;
    }
    if (compiled?.error) r.torchCompiledError = compiled.error;
    else if (compiled) r.torchCompiledImgPerSec = compiled.imgPerSec;
    results.push(r);
    if (profilerInstalled() && !r.error) {
      const rows = [...profileTotals(false)].sort((a, b) => b[1].ms - a[1].ms);
      const all = rows.reduce((sum, [, v]) => sum + v.ms, 0) || 1;
      r.profile = rows.slice(0, 10).map(([op, v]) => ({
        op, msPerStep: Math.round((v.ms / steps) * 100) / 100, calls: v.calls, pct: Math.round((1000 * v.ms) / all) / 10,
      }));
      console.log(profileReport());
    }
    console.log(`  ours  ${c.model} b${c.batch} ${c.precision}: ${r.error ? 'ERROR ' + r.error : `${fmt(r.imgPerSec)} img/s, peak ${r.peakMiB} MiB, ${fmt(r.peakFlopsPct)}% of peak, ${r.graphed ? 'CUDA graph' : `eager${r.graphNote ? ` (${r.graphNote})` : ''}`}`}`);
    console.log(`BENCH_JSON ${JSON.stringify(r)}`); // at once: a run cut short by its time box keeps what it measured
  }
  if (process.env.VGGNET_BENCH_NO_DATA !== '1') {
    // The data path must outrun the fastest training step measured above (item: the pipeline is never the bottleneck).
    try {
      const d = await gpuDataRate(envInt('VGGNET_BENCH_DATA_IMAGES', 4096));
      const fastest = Math.max(0, ...results.map((r) => r.imgPerSec ?? 0));
      console.log(`  data  STL10 96² -> GPU augmentation (rrc 224 + flip + jitter + normalize, bf16 NHWC), ${d.workers} loader threads: ${fmt(d.imgPerSec)} img/s` +
        (fastest ? ` = ${fmt(d.imgPerSec / fastest, 2)}x the fastest step above` : ''));
      console.log(`BENCH_DATA_JSON ${JSON.stringify({ imgPerSec: Math.round(d.imgPerSec), workers: d.workers, fastestStepImgPerSec: fastest || null })}`);
    } catch (e) {
      console.log(`  data  GPU data path: ERROR ${(e as Error).message}`);
    }
  }
  console.log('\nmodel  batch precision     ours img/s   torch img/s   ratio   peak MiB (ours/torch)   % of peak');
  for (const r of results) {
    console.log(`${r.model.padEnd(6)} ${String(r.batch).padStart(5)} ${r.precision.padEnd(9)} ${fmt(r.imgPerSec).padStart(12)} ${fmt(r.torchImgPerSec).padStart(13)} ${fmt(r.ratio, 2).padStart(7)}   ${`${r.peakMiB ?? '-'}/${r.torchPeakMiB ?? '-'}`.padStart(21)}   ${fmt(r.peakFlopsPct).padStart(9)}${r.error ? '  ERROR: ' + r.error : ''}${r.torchError && !r.error ? '  (torch: ' + r.torchError + ')' : ''}`);
  }
}
