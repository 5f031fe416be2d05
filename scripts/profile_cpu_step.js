#!/usr/bin/env node
// Profiles CPU training steps op by op: `VGGNET_PROFILE=1 node scripts/profile_cpu_step.js vgg16:8:64 [steps]`.
// Prints the median step time (without the profiler's synchronisation when VGGNET_PROFILE is unset) and, with
// VGGNET_PROFILE=1, the per-op wall time of the timed steps (VGGNET_PROFILE=layers: per op and input shape, i.e.
// layer by layer) and the oneDNN kernels each op ran (ops.cpuKernelsUsed). VGGNET_PROFILE_FORWARD=1 times the
// inference forward pass (eval, noGrad, inside withFrozenWeights; VGGNET_PROFILE_FROZEN=0: outside) instead of the
// training step. Uses dist/ (run `npx tsc -p .` first), or
// the build in $VGGNET_DIST (another checkout's dist/, to time it against this one with ab_cpu_step.js).
'use strict';
const path = require('path');
const dist = process.env.VGGNET_DIST || path.resolve(__dirname, '..', 'dist');
const { setNumThreads } = require(path.join(dist, 'backend'));
const { cfgs, VGGNet } = require(path.join(dist, 'models', 'vgg'));
let trainStep;
try {
  ({ trainStep } = require(path.join(dist, 'train', 'train_step')));
} catch {
  ({ trainStep } = require(path.join(dist, 'train', 'step'))); // builds before lib/train/train_step.ts
}
const { sgd } = require(path.join(dist, 'optim', 'sgd'));
const { Tensor } = require(path.join(dist, 'tensor'));
const { Rng } = require(path.join(dist, 'random'));
const prof = require(path.join(dist, 'profile'));
const ops = require(path.join(dist, 'ops'));
const { noGrad } = require(path.join(dist, 'nn', 'module'));

const [model, batch, size] = (process.argv[2] || 'vgg16:8:64').split(':');
const steps = Number(process.argv[3] || 5);
const precision = process.env.VGGNET_PRECISION || 'fp32';
const cfg = { vgg11: cfgs.A, vgg13: cfgs.B, vgg16: cfgs.D, vgg19: cfgs.E }[model];
setNumThreads(Number(process.env.VGGNET_BENCH_THREADS || 2));
const B = Number(batch), S = Number(size);
const m = new VGGNet(cfg, { device: 'cpu', precision, seed: 1 });
const rng = new Rng(1);
const x = Tensor.from(rng.fillNormal(new Float32Array(B * 3 * S * S), 0, 1), [B, 3, S, S]);
const y = Tensor.from(Int32Array.from({ length: B }, () => rng.int(1000)), [B]);
// lr 0.001 as in the bench (lib/bench/cpu.ts): at 0.01 the one repeated batch drove vgg19 at 96² to a NaN loss by the
// seventh step, after which steps skip backward and SGD, and the timing would be a forward's. Every loss is checked.
const opt = sgd({ lr: 0.001, momentum: 0.9, weightDecay: 5e-4 });
const forward = process.env.VGGNET_PROFILE_FORWARD === '1';
if (forward) m.eval();
const trainChecked = () => {
  const loss = trainStep(m, opt, x, y);
  if (!Number.isFinite(loss)) throw new Error(`profile_cpu_step: the training loss became ${loss}; steps no longer run backward`);
};
const run = forward ? () => noGrad(() => m.forward(x).dispose()) : trainChecked;
const times = [];
const cpu = []; // the process's CPU time per step (all threads): steadier than wall time on a shared machine
// Forward passes run as evaluation and predict run them, inside withFrozenWeights (when the build has it;
// VGGNET_PROFILE_FROZEN=0: outside it, to compare).
const frozen = forward && m.withFrozenWeights && process.env.VGGNET_PROFILE_FROZEN !== '0';
const scope = frozen ? (f) => m.withFrozenWeights(f) : (f) => f();
scope(() => {
  for (let i = 0; i < steps + 2; i++) {
    if (i === 2) {
      prof.profileReport(true);
      if (ops.cpuKernelsUsed) ops.cpuKernelsUsed();
    }
    const t = performance.now();
    const c = process.cpuUsage();
    run();
    if (i >= 2) {
      times.push(performance.now() - t);
      const d = process.cpuUsage(c);
      cpu.push((d.user + d.system) / 1000);
    }
  }
});
const medianOf = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const med = medianOf(times);
console.log(`${model} b${B} ${S}² ${precision}: median ${forward ? 'forward' : 'train step'} ${med.toFixed(1)} ms (${((B * 1000) / med).toFixed(2)} img/s), ${forward ? 'passes' : 'steps'} ${times.map((t) => t.toFixed(0)).join(' ')}; cpu ${medianOf(cpu).toFixed(1)} ms`);
if (prof.profilerInstalled()) {
  console.log(prof.profileReport());
  if (ops.cpuKernelsUsed) {
    console.log(`oneDNN kernels per ${forward ? 'pass' : 'step'} (ops.cpuKernelsUsed, ms in the primitive alone):`);
    for (const k of ops.cpuKernelsUsed()) {
      console.log(`  ${k.op.padEnd(26)} ${k.impl.padEnd(34)} ${(k.calls / steps).toFixed(1).padStart(6)} calls ${(k.ms / steps).toFixed(1).padStart(9)} ms`);
    }
  }
}
