// The whole network: gradients against finite differences, SGD training lowers the loss, BN running stats.
import { Tensor } from '../../lib/tensor';
import { crossEntropy } from '../../lib/nn/loss';
import { sgd } from '../../lib/optim/sgd';
import * as ops from '../../lib/ops';
import { tinyVgg, randomBatch } from '../helpers/tiny';
import { Rng } from '../../lib/random';
import { noGrad } from '../../lib/nn/module';
import { MaxPool2d, ReLU, Sequential } from '../../lib/nn/layers';
import { trainStep } from '../../lib/train/train_step';

describe('whole-network gradients (float32 forward, central differences)', () => {
  // PyTorch's default init (U(±1/√fan_in)) keeps the hidden pre-activations O(0.1–1), and eps = 5e-4 rarely moves
  // one across a ReLU or max-pool switch (with eps 1e-2 batch norm's curvature and such switches gave 20–50 % errors
  // that shrink to < 1 % as eps → 0, measured). The float32 loss (~1.6) is rounded at ~1e-7, i.e. ~2e-4 in the
  // difference quotient, inside the 2e-3 absolute tolerance.
  test.each([
    [false, 'train'], [true, 'train'], [true, 'eval'],
  ])('batchNorm=%s, %s mode: analytic gradients match finite differences', (batchNorm, mode) => {
    const m = tinyVgg({ batchNorm, seed: 5, initWeights: false });
    if (mode === 'eval') {
      // give the running statistics values other than 0/1, then differentiate the eval-mode function
      const { x: warm } = randomBatch(4, 12);
      m.forward(warm).dispose();
      m.releaseSaved();
      m.eval();
    }
    const { x, y } = randomBatch(3, 11);
    const lossAt = () => {
      const logits = m.forward(x);
      const r = crossEntropy(logits, y);
      logits.dispose();
      r.grad.dispose();
      m.releaseSaved();
      return r.loss;
    };
    m.zeroGrad();
    const logits = m.forward(x);
    const { grad } = crossEntropy(logits, y);
    m.backward(grad);
    const rng = new Rng(3);
    let checked = 0;
    for (const p of m.parameters()) {
      const g = p.grad.toFloat32();
      const w = p.value.toFloat32();
      for (let k = 0; k < 3; k++) {
        const i = rng.int(w.length);
        const eps = 5e-4;
        const set = (v: number) => {
          const c = w.slice();
          c[i] = v;
          const t = Tensor.from(c, p.value.shape);
          p.param.set(t);
          t.dispose();
        };
        set(w[i] + eps);
        const lp = lossAt();
        set(w[i] - eps);
        const lm = lossAt();
        set(w[i]);
        const fd = (lp - lm) / (2 * eps);
        expect({ name: p.name, i, diff: Math.abs(fd - g[i]) <= 2e-3 + 3e-2 * Math.abs(g[i]) }).toEqual({ name: p.name, i, diff: true });
        checked++;
      }
    }
    expect(checked).toBe(m.parameters().length * 3);
    m.dispose();
  });
});

test('a max pool after a ReLU applies its mask on the pooled map: gradients equal, bit for bit, the ReLU masking the full map', () => {
  // The fused form (MaxPool2d.masksRelu) against the plain chain, forced by clearing the flags after the forward.
  const grads = (fused: boolean) => {
    const m = tinyVgg({ seed: 4, initWeights: false });
    const { x, y } = randomBatch(3, 9);
    m.zeroGrad();
    const logits = m.forward(x);
    const pools = m.features.layers.filter((l): l is MaxPool2d => l instanceof MaxPool2d);
    expect(pools.every((p) => p.masksRelu)).toBe(true);
    if (!fused) {
      for (const p of pools) p.masksRelu = false;
      for (const l of m.features.layers) if (l instanceof ReLU) (l as unknown as { maskedElsewhere: boolean }).maskedElsewhere = false;
    }
    const r = crossEntropy(logits, y);
    m.backward(r.grad);
    const g = m.parameters().map((p) => Array.from(p.grad.toFloat32()));
    logits.dispose();
    r.grad.dispose();
    m.dispose();
    return g;
  };
  const fused = grads(true);
  expect(fused.flat().some((v) => v !== 0)).toBe(true);
  expect(fused).toEqual(grads(false));
});

test('a max pool run on its own after a Sequential forward set masksRelu does not apply a ReLU mask', () => {
  // All-negative input: a ReLU mask would zero the pooled gradient; the plain pool routes it to the arg-max (-1).
  const pool = new MaxPool2d(2);
  const seq = new Sequential([new ReLU(), pool]);
  const x = Tensor.from(Float32Array.from([-1, -2, -3, -4]), [1, 1, 2, 2]);
  const one = Tensor.from(Float32Array.from([1]), [1, 1, 1, 1]);
  const y = seq.forward(x);
  expect(pool.masksRelu).toBe(true);
  seq.backward(one)?.dispose();
  const y2 = pool.forward(x);
  expect(pool.masksRelu).toBe(false);
  const one2 = Tensor.from(Float32Array.from([1]), [1, 1, 1, 1]); // \`one\` is tagged as the Sequential's gradient
  const dx = pool.backward(one2);
  expect(Array.from(dx.toArray() as Float32Array)).toEqual([1, 0, 0, 0]);
  for (const t of [x, one, one2, y, y2, dx]) t.dispose();
  seq.dispose();
});

test('under noGrad nothing is kept: backward is an error, and outputs equal those with gradients', () => {
  const m = tinyVgg({ batchNorm: true });
  m.eval();
  const { x } = randomBatch(2, 1);
  const a = noGrad(() => m.forward(x));
  expect(() => m.backward(Tensor.zeros([2, 5]))).toThrow(/no forward \(with gradients enabled\)/);
  // Bit for bit with the same layers; a CPU forward with gradients on a 1×1 map folds the pool into the first
  // classifier layer (test/model/frozen_fold.test.ts), which changes only the summation order there.
  const prev = process.env.VGGNET_TRAIN_FOLD;
  process.env.VGGNET_TRAIN_FOLD = '0';
  try {
    const b = m.forward(x);
    expect(b.toArray()).toEqual(a.toArray());
    m.releaseSaved();
  } finally {
    if (prev === undefined) delete process.env.VGGNET_TRAIN_FOLD;
    else process.env.VGGNET_TRAIN_FOLD = prev;
  }
  const c = m.forward(x).toArray() as Float32Array, want = a.toArray() as Float32Array;
  const big = want.reduce((s, v) => Math.max(s, Math.abs(v)), 0);
  for (let i = 0; i < want.length; i++) expect(Math.abs(c[i] - want[i])).toBeLessThan(1e-5 * big);
  m.dispose();
});

describe('training', () => {
  test('SGD with momentum and weight decay drives the loss of a fixed batch down', () => {
    const m = tinyVgg({ batchNorm: true, seed: 2, initWeights: false });
    const { x, y } = randomBatch(8, 4);
    const opt = sgd({ lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) losses.push(trainStep(m, opt, x, y));
    expect(losses[39]).toBeLessThan(0.7 * losses[0]);
    expect(losses[39]).toBeLessThan(losses[20]);
    m.dispose();
    opt.dispose();
  });

  test('gradients accumulate over two backward passes until zeroGrad', () => {
    const m = tinyVgg({ seed: 3 });
    const { x, y } = randomBatch(2, 5);
    const once = () => {
      const logits = m.forward(x);
      const r = crossEntropy(logits, y);
      m.backward(r.grad);
      logits.dispose();
      r.grad.dispose();
    };
    m.zeroGrad();
    once();
    const g1 = m.parameters().map((p) => p.grad.toFloat32());
    once();
    const g2 = m.parameters().map((p) => p.grad.toFloat32());
    g1.forEach((a, k) => a.forEach((v, i) => expect(Math.abs(g2[k][i] - 2 * v)).toBeLessThanOrEqual(1e-6 + 1e-5 * Math.abs(v))));
    m.zeroGrad();
    expect(m.parameters()[0].grad.toNumbers().every((v) => v === 0)).toBe(true);
    m.dispose();
  });

  test('BN running stats after 2 train steps follow PyTorch\'s update (momentum 0.1, unbiased variance)', () => {
    const m = tinyVgg({ batchNorm: true, seed: 4 });
    const { x, y } = randomBatch(4, 6);
    // The first BN sees conv0(x): compute its per-channel batch mean / unbiased var from the conv output.
    const conv = m.features.layers[0] as unknown as { weight: { value: Tensor }; bias: { value: Tensor } };
    const c0 = ops.conv2dForward(x, conv.weight.value, conv.bias.value, { strideH: 1, strideW: 1, padH: 1, padW: 1 });
    const a = c0.toFloat32();
    const [n, c, h, w] = c0.shape;
    let rm = new Array(c).fill(0);
    let rv = new Array(c).fill(1);
    for (let step = 0; step < 2; step++) {
      // the weights do not change (no optimizer step), so both steps see the same batch statistics
      const logits = m.forward(x);
      m.backward(crossEntropy(logits, y).grad);
      rm = rm.map((v, ch) => {
        let s = 0;
        for (let i = 0; i < n; i++) for (let j = 0; j < h * w; j++) s += a[(i * c + ch) * h * w + j];
        return 0.9 * v + 0.1 * (s / (n * h * w));
      });
    }
    for (let ch = 0; ch < c; ch++) {
      let s = 0;
      let q = 0;
      const cnt = n * h * w;
      for (let i = 0; i < n; i++) for (let j = 0; j < h * w; j++) s += a[(i * c + ch) * h * w + j];
      const mean = s / cnt;
      for (let i = 0; i < n; i++) for (let j = 0; j < h * w; j++) q += (a[(i * c + ch) * h * w + j] - mean) ** 2;
      rv[ch] = 0.9 * (0.9 * 1 + 0.1 * (q / (cnt - 1))) + 0.1 * (q / (cnt - 1));
    }
    const sd = m.stateDict();
    const gotM = (sd['features.1.running_mean'] as Tensor).toFloat32();
    const gotV = (sd['features.1.running_var'] as Tensor).toFloat32();
    for (let ch = 0; ch < c; ch++) {
      expect(Math.abs(gotM[ch] - rm[ch])).toBeLessThan(1e-5 + 1e-5 * Math.abs(rm[ch]));
      expect(Math.abs(gotV[ch] - rv[ch])).toBeLessThan(1e-5 + 1e-4 * Math.abs(rv[ch]));
    }
    expect(sd['features.1.num_batches_tracked']).toBe(2n);
    m.dispose();
  });
});
