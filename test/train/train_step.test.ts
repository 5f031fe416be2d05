// TrainStepRunner (lib/train/train_step.ts): the Trainer's step. On the CPU it is the eager step; on CUDA (VGGNET_DEVICE=
// cuda) the same tests run it as a captured CUDA graph after two eager steps, against the eager step as reference.
import { memoryStats } from '../../lib/backend';
import { Dropout, BatchNorm2d } from '../../lib/nn/layers';
import { sgd, SGD } from '../../lib/optim/sgd';
import { Tensor } from '../../lib/tensor';
import { TrainStepRunner, trainStep } from '../../lib/train/train_step';
import { VGGNet } from '../../lib/models/vgg';
import { describeCuda, device } from '../ref/device';
import { randomBatch, tinyVgg } from '../helpers/tiny';

const onCuda = device === 'cuda';
// CPU: the same eager code, bit for bit. CUDA: the graph replays the eager step's kernels with the same algorithms;
// only cuDNN's non-deterministic reductions (atomics) may differ, far below 1e-4 relative over a few steps.
const REL = onCuda ? 1e-4 : 0;

function close(a: number, b: number, what: string): void {
  if (Math.abs(a - b) > REL * Math.abs(b) + (onCuda ? 1e-6 : 0)) throw new Error(`${what}: ${a} vs ${b}`);
}

function counters(m: VGGNet, opt: SGD): number[] {
  const out: number[] = [];
  const walk = (x: { children(): [string, unknown][] }) => {
    if (x instanceof Dropout) out.push(x.calls);
    if (x instanceof BatchNorm2d) out.push(Number(x.numBatchesTracked.value));
    for (const [, c] of x.children()) walk(c as never);
  };
  walk(m);
  out.push(opt.stepCount);
  return out;
}

// The schedule both runs follow: full batches of 6, the learning rate lowered at step 5, a smaller batch at step 6
// (an epoch's last), then full batches again.
const SIZES = [6, 6, 6, 6, 6, 6, 3, 6, 6];
const lrAt = (s: number) => (s < 5 ? 0.05 : 0.01);

test('the runner\'s step is the eager step: losses, weights, dropout/BatchNorm/optimizer counters', () => {
  const make = () => ({ m: tinyVgg({ batchNorm: true, dropout: 0.5, seed: 11 }), opt: sgd({ lr: 0.05, momentum: 0.9, weightDecay: 1e-3 }) });
  const ref = make();
  const run = make();
  const runner = new TrainStepRunner(run.m, run.opt);
  try {
    const graphed: boolean[] = [];
    SIZES.forEach((n, s) => {
      const b = randomBatch(n, 100 + s);
      ref.opt.lr = run.opt.lr = lrAt(s);
      const want = trainStep(ref.m, ref.opt, b.x, b.y);
      const got = runner.run(b.x, b.y);
      graphed.push(got.graphed);
      close(got.loss, want, `step ${s} loss`);
      expect(got.logits.length).toBe(n * 5);
      b.x.dispose();
      b.y.dispose();
    });
    // eager for the first two full batches, then replays; the small batch always eager
    // (with the reason in the comparison, so a failed capture says why)
    expect({ graphed, disabled: runner.disabledReason }).toEqual({
      graphed: onCuda ? [false, false, true, true, true, true, false, true, true] : SIZES.map(() => false), disabled: null,
    });
    expect(counters(run.m, run.opt)).toEqual(counters(ref.m, ref.opt));
    const a = run.m.namedParameters();
    const r = ref.m.namedParameters();
    a.forEach(({ name, param }, i) => {
      const x = param.value.toFloat32();
      const y = r[i].param.value.toFloat32();
      for (let j = 0; j < x.length; j++) close(x[j], y[j], `${name}[${j}]`);
    });
  } finally {
    runner.dispose();
    for (const { m, opt } of [ref, run]) {
      m.dispose();
      opt.dispose();
    }
  }
});

test('a step whose loss is not finite changes no weight and no momentum buffer', () => {
  const m = tinyVgg({ batchNorm: false, seed: 4 });
  const opt = sgd({ lr: 0.05, momentum: 0.9 });
  const runner = new TrainStepRunner(m, opt);
  try {
    for (let s = 0; s < 3; s++) {
      const b = randomBatch(4, s);
      runner.run(b.x, b.y); // on CUDA: the third is the first replay
      b.x.dispose();
      b.y.dispose();
    }
    const snapshot = () => [
      ...m.namedParameters().map(({ param }) => param.value.toFloat32()),
      ...Object.values(opt.stateDict(m.namedParameters())).map((t) => t.toArray()), // a deferred update's entries too
    ];
    // A NaN in the last layer's bias makes every logit, and the loss, NaN (a NaN pixel might not survive ReLU).
    const last = m.namedParameters().filter(({ name }) => name.endsWith('.bias')).pop()!.param;
    const bias = last.value.toFloat32();
    bias[0] = NaN;
    const nanBias = Tensor.from(bias, last.shape, { device });
    last.value.copy_(nanBias);
    const before = snapshot();
    const b = randomBatch(4, 9);
    const r = runner.run(b.x, b.y);
    expect(Number.isNaN(r.loss)).toBe(true);
    expect(r.graphed).toBe(onCuda);
    expect(snapshot()).toEqual(before); // toEqual: NaN equals NaN
    for (const t of [nanBias, b.x, b.y]) t.dispose();
  } finally {
    runner.dispose();
    m.dispose();
    opt.dispose();
  }
});

test('warmup must be a positive integer', () => {
  const m = tinyVgg();
  const opt = sgd({ lr: 0.1 });
  expect(() => new TrainStepRunner(m, opt, { warmup: 0 })).toThrow(/warmup must be an integer >= 1, got 0/);
  m.dispose();
});

describeCuda('CUDA graph replays', () => {
  test('300 replays keep device memory flat, and dispose() gives the graph\'s memory back', () => {
    const m = tinyVgg({ batchNorm: true, dropout: 0.5, seed: 2 });
    const opt = sgd({ lr: 0.01, momentum: 0.9 });
    const runner = new TrainStepRunner(m, opt);
    const b = randomBatch(8, 1);
    let eager = 0;
    let after10 = 0;
    for (let s = 0; s < 300; s++) {
      expect(runner.run(b.x, b.y).graphed).toBe(s >= 2);
      if (s === 1) eager = memoryStats('cuda').inUse; // gradients, momentum, workspaces: what eager steps keep
      if (s === 9) after10 = memoryStats('cuda').inUse;
    }
    // in-use bytes are exact block sizes: a leak of one block per replay would add 290
    expect(memoryStats('cuda').inUse).toBe(after10);
    expect(after10).toBeGreaterThan(eager); // the graph holds its activations...
    runner.dispose();
    trainStep(m, opt, b.x, b.y); // eager again: uploads its own SGD table (the old one was the graph's)
    expect(memoryStats('cuda').inUse).toBe(eager); // ...and gives them all back
    for (const t of [b.x, b.y]) t.dispose();
    m.dispose();
    opt.dispose();
  });
});
