// `npm run bench -- cpu`: a VGG training step (forward, loss, backward, SGD) and a forward pass on the CPU backend at
// the foundation issue's shapes, with images/s and achieved GFLOP/s, against PyTorch (Debian's python3-torch) on the
// same shapes when it is installed: fp32 against its fp32, bf16 against its own bf16 (torch.autocast), int8
// inference (Int8VGG, forward only) against its own post-training static quantization (FX, its quantized engine's
// default qconfig; Debian's build has oneDNN's engine, not fbgemm). Both sides
// use the same thread count (default 2). For each case PyTorch and vggnet run back to back (and, with
// VGGNET_BENCH_ROUNDS=n, n times alternating, medians taken) so that load from other processes hits both alike.
// The bench says what it compared: the CPU's model, the ISA oneDNN runs, the measured FMA peak the convolutions'
// GFLOP/s is held against, which BLAS PyTorch's linear layers ran on (ratios against the reference BLAS are marked:
// that PyTorch is several times slower than one on OpenBLAS), which allocator PyTorch ran on (jemalloc, retaining
// freed memory, when installed: see jemalloc()), how fast the machine faults in fresh memory, and which oneDNN
// kernels each of our cases ran.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cpuWinograd, setNumThreads } from '../backend';
import { cfgs, cpuBf16Note, VGGNet, type VGGConfig, type Precision } from '../models/vgg';
import { Int8VGG } from '../models/int8';
import { noGrad } from '../nn/module';
import { cpuIsaInfo, cpuKernelsUsed, cpuPeakGflops, int8WeightMax } from '../ops';
import type { CpuKernelUse } from '../native';
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

export interface CpuBenchRow {
  case: string;
  what: string;
  ours: number;
  gflops: number;
  /** the convolutions' GFLOP/s (direct-convolution FLOPs) over their own wall time (profiled pass) */
  convGflops?: number;
  /** PyTorch in the same precision: fp32, or bf16 under torch.autocast */
  torch?: number;
}

interface Timing {
  train: number;
  fwd: number;
  /** ms spent in conv ops per training step / per forward pass, from the profiled pass */
  convTrainMs: number;
  convFwdMs: number;
  /** the oneDNN kernels one training step and one forward pass ran */
  kernels: CpuKernelUse[];
}

const CONV_OPS = ['conv2dForward', 'conv2dBackwardData', 'conv2dBackwardWeights', 'int8Conv2dForward'];
/** The bench's precisions: the model's, and int8 inference (forward only). */
export type BenchPrecision = Precision | 'int8';
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
  // lr 0.001 on both sides (scripts/bench_torch_cpu.py): at 0.01 the one repeated batch drove vgg19 at 96² to a NaN
  // loss by the seventh step, and a step whose loss is not finite skips backward and SGD here (train_step.ts), so
  // the later timed or profiled steps measured a forward only. Every step's loss is checked to be finite.
  const opt = sgd({ lr: 0.001, momentum: 0.9, weightDecay: 5e-4 });
  const step = () => {
    const loss = trainStep(m, opt, x, y);
    if (!Number.isFinite(loss)) throw new Error(`bench: ${c.model} b${c.batch} ${c.size}² ${precision}: the training loss became ${loss}, so steps no longer ran backward; the timing would be a forward's`);
  };
  try {
    const train: number[] = [];
    for (let i = 0; i < warmup + steps; i++) {
      const t = performance.now();
      step();
      if (i >= warmup) train.push(performance.now() - t);
    }
    // The kernels of one more step, then op-profiled steps: after the timed ones, so that neither the kernel log
    // nor the profiler's bookkeeping touches the img/s.
    cpuKernelsUsed();
    step();
    const kernels = cpuKernelsUsed();
    const profiled = Math.min(steps, 3);
    const convTrainMs = convMsPerRun(profiled, step);
    // Inference as evaluation and `predict` run it: eval mode under noGrad, inside withFrozenWeights (so at inputs
    // under 224² the classifier's first layer is folded with the average pool once, in the warm-up, not per pass).
    m.eval();
    const inf = m.withFrozenWeights(() => timeInference(() => noGrad(() => m.forward(x).dispose()), c.batch, steps, warmup));
    kernels.push(...inf.kernels);
    return { train: (c.batch * 1000) / median(train), fwd: inf.fwd, convTrainMs, convFwdMs: inf.convFwdMs, kernels };
  } finally {
    m.dispose();
    opt.dispose();
    x.dispose();
    y.dispose();
  }
}

/**
 * img/s of `forward` (a batch of `batch` images; median of `steps` after `warmup`), then the kernels of one more pass
 * and the conv ms of op-profiled passes: after the timed ones, so that neither bookkeeping touches the img/s.
 */
function timeInference(forward: () => void, batch: number, steps: number, warmup: number): Pick<Timing, 'fwd' | 'convFwdMs' | 'kernels'> {
  const fwd: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    const t = performance.now();
    forward();
    if (i >= warmup) fwd.push(performance.now() - t);
  }
  cpuKernelsUsed();
  forward();
  const kernels = cpuKernelsUsed().map((k) => ({ ...k, op: `${k.op} (inference)` }));
  return { fwd: (batch * 1000) / median(fwd), convFwdMs: convMsPerRun(Math.min(steps, 3), forward), kernels };
}

/** int8 inference (Int8VGG calibrated on the timed batch itself) as `timeOurs` times the forward pass. */
async function timeOursInt8(c: CpuCase, steps: number, warmup: number): Promise<Pick<Timing, 'fwd' | 'convFwdMs' | 'kernels'>> {
  const m = new VGGNet(CFG[c.model], { device: 'cpu', precision: 'fp32', seed: 1 });
  const rng = new Rng(1);
  const x = Tensor.from(rng.fillNormal(new Float32Array(c.batch * 3 * c.size * c.size), 0, 1), [c.batch, 3, c.size, c.size]);
  let q: Int8VGG | undefined;
  try {
    m.eval();
    q = await Int8VGG.calibrate(m, [x]);
    const int8 = q;
    return m.withFrozenWeights(() => timeInference(() => int8.forward(x).dispose(), c.batch, steps, warmup));
  } finally {
    q?.dispose();
    m.dispose();
    x.dispose();
  }
}

interface TorchCase {
  train: number;
  fwd: number;
  trainBf16?: number;
  fwdBf16?: number;
  fwdInt8?: number;
}
interface TorchInfo {
  blas: { kind: string; libs: string[] };
  allocator?: string;
  torch: string;
  quantized_engine?: string;
}

let jemallocPath: string | undefined | null = null; // null: not looked up yet
/**
 * jemalloc for PyTorch's process, keeping the memory it frees (MALLOC_CONF below), or undefined when it is not
 * installed or VGGNET_BENCH_TORCH_MALLOC=system. PyTorch's CPU allocator hands every tensor back to malloc, and
 * glibc returns large blocks to the kernel, so each step faults its buffers in afresh; vggnet's caching allocator
 * reuses its blocks. On a VM whose page faults are slow that was most of PyTorch's step (AMD EPYC guest, first
 * touch 0.36 GB/s: vgg11 b16 32² train 7.4 img/s on glibc malloc, 30 on jemalloc), a cost of the allocator rather
 * than of PyTorch's kernels; a caching allocator is what PyTorch's own CPU tuning guide recommends.
 */
function jemalloc(): string | undefined {
  if (process.env.VGGNET_BENCH_TORCH_MALLOC === 'system') return undefined;
  // Looked up once per process, not for every PyTorch run of every case and round.
  if (jemallocPath === null) {
    const r = spawnSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8' });
    jemallocPath = /\s=>\s(\S*libjemalloc\.so\.2)\s*$/m.exec(r.stdout ?? '')?.[1];
  }
  return jemallocPath;
}
const JEMALLOC_RETAIN = 'retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1';

/**
 * " (AuthenticAMD family 26 model 2)" from /proc/cpuinfo, or "": a VM often names its CPU only "AMD EPYC", and the
 * family and model numbers still tell the generation (AMD family 23: Zen 1-2, 25: Zen 3-4, 26: Zen 5).
 */
function cpuFamily(): string {
  let info = '';
  try {
    info = fs.readFileSync('/proc/cpuinfo', 'latin1');
  } catch {
    return '';
  }
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.+)$`, 'm').exec(info)?.[1].trim();
  const vendor = field('vendor_id'), family = field('cpu family'), model = field('model');
  return vendor && family && model ? ` (${vendor} family ${family} model ${model})` : '';
}

/** GB/s of writing freshly mapped memory (page faults included) and of rewriting it: what an allocator that returns memory to the kernel pays per step. */
function firstTouchGBs(): { first: number; again: number } {
  const n = 128 << 20;
  const b = Buffer.allocUnsafeSlow(n);
  let t = process.hrtime.bigint();
  b.fill(1);
  const first = n / Number(process.hrtime.bigint() - t);
  t = process.hrtime.bigint();
  b.fill(2);
  return { first, again: n / Number(process.hrtime.bigint() - t) };
}

/** One case on PyTorch (fp32, and bf16 under autocast when asked), or why it could not run. */
function timeTorch(py: string, c: CpuCase, threads: number, steps: number, warmup: number, bf16: boolean, int8: boolean): { info: TorchInfo; r: TorchCase } | string {
  const script = path.resolve(__dirname, '..', '..', 'scripts', 'bench_torch_cpu.py');
  const args = [script, '--cases', `${c.model}:${c.batch}:${c.size}`, '--threads', String(threads), '--steps', String(steps), '--warmup', String(warmup)];
  if (bf16) args.push('--bf16');
  if (int8) args.push('--int8');
  // PyTorch's BLAS (OpenBLAS's own pthreads, or MKL) gets the same thread count as its OpenMP and ours.
  const n = String(threads);
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: n, OPENBLAS_NUM_THREADS: n, MKL_NUM_THREADS: n };
  const je = jemalloc();
  if (je) Object.assign(env, { LD_PRELOAD: [je, process.env.LD_PRELOAD].filter(Boolean).join(':'), MALLOC_CONF: JEMALLOC_RETAIN });
  const r = spawnSync(py, args, { encoding: 'utf8', timeout: 1_800_000, env });
  if (r.status !== 0) return `PyTorch bench failed: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-1)[0]}`;
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const info = lines.find((j) => j.blas) as TorchInfo | undefined;
  const j = lines.find((l) => l.model);
  if (!info || !j) return `PyTorch bench printed no result: ${r.stdout.slice(-200)}`;
  return { info, r: { train: j.train_img_s, fwd: j.fwd_img_s, trainBf16: j.train_bf16_img_s, fwdBf16: j.fwd_bf16_img_s, fwdInt8: j.fwd_int8_img_s } };
}

const GLIBC_MALLOC_NOTE =
  "PyTorch runs on glibc's malloc, which returns its large buffers to the kernel: every step faults them in again " +
  "(vggnet's caching allocator reuses its own). Where page faults are slow (see 'first touch' above) that can be " +
  "most of PyTorch's step; install jemalloc for a fair reference (Debian/Ubuntu: sudo apt-get install libjemalloc2; " +
  'the bench preloads it into PyTorch with freed memory retained).';

const REFERENCE_BLAS_NOTE =
  "PyTorch runs on the reference BLAS (Debian's netlib libblas3): its linear layers are several times slower than " +
  'on OpenBLAS, so ratios against it (marked †) overstate vggnet. Install OpenBLAS for an honest reference ' +
  '(Debian/Ubuntu: sudo apt-get install libopenblas0-pthread; python3-torch picks it up through libblas.so.3).';

/** "conv: jit_wino_4x3:avx512_core ×36 1523 ms, jit:avx512_core ×3 …; reorders ×5 12 ms" per group of ops. */
function kernelSummary(kernels: CpuKernelUse[]): string[] {
  const groups: [string, (op: string) => boolean][] = [
    ['train conv', (op) => op.startsWith('conv2d_') && !op.includes('(inference)')],
    ['inference conv', (op) => (op.startsWith('conv2d_') || op.startsWith('int8_conv2d_')) && op.includes('(inference)')],
    ['inference linear', (op) => (op.startsWith('linear_') || op.startsWith('int8_linear_')) && op.includes('(inference)')],
    ['inference quantize', (op) => (op.startsWith('quantize_') || op.startsWith('dequantize_')) && op.includes('(inference)')],
    ['train linear', (op) => op.startsWith('linear_') && !op.includes('(inference)')],
    ['pool', (op) => op.startsWith('maxpool') && !op.includes('(inference)')],
  ];
  const out: string[] = [];
  for (const [name, match] of groups) {
    const by = new Map<string, { calls: number; ms: number }>();
    for (const k of kernels.filter((k) => match(k.op))) {
      const e = by.get(k.impl) ?? { calls: 0, ms: 0 };
      e.calls += k.calls;
      e.ms += k.ms;
      by.set(k.impl, e);
    }
    if (!by.size) continue;
    const parts = [...by].sort((a, b) => b[1].ms - a[1].ms).map(([impl, e]) => `${impl} ×${e.calls} ${e.ms.toFixed(0)} ms`);
    out.push(`${name}: ${parts.join(', ')}`);
  }
  return out;
}

function load(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

/** Which Winograd convolutions run (native/cpu/conv.cc: use_winograd, use_our_winograd). */
function winogradNote(isa: string): string {
  const mode = cpuWinograd();
  const rule = '3×3 layers with ≥ 64 channels on maps ≥ 8²';
  if (mode === 'off') return 'off (VGGNET_CPU_WINOGRAD=0)';
  if (mode === 'avx2' || isa.startsWith('avx2')) return `ours, wino_4x3:avx2 (${rule})`;
  if (isa.startsWith('avx512_core')) return `oneDNN's, jit_wino_4x3 (${rule})`;
  return 'off (needs AVX2)';
}

export async function benchCpu(options: { threads?: number; steps?: number; warmup?: number; rounds?: number; precisions?: BenchPrecision[]; cases?: CpuCase[] } = {}): Promise<CpuBenchRow[]> {
  const threads = options.threads ?? Number(process.env.VGGNET_BENCH_THREADS ?? 2);
  const steps = options.steps ?? Number(process.env.VGGNET_BENCH_STEPS ?? 5);
  const warmup = options.warmup ?? Number(process.env.VGGNET_BENCH_WARMUP ?? 2);
  const rounds = options.rounds ?? Number(process.env.VGGNET_BENCH_ROUNDS ?? 1);
  const precisions = options.precisions ?? ((process.env.VGGNET_BENCH_PRECISIONS?.split(',') as BenchPrecision[] | undefined) ?? ['fp32', 'bf16', 'int8']);
  const cases = options.cases ?? CPU_CASES.filter((c) => !process.env.VGGNET_BENCH_CASES || process.env.VGGNET_BENCH_CASES.split(',').includes(`${c.model}:${c.batch}:${c.size}`));
  setNumThreads(threads);
  const peak = cpuPeakGflops(threads, 0.5);
  const isa = cpuIsaInfo();
  const cpuModel = `${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}${cpuFamily()}`;
  console.log(`CPU bench on ${cpuModel} (${os.cpus().length} logical CPUs, load ${load()}): ${threads} threads for vggnet and PyTorch; median of ${steps} steps after ${warmup} warm-up${rounds > 1 ? `, ${rounds} alternating rounds` : ''}; 1000 classes`);
  const touch = firstTouchGBs();
  console.log(`memory: first touch of fresh pages ${touch.first.toFixed(2)} GB/s (page faults included), rewriting them ${touch.again.toFixed(1)} GB/s`);
  console.log(`oneDNN ISA ${isa.isa}; measured fp32 peak ${peak.gflops.toFixed(0)} GFLOP/s (${threads} threads, ${peak.vector}); activations in ${isa.blockedLayout} (bf16: ${isa.bf16Layout}); Winograd ${winogradNote(isa.isa)}`);
  const bf16Note = precisions.includes('bf16') ? cpuBf16Note() : undefined;
  // avx512_core without avx512_bf16/AMX: oneDNN's bf16 kernels run, converting to f32 in the kernels.
  const bf16Fast = /avx512_core_(bf16|amx)/.test(isa.isa);
  if (precisions.includes('bf16')) {
    console.log(bf16Note ?? `bf16 on oneDNN's bf16 kernels (${isa.isa}${bf16Fast ? ', native bf16 instructions' + (isa.bf16WinogradLayers ? '; layers of ≥ 256 channels on ≥ 28² maps on f32 Winograd instead, faster here' : '') : ': no avx512_bf16 or AMX, so oneDNN converts to f32 inside its kernels; no speed-up expected'})`);
  }
  if (precisions.includes('int8')) {
    console.log(`int8 inference: convolutions and classifier on oneDNN's int8 kernels (${isa.isa}), weights per channel in ±${int8WeightMax()}${int8WeightMax() < 127 ? ' (no VNNI: 7 bits, so that its int16 pair sums cannot saturate; the first conv in fp32)' : ''}; forward rows only`);
  }
  const label = (p: BenchPrecision) => (p === 'bf16' ? (bf16Note ? 'bf16 (emulated)' : bf16Fast ? 'bf16' : 'bf16 (no bf16 ISA)') : p);

  const py = pythonWith('torch');
  if (!py) console.log('PyTorch not installed (apt-get install python3-torch, or set VGGNET_PYTHON): no comparison');
  let torchInfo: TorchInfo | undefined;
  let referenceBlas = false;
  const rows: CpuBenchRow[] = [];
  const kernelLines: string[] = [];
  for (const c of cases) {
    const name = `${c.model} b${c.batch} ${c.size}²`;
    const macs: VggMacs = vggMacs(CFG[c.model], c.size);
    const torchRuns: TorchCase[] = [];
    const ours = new Map<Precision, Timing[]>();
    const oursInt8: Pick<Timing, 'fwd' | 'convFwdMs' | 'kernels'>[] = [];
    for (let r = 0; r < rounds; r++) {
      if (py) {
        const t = timeTorch(py, c, threads, steps, warmup, precisions.includes('bf16'), precisions.includes('int8'));
        if (typeof t === 'string') {
          console.log(`${name}: ${t}`);
        } else {
          torchRuns.push(t.r);
          if (!torchInfo) {
            torchInfo = t.info;
            referenceBlas = t.info.blas.kind === 'reference';
            console.log(`PyTorch ${t.info.torch} on ${t.info.blas.kind === 'reference' ? 'the reference BLAS (netlib)' : t.info.blas.kind} (${t.info.blas.libs.join(', ') || 'no BLAS library mapped'}); allocator ${t.info.allocator ?? 'unknown'}${t.info.allocator === 'jemalloc' ? ` (MALLOC_CONF=${JEMALLOC_RETAIN}: freed memory kept, as vggnet's caching allocator keeps it)` : ''}${precisions.includes('int8') ? `; quantized engine ${t.info.quantized_engine ?? 'unknown'}` : ''}`);
            if (t.info.allocator === 'glibc malloc') console.log(GLIBC_MALLOC_NOTE);
            if (referenceBlas) console.log(REFERENCE_BLAS_NOTE);
          }
        }
      }
      for (const p of precisions) {
        try {
          if (p === 'int8') {
            oursInt8.push(await timeOursInt8(c, steps, warmup));
            continue;
          }
          const list = ours.get(p) ?? [];
          list.push(timeOurs(c, p, steps, warmup));
          ours.set(p, list);
        } catch (e) {
          console.log(`${name} ${label(p)}: ${(e as Error).message}`);
        }
      }
    }
    const tm = (f: (t: TorchCase) => number | undefined) => {
      const v = torchRuns.map(f).filter((x): x is number => x !== undefined);
      return v.length ? median(v) : undefined;
    };
    for (const p of precisions) {
      const list = p === 'int8' ? undefined : ours.get(p);
      if (!list?.length) continue;
      const r = {
        train: median(list.map((t) => t.train)), fwd: median(list.map((t) => t.fwd)),
        convTrainMs: median(list.map((t) => t.convTrainMs)), convFwdMs: median(list.map((t) => t.convFwdMs)),
      };
      // conv FLOPs of a step: forward + backward-weights of every conv, backward-data of all but the first
      const convTrainFlops = c.batch * 2 * (3 * macs.conv - macs.firstConv);
      rows.push({
        case: name, what: `train ${label(p)}`, ours: r.train, gflops: (r.train * trainFlopsPerImage(macs)) / 1e9,
        convGflops: convTrainFlops / r.convTrainMs / 1e6, torch: tm((t) => (p === 'bf16' ? t.trainBf16 : t.train)),
      });
      rows.push({
        case: name, what: `forward ${label(p)}`, ours: r.fwd, gflops: (r.fwd * 2 * macs.total) / 1e9,
        convGflops: (c.batch * 2 * macs.conv) / r.convFwdMs / 1e6, torch: tm((t) => (p === 'bf16' ? t.fwdBf16 : t.fwd)),
      });
      for (const l of kernelSummary(list[list.length - 1].kernels)) kernelLines.push(`${name} ${label(p)} ${l}`);
    }
    if (oursInt8.length) {
      const fwd = median(oursInt8.map((t) => t.fwd)), convMs = median(oursInt8.map((t) => t.convFwdMs));
      rows.push({
        case: name, what: 'forward int8', ours: fwd, gflops: (fwd * 2 * macs.total) / 1e9,
        convGflops: (c.batch * 2 * macs.conv) / convMs / 1e6, torch: tm((t) => t.fwdInt8),
      });
      for (const l of kernelSummary(oursInt8[oursInt8.length - 1].kernels)) kernelLines.push(`${name} int8 ${l}`);
    }
  }
  const fmt = (v: number | undefined, d = 2) => (v === undefined ? '—' : v.toFixed(d));
  const mark = referenceBlas ? '†' : '';
  console.log(`\n| case | step | vggnet img/s | GFLOP/s | conv GFLOP/s | conv % of peak | PyTorch img/s (same precision) | ratio |`);
  console.log('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const pct = r.convGflops === undefined ? undefined : (100 * r.convGflops) / peak.gflops;
    console.log(`| ${r.case} | ${r.what} | ${fmt(r.ours)} | ${fmt(r.gflops, 0)} | ${fmt(r.convGflops, 0)} | ${fmt(pct, 0)} | ${fmt(r.torch)} | ${r.torch ? (r.ours / r.torch).toFixed(2) + '×' + mark : '—'} |`);
  }
  console.log(`(${cpuModel}, oneDNN ${isa.isa}, peak ${peak.gflops.toFixed(0)} GFLOP/s; load ${load()} at the end. GFLOP/s count direct-convolution FLOPs: Winograd does fewer, so conv % of peak can pass 100.)`);
  if (precisions.includes('bf16')) {
    console.log(`(PyTorch bf16: torch.autocast('cpu', dtype=torch.bfloat16) on the same model, the one against which our bf16 rows are compared.)`);
  }
  if (precisions.includes('int8')) {
    console.log(`(int8 rows: both sides calibrated on the timed batch; PyTorch's is torch.ao.quantization's FX post-training static quantization of the same model; conv % of the fp32 peak, which int8 kernels can pass several times over)`);
  }
  if (precisions.includes('bf16')) {
    console.log(`(bf16 rows: conv % of the fp32 peak${bf16Note ? '; emulated in fp32 on this CPU, conversions included' : bf16Fast ? ", which oneDNN's bf16 kernels can exceed" : ''})`);
  }
  if (referenceBlas) console.log(`† ${REFERENCE_BLAS_NOTE}`);
  if (kernelLines.length) {
    console.log('\noneDNN kernels per training step / forward pass (ops.cpuKernelsUsed: implementation, calls, ms in the primitive):');
    for (const l of kernelLines) console.log(`  ${l}`);
  }
  return rows;
}
