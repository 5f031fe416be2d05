// `npm run bench -- gpu-layers`: each convolution of vgg16 alone on the GPU, as the model runs it in bf16 (batch 64,
// channels-last activations, float32 master weights): milliseconds and achieved TFLOP/s per direction (forward,
// backward-data, backward-weights) against the dense bf16 peak, to show which layers and directions fall short.
// The algorithm is the one our plan chose (cudnnFind's fastest that fits the workspace). One `BENCH_LAYER_JSON` line
// per layer (scripts/gpu-check.sh collects them).
import { backends, synchronize } from '../backend';
import * as ops from '../ops';
import { cfgs } from '../models/vgg';
import { Tensor } from '../tensor';
import { peakFlops } from './gpu';

export interface LayerRow {
  layer: number;
  cin: number;
  cout: number;
  size: number;
  /** ms per call and TFLOP/s for forward, backward-data, backward-weights. */
  fwdMs: number;
  bwdDataMs: number;
  bwdWeightsMs: number;
  fwdTflops: number;
  bwdDataTflops: number;
  bwdWeightsTflops: number;
}

function timeIt(fn: () => void, reps: number): number {
  for (let i = 0; i < 2; i++) fn(); // the first call searches the algorithms; the second settles the workspace
  synchronize('cuda');
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) fn();
  synchronize('cuda');
  return Number(process.hrtime.bigint() - t0) / 1e6 / reps;
}

/** A bf16 channels-last tensor of the shape on the GPU, normal random values. */
function activation(shape: number[], seed: number): Tensor {
  const f = Tensor.empty(shape, { dtype: 'float32', device: 'cuda' });
  ops.fillRandom(f, 'normal', 0, 1, seed);
  const b = ops.cast(f, 'bfloat16');
  f.dispose();
  const l = ops.toLayout(b, 'nhwc');
  b.dispose();
  return l;
}

export async function benchGpuLayers(batch = Number(process.env.VGGNET_BENCH_BATCH ?? 64), reps = Number(process.env.VGGNET_BENCH_STEPS ?? 10)): Promise<LayerRow[]> {
  const info = backends();
  if (!info.cuda.built || info.cuda.devices.length === 0) {
    console.log(`bench gpu-layers: no usable CUDA device (${info.cuda.built ? info.cuda.error ?? 'no device' : 'addon built CPU-only'})`);
    return [];
  }
  const dev = info.cuda.devices[0];
  const peak = peakFlops(dev.name, 'bf16');
  ops.setCudaMathMode('bf16');
  console.log(`bench gpu-layers: ${dev.name}, cuDNN ${info.cuda.cudnn}; vgg16 convolutions, batch ${batch}, bf16 NHWC, ${reps} calls each` +
    (peak ? `; dense bf16 peak ${(peak / 1e12).toFixed(0)} TFLOP/s` : ''));
  const rows: LayerRow[] = [];
  const p: ops.Conv2dParams = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
  let cin = 3;
  let size = 224;
  let layer = 0;
  for (const v of cfgs.D) {
    if (v === 'M') {
      size /= 2;
      continue;
    }
    const cout = v;
    const x = activation([batch, cin, size, size], 1 + layer);
    const dy = activation([batch, cout, size, size], 101 + layer);
    const w = Tensor.empty([cout, cin, 3, 3], { dtype: 'float32', device: 'cuda' });
    ops.fillRandom(w, 'normal', 0, 0.05, 201 + layer);
    const dw = Tensor.zeros([cout, cin, 3, 3], { dtype: 'float32', device: 'cuda' });
    try {
      const fwdMs = timeIt(() => ops.conv2dForward(x, w, null, p).dispose(), reps);
      const bwdDataMs = cin === 3 ? NaN : timeIt(() => ops.conv2dBackwardData(dy, w, x.shape, p).dispose(), reps); // the first layer needs no dx
      const bwdWeightsMs = timeIt(() => ops.conv2dBackwardWeights(x, dy, p, dw, null, false), reps);
      const flop = 2 * batch * size * size * cin * cout * 9;
      const tf = (ms: number) => Math.round((flop / (ms / 1e3) / 1e12) * 10) / 10;
      rows.push({
        layer: ++layer, cin, cout, size, fwdMs, bwdDataMs, bwdWeightsMs,
        fwdTflops: tf(fwdMs), bwdDataTflops: tf(bwdDataMs), bwdWeightsTflops: tf(bwdWeightsMs),
      });
    } finally {
      for (const t of [x, dy, w, dw]) t.dispose();
    }
    cin = cout;
  }
  const pct = (t: number) => (peak && Number.isFinite(t) ? `${((t * 1e12 * 100) / peak).toFixed(0)}%` : '-');
  const f = (ms: number) => (Number.isFinite(ms) ? ms.toFixed(2) : '-');
  console.log('layer  cin  cout  size |  fwd ms  TFLOP/s  peak | bwd-data ms  TFLOP/s  peak | bwd-w ms  TFLOP/s  peak');
  for (const r of rows) {
    console.log(`${String(r.layer).padStart(5)} ${String(r.cin).padStart(4)} ${String(r.cout).padStart(5)} ${String(r.size).padStart(5)} | ` +
      `${f(r.fwdMs).padStart(7)} ${String(r.fwdTflops).padStart(8)} ${pct(r.fwdTflops).padStart(5)} | ` +
      `${f(r.bwdDataMs).padStart(11)} ${String(Number.isFinite(r.bwdDataTflops) ? r.bwdDataTflops : '-').padStart(8)} ${pct(r.bwdDataTflops).padStart(5)} | ` +
      `${f(r.bwdWeightsMs).padStart(8)} ${String(r.bwdWeightsTflops).padStart(8)} ${pct(r.bwdWeightsTflops).padStart(5)}`);
  }
  const sum = (k: 'fwdMs' | 'bwdDataMs' | 'bwdWeightsMs') => rows.reduce((s, r) => s + (Number.isFinite(r[k]) ? r[k] : 0), 0);
  console.log(`total ms per step: forward ${sum('fwdMs').toFixed(2)}, backward-data ${sum('bwdDataMs').toFixed(2)}, backward-weights ${sum('bwdWeightsMs').toFixed(2)}`);
  for (const r of rows) console.log(`BENCH_LAYER_JSON ${JSON.stringify(r, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v))}`);
  return rows;
}
