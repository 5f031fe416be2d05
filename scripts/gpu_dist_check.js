#!/usr/bin/env node
// Distributed training on a GPU machine (scripts/gpu-check.sh's `dist` phase; needs the compiled dist/):
//   1. the build: which engines the addon has (NCCL's version);
//   2. a world of one over NCCL: DistributedDataParallel steps against plain steps from the same start (eager, then as
//      captured CUDA-graph replays with the all-reduces inside the graph), and the all-reduce overlap measured with
//      CUDA events on eager steps of a real-size model (time in the buckets' all-reduces, and what the step still
//      waited for after backward);
//   3. two ranks on one GPU over gloo (staged through pinned host memory): the launcher with --devices 0,0 against
//      one process with twice the batch.
// NCCL cannot put two ranks on one GPU, so NCCL with more than one rank is not exercised here.
// Prints DIST_JSON {...} lines for the summary. DIST_CHECK_DEVICE=cpu runs parts 2 and 3 on the CPU over gloo (a dry
// run of this script where there is no GPU).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const lib = require(path.join(__dirname, '..', 'dist', 'index.js'));

const device = process.env.DIST_CHECK_DEVICE || 'cuda';
const report = (o) => console.log(`DIST_JSON ${JSON.stringify(o)}`);
const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
function maxRel(a, b) {
  let worst = 0;
  for (const k of Object.keys(a)) {
    if (!(a[k] instanceof lib.Tensor)) continue;
    const x = a[k].toFloat32(), y = b[k].toFloat32();
    let d = 0, s = 1e-3;
    for (let i = 0; i < x.length; i++) {
      d = Math.max(d, Math.abs(x[i] - y[i]));
      s = Math.max(s, Math.abs(x[i]));
    }
    worst = Math.max(worst, d / s);
  }
  return worst;
}

async function worldOfOne() {
  const backend = device === 'cuda' ? 'nccl' : 'gloo';
  const pg = await lib.initDistributed({ rank: 0, worldSize: 1, masterPort: await freePort(), timeout: 60, device, backend });
  console.log(`world of one: ${pg.engine} ${pg.engineVersion} on ${pg.device}, capturable ${pg.capturable}`);
  // (a) DDP against plain steps, fp32 so that only the reduction differs; eager and then captured.
  const make = () => new lib.VGGNet([16, 'M', 32, 'M', 32, 'M', 32, 'M', 32, 'M'], {
    numClasses: 10, hiddenFeatures: 64, dropout: 0, batchNorm: true, seed: 3, device, precision: 'fp32',
  });
  const plain = make(), dist = make();
  const ddp = new lib.DistributedDataParallel(dist, { processGroup: pg, syncBatchNorm: true });
  const r1 = new lib.TrainStepRunner(plain, lib.sgd({ lr: 0.05, momentum: 0.9 }), { cudaGraph: false });
  const r2 = new lib.TrainStepRunner(dist, lib.sgd({ lr: 0.05, momentum: 0.9 }), { distributed: ddp, onGraphDisabled: (w) => console.log(`graph off: ${w}`) });
  const rng = new lib.Rng(1);
  let worstLoss = 0, graphed = 0;
  for (let s = 0; s < 6; s++) {
    const x = lib.Tensor.from(rng.fillNormal(new Float32Array(8 * 3 * 32 * 32), 0, 1), [8, 3, 32, 32], { device });
    const y = lib.Tensor.from(Int32Array.from({ length: 8 }, () => rng.int(10)), [8], { device });
    const a = r1.run(x, y), b = r2.run(x, y);
    worstLoss = Math.max(worstLoss, Math.abs(a.loss - b.loss) / Math.max(1, Math.abs(a.loss)));
    if (b.graphed) graphed++;
    x.dispose();
    y.dispose();
  }
  const w = maxRel(plain.stateDict(), dist.stateDict());
  r1.dispose();
  r2.dispose();
  console.log(`DDP (SyncBatchNorm) against plain steps: worst loss difference ${worstLoss.toExponential(2)}, weights ${w.toExponential(2)}; ` +
    `${graphed} of 6 steps were CUDA-graph replays with the all-reduces inside`);
  report({ part: 'world-of-one', engine: pg.engine, version: pg.engineVersion, lossDiff: worstLoss, weightDiff: w, graphedSteps: graphed });

  // (b) Overlap: eager steps of vgg16 (bf16 on CUDA), CUDA events around each bucket's all-reduce.
  const big = new lib.VGGNet(lib.cfgs.D, { numClasses: 10, device, seed: 1, dropout: 0 });
  const bigDdp = new lib.DistributedDataParallel(big, { processGroup: pg });
  const runner = new lib.TrainStepRunner(big, lib.sgd({ lr: 0.01, momentum: 0.9 }), { distributed: bigDdp, cudaGraph: false });
  const n = device === 'cuda' ? 32 : 2, size = device === 'cuda' ? 224 : 64;
  const x = lib.Tensor.from(rng.fillNormal(new Float32Array(n * 3 * size * size), 0, 1), [n, 3, size, size], { device });
  const y = lib.Tensor.from(Int32Array.from({ length: n }, () => rng.int(10)), [n], { device });
  for (let i = 0; i < 2; i++) runner.run(x, y);
  const s0 = pg.stats();
  const t0 = performance.now();
  const steps = device === 'cuda' ? 10 : 2;
  for (let i = 0; i < steps; i++) runner.run(x, y);
  const stepMs = (performance.now() - t0) / steps;
  const s1 = pg.stats();
  const k = s1.timedSteps - s0.timedSteps || 1;
  const comm = (s1.commMs - s0.commMs) / k, exposed = (s1.exposedMs - s0.exposedMs) / k, bwd = (s1.backwardMs - s0.backwardMs) / k;
  const mb = bigDdp.buckets.reduce((a, b) => a + b.bytes, 0) / 1e6;
  console.log(`overlap, vgg16 ${size}x${size} b${n} ${big.precision}: ${bigDdp.buckets.length} buckets (${mb.toFixed(0)} MB); per step ${stepMs.toFixed(1)} ms, ` +
    `all-reduces ${comm.toFixed(2)} ms, of which ${exposed.toFixed(2)} ms after backward ended (first bucket to end of backward: ${bwd.toFixed(1)} ms)`);
  report({ part: 'overlap', buckets: bigDdp.buckets.length, MB: mb, stepMs, commMs: comm, exposedMs: exposed, backwardMs: bwd,
    overlapPct: comm > 0 ? 100 * (1 - Math.min(1, exposed / comm)) : null });
  runner.dispose();
  x.dispose();
  y.dispose();
  pg.destroy();
}

async function twoRanksOneGpu() {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-distcheck-'));
  lib.generateSampleStl10(path.join(data, 'stl10_binary'), { train: 64, test: 32, unlabeled: 0 });
  const cli = ['--dataset', 'stl10', '--data', data, '--model', 'vgg11', '--batch-norm', '--sync-bn', '--width', '0.25', '--hidden-features', '64',
    '--image-size', '32', '--epochs', '2', '--dropout', '0', '--lr', '0.05', '--scheduler', 'none', '--quiet', '--seed', '1', '--workers', '2',
    '--device', device, '--precision', 'fp32', '--no-cuda-graph', '--no-gpu-augment'];
  const trainJs = path.join(__dirname, '..', 'dist', 'train.js');
  const run = (args) => spawnSync(process.execPath, [trainJs, ...cli, ...args], { encoding: 'utf8', timeout: 120000 });
  // Checkpoints and logs in the temporary folder (not ./logs of the checkout).
  const dirs = (name) => ['--checkpoint-dir', path.join(data, name), '--log-dir', path.join(data, `${name}-logs`)];
  const one = run(['--batch-size', '16', ...dirs('one')]);
  const two = run(['--batch-size', '8', '--nproc-per-node', '2', ...(device === 'cuda' ? ['--devices', '0,0'] : []), '--dist-backend', 'gloo',
    '--master-port', String(await freePort()), ...dirs('two')]);
  const ok = one.status === 0 && two.status === 0;
  let w = null;
  if (ok) {
    const a = lib.readSafetensors(path.join(data, 'one', 'last.safetensors')).tensors;
    const b = lib.readSafetensors(path.join(data, 'two', 'last.safetensors')).tensors;
    w = maxRel(a, b);
  }
  console.log(`two ranks on one ${device === 'cuda' ? 'GPU' : 'CPU'} over gloo (2 x 8 against 1 x 16, SyncBatchNorm): ` +
    (ok ? `weights after 2 epochs differ by ${w.toExponential(2)} (relative)` : `failed:\n${one.stderr}\n${two.stderr}`));
  for (const l of (two.stdout + two.stderr).split('\n')) if (/launcher:|distributed:|error/.test(l)) console.log(`  ${l}`);
  report({ part: 'two-ranks-one-gpu', ok, weightDiff: w });
  fs.rmSync(data, { recursive: true, force: true });
}

(async () => {
  const b = lib.backends();
  console.log(`engines built: ${JSON.stringify(b.dist)}; cuda built ${b.cuda.built}, devices ${b.cuda.devices.length}`);
  report({ part: 'build', dist: b.dist, cuda: b.cuda.built });
  for (const [name, fn] of [['world of one', worldOfOne], ['two ranks', twoRanksOneGpu]]) {
    try {
      await fn();
    } catch (e) {
      console.log(`${name}: FAILED: ${e.stack || e.message}`);
      report({ part: name, error: String(e.message) });
    }
  }
})();
