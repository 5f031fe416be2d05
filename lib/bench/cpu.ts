// `npm run bench -- cpu`: a VGG training step (forward, loss, backward, SGD) and a forward pass on the CPU backend at
// the foundation issue's shapes, with images/s and achieved GFLOP/s, and PyTorch (Debian's python3-torch) on the
// same shapes in the same run when it is installed. Both sides use the same thread count (default 2). The
// convolutions' own GFLOP/s (from a separate, op-profiled pass) is set against the CPU's measured FMA peak.
// bf16 rows run wherever the CPU backend does: on oneDNN's bf16 kernels (avx512_core and newer) or, elsewhere,
// emulated in fp32 (labelled "bf16 (emulated)"); either way their % of peak is against the fp32 peak.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { setNumThreads } from '../backend';
import { cfgs, cpuBf16Note, VGGNet, type VGGConfig, type Precision } from '../models/vgg';
import { cpuIsaInfo, cpuPeakGflops } from '../ops';
import { installProfiler, profileTotals, uninstallProfiler } from '../profile';
import { trainFlopsPerImage, vggMacs, type VggMacs } from './flops';
import { trainStep } from '../train/train_step';
import { sgd } from '../optim/sgd';
import { Tensor } from '../tensor';
import { Rng } from '../random';
import { pythonWith } from './python';

export interface CpuCase {
  model: 'vgg11' | 'vgg16' | 'vgg19';
  batch: number;
  size: number;
}
export const CPU_CASES: CpuCase[] = [
  { model: 'vgg11', batch: 16, size: 32 },
  { model: 'vgg16', batch: 8, size: 64 },
  { model: 'vgg19', batch: 4, size: 96 },
  { model: 'vgg16', batch: 8, size: 224 },
];
const CFG: Record<CpuCase['model'], VGGConfig> = { vgg11: cfgs.A, vgg16: cfgs.D, vgg19: cfgs.E };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Row {
  case: string;
  what: string;
  ours: number;
  gflops: number;
  /** the convolutions' GFLOP/s over their own wall time (profiled pass) */
  convGflops?: number;
  torch?: number;
}

interface Timing {
  train: number;
  fwd: number;
  /** ms spent in conv ops per training step / per forward pass, from the profiled pass */
  convTrainMs: number;
  convFwdMs: number;
}

const CONV_OPS = ['conv2dForward', 'conv2dBackwardData', 'conv2dBackwardWeights'];
/** ms per run spent in conv ops over `runs` op-profiled runs of `run` (the profiler is removed afterwards). */
function convMsPerRun(runs: number, run: () => void): number {
  installProfiler();
  profileTotals(); // reset
  try {
    for (let i = 0; i < runs; i++) run();
    const t = profileTotals();
    return CONV_OPS.reduce((s, k) => s + (t.get(k)?.ms ?? 0), 0) / runs;
  } finally {
    uninstallProfiler();
  }
}

function timeOurs(c: CpuCase, precision: Precision, steps: number, warmup: number): Timing {
  const m = new VGGNet(CFG[c.model], { device: 'cpu', precision, seed: 1 });
  const rng = new Rng(1);
  const x = Tensor.from(rng.fillNormal(new Float32Array(c.batch * 3 * c.size * c.size), 0, 1), [c.batch, 3, c.size, c.size]);
  const y = Tensor.from(Int32Array.from({ length: c.batch }, () => rng.int(1000)), [c.batch]);
  const opt = sgd({ lr: 0.01, momentum: 0.9, weightDecay: 5e-4 });
  const train: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    const t = performance.now();
    trainStep(m, opt, x, y);
    if (i >= warmup) train.push(performance.now() - t);
  }
  // Op-profiled steps after the timed ones, so the profiler's bookkeeping never touches the img/s.
  const profiled = Math.min(steps, 3);
  const convTrainMs = convMsPerRun(profiled, () => trainStep(m, opt, x, y));
  m.eval();
  const fwd: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    const t = performance.now();
    m.forward(x).dispose();
    if (i >= warmup) fwd.push(performance.now() - t);
  }
  const convFwdMs = convMsPerRun(profiled, () => m.forward(x).dispose());
  m.dispose();
  opt.dispose();
  x.dispose();
  y.dispose();
  return { train: (c.batch * 1000) / median(train), fwd: (c.batch * 1000) / median(fwd), convTrainMs, convFwdMs };
}

function timeTorch(cases: CpuCase[], threads: number, steps: number, warmup: number): Map<string, { train: number; fwd: number }> | string {
  const py = pythonWith('torch');
  if (!py) return 'PyTorch not installed (apt-get install python3-torch, or set VGGNET_PYTHON): no comparison';
  const script = path.resolve(__dirname, '..', '..', 'scripts', 'bench_torch_cpu.py');
  const arg = cases.map((c) => `${c.model}:${c.batch}:${c.size}`).join(',');
  const r = spawnSync(py, [script, '--cases', arg, '--threads', String(threads), '--steps', String(steps), '--warmup', String(warmup)], {
    encoding: 'utf8', timeout: 1_800_000,
  });
  if (r.status !== 0) return `PyTorch bench failed: ${(r.stderr || '').trim().split('\n').slice(-1)[0]}`;
  const out = new Map<string, { train: number; fwd: number }>();
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const j = JSON.parse(line);
    out.set(`${j.model}:${j.batch}:${j.size}`, { train: j.train_img_s, fwd: j.fwd_img_s });
  }
  return out;
}

export async function benchCpu(options: { threads?: number; steps?: number; warmup?: number; precisions?: Precision[]; cases?: CpuCase[] } = {}): Promise<Row[]> {
  const threads = options.threads ?? Number(process.env.VGGNET_BENCH_THREADS ?? 2);
  const steps = options.steps ?? Number(process.env.VGGNET_BENCH_STEPS ?? 5);
  const warmup = options.warmup ?? Number(process.env.VGGNET_BENCH_WARMUP ?? 2);
  const precisions = options.precisions ?? ((process.env.VGGNET_BENCH_PRECISIONS?.split(',') as Precision[] | undefined) ?? ['fp32', 'bf16']);
  const cases = options.cases ?? CPU_CASES.filter((c) => !process.env.VGGNET_BENCH_CASES || process.env.VGGNET_BENCH_CASES.split(',').includes(`${c.model}:${c.batch}:${c.size}`));
  setNumThreads(threads);
  const peak = cpuPeakGflops(threads, 0.5);
  console.log(`CPU bench: ${threads} threads for vggnet and PyTorch; median of ${steps} steps after ${warmup} warm-up; 1000 classes`);
  console.log(`measured fp32 peak: ${peak.gflops.toFixed(0)} GFLOP/s (${threads} threads, ${peak.vector}, ${cpuIsaInfo().isa})`);
  const bf16Note = precisions.includes('bf16') ? cpuBf16Note() : undefined;
  if (bf16Note) console.log(bf16Note);
  // The emulation computes in fp32: its rows are that work plus the conversions, not a bf16 kernel's speed.
  const label = (p: Precision) => (p === 'bf16' && bf16Note ? 'bf16 (emulated)' : p);
  const torch = timeTorch(cases, threads, steps, warmup);
  if (typeof torch === 'string') console.log(torch);
  const rows: Row[] = [];
  for (const c of cases) {
    const name = `${c.model} b${c.batch} ${c.size}²`;
    const macs: VggMacs = vggMacs(CFG[c.model], c.size);
    for (const p of precisions) {
      let r: Timing;
      try {
        r = timeOurs(c, p, steps, warmup);
      } catch (e) {
        console.log(`${name} ${label(p)}: ${(e as Error).message}`);
        continue;
      }
      const t = typeof torch === 'string' ? undefined : torch.get(`${c.model}:${c.batch}:${c.size}`);
      // conv FLOPs of a step: forward + backward-weights of every conv, backward-data of all but the first
      const convTrainFlops = c.batch * 2 * (3 * macs.conv - macs.firstConv);
      rows.push({
        case: name, what: `train ${label(p)}`, ours: r.train, gflops: (r.train * trainFlopsPerImage(macs)) / 1e9,
        convGflops: convTrainFlops / r.convTrainMs / 1e6, torch: p === 'fp32' ? t?.train : undefined,
      });
      rows.push({
        case: name, what: `forward ${label(p)}`, ours: r.fwd, gflops: (r.fwd * 2 * macs.total) / 1e9,
        convGflops: (c.batch * 2 * macs.conv) / r.convFwdMs / 1e6, torch: p === 'fp32' ? t?.fwd : undefined,
      });
    }
  }
  const fmt = (v: number | undefined, d = 2) => (v === undefined ? '—' : v.toFixed(d));
  console.log(`\n| case | step | vggnet img/s | GFLOP/s | conv GFLOP/s | conv % of peak | PyTorch fp32 img/s | ratio |`);
  console.log('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const pct = r.convGflops === undefined ? undefined : (100 * r.convGflops) / peak.gflops;
    console.log(`| ${r.case} | ${r.what} | ${fmt(r.ours)} | ${fmt(r.gflops, 0)} | ${fmt(r.convGflops, 0)} | ${fmt(pct, 0)} | ${fmt(r.torch)} | ${r.torch ? (r.ours / r.torch).toFixed(2) + '×' : '—'} |`);
  }
  console.log(`(conv GFLOP/s: the convolutions' FLOPs over their own wall time in op-profiled passes; peak: ${peak.gflops.toFixed(0)} GFLOP/s)`);
  if (precisions.includes('bf16')) {
    console.log(`(bf16 rows: conv % of the fp32 peak${bf16Note ? '; emulated in fp32 on this CPU, conversions included' : ", which oneDNN's bf16 kernels can exceed"})`);
  }
  return rows;
}
