// VGGNet.withFrozenWeights: below 7×7 feature maps the average pool only repeats values, so the pool and the first
// classifier layer fold into one smaller matrix. The fold against float64, and forwards with and without it.
import { Tensor } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { foldAdaptivePool, VGGNet } from '../../lib/models/vgg';
import { noGrad } from '../../lib/nn/module';
import { runStep } from '../../lib/train/train_step';
import { sgd } from '../../lib/optim/sgd';
import { Linear } from '../../lib/nn/layers';
import { Rng } from '../../lib/random';
import { tinyVgg, randomBatch, TINY_CFG } from '../helpers/tiny';
import * as R from '../ref/naive';
import { maxRelErr } from '../helpers/tensors';
import { withEnv } from '../helpers/env';

const device = (process.env.VGGNET_DEVICE as 'cpu' | 'cuda' | undefined) ?? 'cpu';

// P[k][m] in float64: the reference pool (test/ref/naive.ts) of the one-hot map m, at output cell k of (oh, ow).
function poolMatrix(h: number, w: number, oh: number, ow: number): number[][] {
  const P = Array.from({ length: oh * ow }, () => new Array<number>(h * w).fill(0));
  for (let m = 0; m < h * w; m++) {
    const onehot = new Float64Array(h * w);
    onehot[m] = 1;
    const { y } = R.adaptiveAvgForward(onehot, [1, 1, h, w], oh, ow);
    for (let k = 0; k < oh * ow; k++) P[k][m] = y[k];
  }
  return P;
}

describe('foldAdaptivePool', () => {
  // Each folded entry is a sum of at most 49 float32 products: its rounding error is at most ~49·2^-24 ≈ 2.9e-6 of
  // the sum of the terms' magnitudes; the bound checked is 4e-6 of that sum.
  // foldAdaptivePool (ops.adaptivePoolFold on the CPU, the matmul elsewhere), and ops.adaptivePoolFold itself on
  // every map on the CPU.
  const folds: [string, typeof foldAdaptivePool][] = [['foldAdaptivePool', foldAdaptivePool]];
  if (device === 'cpu') folds.push(['ops.adaptivePoolFold', ops.adaptivePoolFold]);
  const cases = folds.flatMap(([name, fold]) => [[1, 1], [2, 2], [3, 3], [5, 5], [6, 6], [1, 3], [4, 2]].map(([h, w]) => [name, h, w, fold] as const));
  test.each(cases)('%s: map %i×%i into 7×7: W·P against float64', (_name, h, w, fold) => {
    const out = 5, c = 3, oh = 7, ow = 7;
    const wData = new Rng(h * 10 + w).fillNormal(new Float32Array(out * c * oh * ow), 0, 1);
    const W = Tensor.from(wData, [out, c * oh * ow], { device });
    const f = fold(W, c, h, w, oh, ow);
    expect(f.shape).toEqual([out, c * h * w]);
    const got = f.toArray() as Float32Array;
    const P = poolMatrix(h, w, oh, ow);
    let worst = 0;
    for (let o = 0; o < out; o++)
      for (let ch = 0; ch < c; ch++)
        for (let m = 0; m < h * w; m++) {
          let sum = 0, mag = 0;
          for (let k = 0; k < oh * ow; k++) {
            const t = wData[o * c * oh * ow + ch * oh * ow + k] * P[k][m];
            sum += t;
            mag += Math.abs(t);
          }
          const err = Math.abs(got[o * c * h * w + ch * h * w + m] - sum);
          worst = Math.max(worst, err / mag);
          expect(err).toBeLessThanOrEqual(4e-6 * mag);
        }
    expect(worst).toBeLessThan(4e-6);
    for (const t of [W, f]) t.dispose();
  });

  // Enough planes (out·c ≥ 2^15) for the CPU loop to split them between threads, and a count of outputs per thread
  // that is not a multiple of the sixteen it sums at a time.
  if (device === 'cpu')
    test.each([[1, 1], [2, 2], [3, 3]])('ops.adaptivePoolFold over 33 033 planes, map %i×%i: against float64', (h, w) => {
      const out = 77, c = 429, oh = 7, ow = 7, hw = h * w;
      const wData = new Rng(7 + hw).fillNormal(new Float32Array(out * c * oh * ow), 0, 1);
      const W = Tensor.from(wData, [out, c * oh * ow]);
      const f = ops.adaptivePoolFold(W, c, h, w, oh, ow);
      const got = f.toArray() as Float32Array;
      const P = poolMatrix(h, w, oh, ow);
      let worst = 0;
      for (let plane = 0; plane < out * c; plane++)
        for (let m = 0; m < hw; m++) {
          let sum = 0, mag = 0;
          for (let k = 0; k < oh * ow; k++) {
            const t = wData[plane * oh * ow + k] * P[k][m];
            sum += t;
            mag += Math.abs(t);
          }
          worst = Math.max(worst, Math.abs(got[plane * hw + m] - sum) / mag);
        }
      expect(worst).toBeLessThan(4e-6);
      for (const t of [W, f]) t.dispose();
    });

  // The CPU keeps the fold on its weight while both are unchanged, and an SGD step rewrites it from the updated
  // weight in the same pass (native/cpu/sgd.cc) unless something still holds it. Either way the fold handed out next
  // must equal a fresh fold of the new weight, bit for bit (the same loop on the same values).
  if (device === 'cpu')
    test.each([[1, 1, false], [2, 2, false], [2, 2, true], [3, 3, false]])('the kept fold after SGD steps, map %i×%i (fold still held: %s): equals a fresh fold of the new weight', (h, w, hold) => {
      const out = 77, c = 429, oh = 7, ow = 7, n = out * c * oh * ow;
      const rng = new Rng(11 + h);
      const W = Tensor.from(rng.fillNormal(new Float32Array(n), 0, 1), [out, c * oh * ow]);
      const G = Tensor.from(rng.fillNormal(new Float32Array(n), 0, 1), [out, c * oh * ow]);
      const buf = Tensor.zeros([out, c * oh * ow]);
      const p = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 5e-4, nesterov: false };
      let before = ops.adaptivePoolFold(W, c, h, w, oh, ow);
      const first = Float32Array.from(before.toArray() as Float32Array);
      expect(Array.from(ops.adaptivePoolFold(W, c, h, w, oh, ow).toArray() as Float32Array)).toEqual(Array.from(first)); // unchanged weight
      for (let step = 0; step < 3; step++) {
        if (!hold) before.dispose();
        ops.sgdStep([W], [G], [buf], p, step === 0);
        const kept = ops.adaptivePoolFold(W, c, h, w, oh, ow);
        const copy = W.clone();
        const fresh = ops.adaptivePoolFold(copy, c, h, w, oh, ow);
        const a = kept.toArray() as Float32Array, b = fresh.toArray() as Float32Array;
        let differ = 0;
        for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differ++;
        expect(differ).toBe(0);
        expect(a[0]).not.toBe(first[0]); // the weight moved, and so did the fold
        for (const t of [copy, fresh]) t.dispose();
        if (hold) kept.dispose();
        else before = kept;
      }
      for (const t of [W, G, buf, before]) t.dispose();
    });

  test('refuses a weight whose width is not channels·7·7', () => {
    const W = Tensor.zeros([2, 10], { device });
    expect(() => foldAdaptivePool(W, 3, 1, 1, 7, 7)).toThrow(/10 inputs, expected 3·7·7/);
    expect(() => foldAdaptivePool(W, 3, 2, 2, 7, 7)).toThrow(/10 inputs, expected 3·7·7/);
    if (device === 'cpu') {
      expect(() => ops.adaptivePoolFold(W, 3, 2, 2, 7, 7)).toThrow(/10 inputs, expected 3·7·7/);
      expect(() => ops.adaptivePoolFold(W, 2, 0, 1, 1, 5)).toThrow(/adaptivePoolFold: height must be in \[1, 2147483647\], got 0/);
      expect(() => ops.adaptivePoolFold(Tensor.zeros([2, 3, 4]), 1, 1, 1, 1, 3)).toThrow(/weight/);
    }
    W.dispose();
  });
});

const withTrainFold = <T>(value: string, fn: () => T): T => withEnv('VGGNET_TRAIN_FOLD', value, fn);

describe('VGGNet.withFrozenWeights', () => {
  afterEach(() => jest.restoreAllMocks());

  // Spies on the adaptive pool, noting each call's input channels at the call: the fold pools one-hot maps of one
  // channel (foldAdaptivePool), a forward pools the features (8 channels in the tiny model).
  // ops.adaptivePoolFold (the CPU's fold) counts as a fold too (channel 0 here).
  function spyPool() {
    const pool = ops.adaptiveAvgpool2dForward;
    const channels: number[] = [];
    jest.spyOn(ops, 'adaptiveAvgpool2dForward').mockImplementation((x, ...rest) => {
      channels.push(x.shape[1]);
      return pool(x, ...rest);
    });
    const fold = ops.adaptivePoolFold;
    jest.spyOn(ops, 'adaptivePoolFold').mockImplementation((...args) => {
      channels.push(0);
      return fold(...args);
    });
    return {
      onFeatures: () => channels.filter((c) => c > 1).length,
      folds: () => channels.filter((c) => c <= 1).length,
      clear: () => void channels.splice(0),
    };
  }

  const logits = (m: VGGNet, x: Tensor) => {
    const l = noGrad(() => m.forward(x));
    const a = l.toArray() as Float32Array;
    l.dispose();
    return a;
  };
  const maxAbs = (a: Float32Array) => a.reduce((s, v) => Math.max(s, Math.abs(v)), 0);

  // 32² → 1×1 features, 64² → 2×2, 96² → 3×3, 32×96 → 1×3: folded; 224² → 7×7: the pool is the identity, no fold.
  test.each([[32, 32, true], [64, 64, true], [96, 96, true], [32, 96, true], [224, 224, false]])(
    '%i×%i input: logits equal the unfolded forward (fold used: %s)', (h, w, folds) => {
      const m = tinyVgg({ seed: 7, dropout: 0.5 });
      m.eval();
      const rng = new Rng(h + w);
      const x = Tensor.from(rng.fillNormal(new Float32Array(3 * 3 * h * w), 0, 1), [3, 3, h, w], { device });
      const plain = logits(m, x);
      const pool = spyPool();
      const frozen = m.withFrozenWeights(() => [logits(m, x), logits(m, x)]);
      expect(pool.onFeatures()).toBe(folds ? 0 : 2);
      expect(pool.folds()).toBe(folds ? 1 : 0); // once for both passes
      // float32 rounding only (another summation order in the first layer): measured ≤ 2e-7 of the largest logit
      for (const f of frozen) for (let i = 0; i < plain.length; i++) expect(Math.abs(f[i] - plain[i])).toBeLessThan(1e-5 * maxAbs(plain));
      // outside the scope the forward is the plain one again
      pool.clear();
      logits(m, x);
      expect([pool.onFeatures(), pool.folds()]).toEqual([1, 0]);
      x.dispose();
      m.dispose();
    });

  test('with gradients enabled the scope folds nothing (training folds on its own: see below)', () => {
    const m = tinyVgg({ seed: 3 });
    const { x } = randomBatch(2, 4);
    const pool = spyPool();
    withTrainFold('0', () => m.withFrozenWeights(() => m.forward(x).dispose()));
    expect([pool.onFeatures(), pool.folds()]).toEqual([1, 0]);
    m.releaseSaved();
    x.dispose();
    m.dispose();
  });

  test('the fold is worked out once per scope and map size, and nested scopes share it', () => {
    const m = tinyVgg({ seed: 3 });
    m.eval();
    const { x } = randomBatch(2, 4);
    const pool = spyPool();
    const linear = ops.linearForward;
    const rows: number[] = []; // each linearForward's input rows, noted at the call
    jest.spyOn(ops, 'linearForward').mockImplementation((a, ...rest) => {
      rows.push(a.shape[0]);
      return linear(a, ...rest);
    });
    m.withFrozenWeights(() => {
      for (let i = 0; i < 3; i++) logits(m, x);
      m.withFrozenWeights(() => logits(m, x));
    });
    // one fold, then 4 passes × 3 layers on the batch's 2 rows
    expect(pool.folds()).toBe(1);
    expect(rows.filter((r) => r === 2)).toHaveLength(4 * 3);
    x.dispose();
    m.dispose();
  });

  test('loadStateDict inside the scope drops the fold: the new weights are used', () => {
    const a = tinyVgg({ seed: 1 }), b = tinyVgg({ seed: 2 });
    a.eval();
    b.eval();
    const { x } = randomBatch(2, 9);
    const want = logits(b, x);
    const got = a.withFrozenWeights(() => {
      const before = logits(a, x); // folds a's own weights
      a.loadStateDict(b.stateDict());
      return { before, after: logits(a, x) };
    });
    expect(Math.abs(got.before[0] - want[0])).toBeGreaterThan(1e-4); // different networks
    for (let i = 0; i < want.length; i++) expect(Math.abs(got.after[i] - want[i])).toBeLessThan(1e-5 * maxAbs(want));
    for (const t of [x, a, b]) t.dispose();
  });

  test('an async scope keeps the fold until its promise settles, and a throwing one ends the scope', async () => {
    const m = tinyVgg({ seed: 3 });
    m.eval();
    const { x } = randomBatch(2, 4);
    const pool = spyPool();
    await m.withFrozenWeights(async () => {
      await new Promise((r) => setTimeout(r, 1));
      logits(m, x);
    });
    expect([pool.onFeatures(), pool.folds()]).toEqual([0, 1]);
    await expect(m.withFrozenWeights(async () => {
      await Promise.resolve();
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect(() => m.withFrozenWeights(() => {
      throw new Error('sync boom');
    })).toThrow('sync boom');
    pool.clear();
    logits(m, x);
    expect([pool.onFeatures(), pool.folds()]).toEqual([1, 0]);
    expect(() => m.withFrozenWeights(null as unknown as () => void)).toThrow(TypeError);
    x.dispose();
    m.dispose();
  });

  test('bf16 activations: the folded forward stays within bf16 rounding of the unfolded one', () => {
    const m = new VGGNet(TINY_CFG, { numClasses: 5, seed: 4, hiddenFeatures: 12, precision: 'bf16', device });
    m.eval();
    const { x } = randomBatch(3, 6, 5, 64);
    const plain = logits(m, x);
    const frozen = m.withFrozenWeights(() => logits(m, x));
    // bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 2e-3 per value); 3 rounded layers: 2 % of the largest logit
    for (let i = 0; i < plain.length; i++) expect(Math.abs(frozen[i] - plain[i])).toBeLessThan(2e-2 * maxAbs(plain));
    x.dispose();
    m.dispose();
  });
});

// Training on the CPU folds the pool into the first classifier layer on feature maps under 7×7 (inputs under 224²;
// up to 3×3 without SGD's deferred update of that layer): forward and the features' gradient use the folded weight (the layer's own gradient is pooled either way:
// test/model/pooled_grad.test.ts checks that against the plain layers). One training step folded and unfolded
// (VGGNET_TRAIN_FOLD=0) from the same weights: the loss, every parameter's gradient and the weights after SGD.
describe('training with the pool folded into the first classifier layer (CPU)', () => {
  afterEach(() => jest.restoreAllMocks());

  function step(precision: 'fp32' | 'bf16', size: number, fold: string) {
    const m = new VGGNet(TINY_CFG, { numClasses: 5, seed: 4, hiddenFeatures: 12, dropout: 0.5, precision, device: 'cpu' });
    const { x, y } = randomBatch(3, 6, 5, size);
    const widths: number[] = []; // the weight width of every linearForward on the batch, at the call
    const linear = ops.linearForward;
    jest.spyOn(ops, 'linearForward').mockImplementation((a, w, ...rest) => {
      if (a.shape[0] === 3) widths.push((w instanceof Tensor ? w : w.tensor).shape[1]);
      return linear(a, w, ...rest);
    });
    const params = m.parameters();
    const out = withTrainFold(fold, () => runStep(m, sgd({ lr: 0.1, momentum: 0.9, weightDecay: 1e-3 }), params.map((p) => p.param), x, y));
    jest.restoreAllMocks();
    const r = {
      loss: out.loss.item(),
      grads: params.map((p) => p.grad.toArray() as Float32Array),
      weights: params.map((p) => p.value.toArray() as Float32Array),
      names: params.map((p) => p.name),
      widths,
    };
    for (const t of [out.logits, out.loss, x, y]) t.dispose();
    m.dispose();
    return r;
  }

  // float32: another summation order in the first layer only; measured ≤ 1e-6 of each tensor's largest entry.
  // bf16: the folded weight is rounded to bf16 after the sum, not before (2^-9 relative per value, through the
  // network): measured ≤ 1e-2.
  test.each([['fp32', 32, 1e-5], ['fp32', 64, 1e-5], ['fp32', 96, 1e-5], ['fp32', 128, 1e-5], ['fp32', 160, 1e-5], ['fp32', 192, 1e-5],
    ['bf16', 32, 3e-2], ['bf16', 64, 3e-2], ['bf16', 96, 3e-2], ['bf16', 160, 3e-2]] as const)(
    '%s %i²: loss, gradients and updated weights match the unfolded step', (precision, size, tol) => {
      const plain = step(precision, size, '0');
      const folded = step(precision, size, '1');
      const hw = (size / 32) ** 2;
      expect(plain.widths).toEqual([8 * 49, 12, 12]);
      expect(folded.widths).toEqual([8 * hw, 12, 12]);
      expect(Math.abs(folded.loss - plain.loss)).toBeLessThan(tol * Math.abs(plain.loss));
      for (let i = 0; i < plain.grads.length; i++) {
        const e = maxRelErr(plain.grads[i], folded.grads[i]);
        if (!(e <= tol)) throw new Error(`${plain.names[i]}: gradient differs by ${e} of its largest entry`);
        expect(maxRelErr(plain.weights[i], folded.weights[i])).toBeLessThanOrEqual(tol);
      }
    });

  test('without the deferred SGD (VGGNET_DEFERRED_SGD=0) 4×4 maps and larger train unfolded; 7×7 maps never fold', () => {
    withEnv('VGGNET_DEFERRED_SGD', '0', () => {
      expect(step('fp32', 96, '1').widths).toEqual([8 * 9, 12, 12]);
      expect(step('fp32', 128, '1').widths).toEqual([8 * 49, 12, 12]);
    });
    expect(step('fp32', 128, '1').widths).toEqual([8 * 16, 12, 12]);
    expect(step('fp32', 224, '1').widths).toEqual([8 * 49, 12, 12]);
  });
});
