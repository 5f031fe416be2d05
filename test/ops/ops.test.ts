// Every op forward and backward against the naive float64 references (test/ref/naive.ts) on tiny shapes, plus
// finite-difference checks, SGD by hand, BN running stats, dropout determinism and argument errors.
// Runs on VGGNET_DEVICE (cpu by default; cuda checks the CUDA backend against the same references).
import { Tensor, Layout } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import * as R from '../ref/naive';
import { device, tol, describeOnDevice } from '../ref/device';
import { uniformSource } from '../ref/random';
import { disposeKeptAfterEach, expectClose, f64, keep, numel } from '../helpers/tensors';
import { roundBf16 } from '../ref/bf16';

// ---- helpers
/** n float32-exact values uniform in [lo, hi). */
const uniform = uniformSource(12345);

function T(data: ArrayLike<number>, shape: number[], layout: Layout = 'nchw'): Tensor {
  const t = Tensor.from(Float32Array.from(data), shape, { device, layout });
  return keep(t);
}
disposeKeptAfterEach();
const arr = f64;
const list = (t: Tensor) => Array.from(t.toArray() as Float32Array);


const LAYOUTS: Layout[] = ['nchw', 'nhwc'];
type S4 = R.Shape4;

describeOnDevice(`ops on ${device}`, () => {
  // ---------------------------------------------------------------- conv2d
  describe('conv2d', () => {
    const cases: { name: string; xs: S4; ws: S4; p: R.ConvP }[] = [
      { name: '3x3 pad 1', xs: [2, 3, 5, 5], ws: [4, 3, 3, 3], p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
      { name: '1x1', xs: [2, 3, 4, 4], ws: [5, 3, 1, 1], p: { strideH: 1, strideW: 1, padH: 0, padW: 0 } },
      { name: '3x3 stride 2 pad 1', xs: [2, 3, 7, 6], ws: [4, 3, 3, 3], p: { strideH: 2, strideW: 2, padH: 1, padW: 1 } },
      { name: '5x5 pad 2', xs: [1, 2, 6, 5], ws: [3, 2, 5, 5], p: { strideH: 1, strideW: 1, padH: 2, padW: 2 } },
      { name: '1x1 stride 2 (floor drops a row)', xs: [1, 2, 6, 5], ws: [3, 2, 1, 1], p: { strideH: 2, strideW: 2, padH: 0, padW: 0 } },
      { name: '3x2 mixed stride/pad', xs: [2, 2, 7, 5], ws: [3, 2, 3, 2], p: { strideH: 2, strideW: 1, padH: 0, padW: 1 } },
      // channel counts that hit oneDNN's blocked kernels (multiples of 8/16) and their tails
      { name: '3x3 pad 1, 16->24 channels', xs: [2, 16, 6, 6], ws: [24, 16, 3, 3], p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
      { name: '3x3 pad 1, 19->13 channels', xs: [1, 19, 5, 7], ws: [13, 19, 3, 3], p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
      // output maps of at most 4x4 take the batch-wide im2col + GEMM backward-weights path (those above with 5x5
      // and larger maps take oneDNN's convolution); the 1x1 and stride-2 cases above land on it too
      { name: '3x3 pad 1 on a 2x2 map, 16->8 channels', xs: [3, 16, 2, 2], ws: [8, 16, 3, 3], p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
      { name: '3x3 pad 1 on a 4x4 map, 5->6 channels', xs: [2, 5, 4, 4], ws: [6, 5, 3, 3], p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
    ];
    for (const c of cases)
      for (const layout of LAYOUTS) {
        test(`${c.name} ${layout}: forward (bias, fused relu), backward data, backward weights (+accumulate)`, () => {
          const x = uniform(numel(c.xs)), w = uniform(numel(c.ws), -0.5, 0.5), b = uniform(c.ws[0]);
          const xt = T(x, c.xs, layout), wt = T(w, c.ws), bt = T(b, [c.ws[0]]);
          const ref = R.convForward(x, c.xs, w, c.ws, b, c.p);

          const y = keep(ops.conv2dForward(xt, wt, bt, c.p, false));
          expect(y.shape).toEqual(ref.shape);
          expect(y.layout).toBe(layout);
          expectClose(arr(y), ref.y, tol(1e-5), 'conv2d forward');

          const yr = keep(ops.conv2dForward(xt, wt, null, c.p, true));
          expectClose(arr(yr), R.convForward(x, c.xs, w, c.ws, null, c.p, true).y, tol(1e-5), 'conv2d forward relu');

          const dy = uniform(numel(ref.shape));
          const dyt = T(dy, ref.shape, layout);
          const dx = keep(ops.conv2dBackwardData(dyt, wt, c.xs, c.p));
          expect(dx.shape).toEqual(c.xs);
          expectClose(arr(dx), R.convBackwardData(dy, w, c.ws, c.xs, c.p), tol(1e-5), 'conv2d backward data');

          const g = R.convBackwardWeights(x, c.xs, dy, c.ws, c.p);
          const dw = keep(Tensor.zeros(c.ws, { device })), db = keep(Tensor.zeros([c.ws[0]], { device }));
          ops.fill(dw, 7);
          ops.fill(db, 7);
          ops.conv2dBackwardWeights(xt, dyt, c.p, dw, db, false);
          expectClose(arr(dw), g.dw, tol(1e-5), 'conv2d dw');
          expectClose(arr(db), g.db, tol(1e-5), 'conv2d db');
          ops.conv2dBackwardWeights(xt, dyt, c.p, dw, db, true);
          expectClose(arr(dw), g.dw.map((v) => 2 * v), tol(1e-5), 'conv2d dw accumulated');
          expectClose(arr(db), g.db.map((v) => 2 * v), tol(1e-5), 'conv2d db accumulated');
          const dw2 = keep(Tensor.zeros(c.ws, { device }));
          ops.conv2dBackwardWeights(xt, dyt, c.p, dw2, null, false);
          expectClose(arr(dw2), g.dw, tol(1e-5), 'conv2d dw without bias');
        });
      }

    test('finite differences: 3x3 stride 2 pad 1', () => {
      const xs: S4 = [2, 2, 5, 4], ws: S4 = [3, 2, 3, 3], p = { strideH: 2, strideW: 2, padH: 1, padW: 1 };
      const x = uniform(numel(xs)), w = uniform(numel(ws)), b = uniform(3);
      const ys = R.convForward(x, xs, w, ws, b, p).shape;
      const r = uniform(numel(ys)); // L = sum(r .* conv(x, w, b))
      const L = (xx: ArrayLike<number>, ww: ArrayLike<number>, bb: ArrayLike<number>) =>
        R.dot(r, R.convForward(xx as Float64Array, xs, ww as Float64Array, ws, bb as Float64Array, p).y);
      const xt = T(x, xs), wt = T(w, ws), rt = T(r, ys);
      const dx = arr(keep(ops.conv2dBackwardData(rt, wt, xs, p)));
      const dw = keep(Tensor.zeros(ws, { device })), db = keep(Tensor.zeros([3], { device }));
      ops.conv2dBackwardWeights(xt, rt, p, dw, db, false);
      expectClose(dx, R.numericGrad((v) => L(v, w, b), x), tol(1e-4), 'conv dx vs finite differences');
      expectClose(arr(dw), R.numericGrad((v) => L(x, v, b), w), tol(1e-4), 'conv dw vs finite differences');
      expectClose(arr(db), R.numericGrad((v) => L(x, w, v), b), tol(1e-4), 'conv db vs finite differences');
    });
  });

  // ---------------------------------------------------------------- relu
  test('relu forward and backward', () => {
    const x = uniform(2 * 3 * 4 * 5);
    x[0] = 0;
    const xt = T(x, [2, 3, 4, 5]);
    const y = keep(ops.reluForward(xt));
    expectClose(arr(y), R.reluForward(x), 0, 'relu forward');
    const dy = uniform(x.length);
    const dx = keep(ops.reluBackward(T(dy, [2, 3, 4, 5]), y));
    expectClose(arr(dx), R.reluBackward(dy, R.reluForward(x)), 0, 'relu backward');
  });

  // ---------------------------------------------------------------- max pool
  describe('maxpool2d', () => {
    const cases: { name: string; xs: S4; k: number; s: number; pad: number; ties?: boolean }[] = [
      { name: '2x2/2', xs: [2, 3, 4, 6], k: 2, s: 2, pad: 0 },
      { name: '2x2/2 odd sizes (floor mode)', xs: [1, 2, 5, 7], k: 2, s: 2, pad: 0 },
      { name: '2x2/2 ties (first max wins)', xs: [2, 2, 4, 4], k: 2, s: 2, pad: 0, ties: true },
      { name: '3x3/2 pad 1', xs: [1, 2, 5, 6], k: 3, s: 2, pad: 1 },
      { name: '2x2/2 16 channels', xs: [2, 16, 6, 4], k: 2, s: 2, pad: 0 },
      { name: '2x2/2 19 channels, odd sizes, ties', xs: [1, 19, 5, 5], k: 2, s: 2, pad: 0, ties: true },
    ];
    for (const c of cases)
      for (const layout of LAYOUTS) {
        test(`${c.name} ${layout}`, () => {
          const x = c.ties ? Float32Array.from(uniform(numel(c.xs), 0, 3), Math.floor) : uniform(numel(c.xs));
          const ref = R.maxpoolForward(x, c.xs, c.k, c.s, c.pad);
          const xt = T(x, c.xs, layout);
          const p = { kernel: c.k, stride: c.s, pad: c.pad };
          const { y, saved } = ops.maxpool2dForward(xt, p, true);
          keep(y);
          saved.forEach(keep);
          expect(y.shape).toEqual(ref.shape);
          expect(y.layout).toBe(layout);
          expectClose(arr(y), ref.y, 0, 'maxpool forward');
          const inf = ops.maxpool2dForward(xt, p, false);
          keep(inf.y);
          expectClose(arr(inf.y), ref.y, 0, 'maxpool forward (inference)');
          const dy = uniform(numel(ref.shape));
          const dx = keep(ops.maxpool2dBackward(T(dy, ref.shape, layout), xt, y, p, saved));
          expect(dx.shape).toEqual(c.xs);
          expectClose(arr(dx), R.maxpoolBackward(dy, ref.argmax, c.xs), 1e-6, 'maxpool backward');
        });
      }
  });

  // ---------------------------------------------------------------- adaptive avg pool
  describe('adaptiveAvgpool2d', () => {
    const cases: { xs: S4; oh: number; ow: number }[] = [
      { xs: [2, 3, 14, 14], oh: 7, ow: 7 },
      { xs: [2, 3, 7, 7], oh: 7, ow: 7 },
      { xs: [1, 2, 1, 1], oh: 7, ow: 7 }, // torchvision replicates a 1x1 map
      { xs: [1, 2, 3, 3], oh: 7, ow: 7 }, // overlapping windows
      { xs: [2, 2, 5, 9], oh: 3, ow: 4 },
    ];
    for (const c of cases)
      for (const layout of LAYOUTS) {
        test(`[${c.xs}] -> ${c.oh}x${c.ow} ${layout}`, () => {
          const x = uniform(numel(c.xs));
          const ref = R.adaptiveAvgForward(x, c.xs, c.oh, c.ow);
          const y = keep(ops.adaptiveAvgpool2dForward(T(x, c.xs, layout), c.oh, c.ow));
          expect(y.shape).toEqual(ref.shape);
          expect(y.layout).toBe('nchw');
          expectClose(arr(y), ref.y, tol(1e-6), 'adaptive avgpool forward');
          const dy = uniform(numel(ref.shape));
          const dx = keep(ops.adaptiveAvgpool2dBackward(T(dy, ref.shape), c.xs, layout));
          expect(dx.shape).toEqual(c.xs);
          expect(dx.layout).toBe(layout);
          expectClose(arr(dx), R.adaptiveAvgBackward(dy, c.xs, c.oh, c.ow), tol(1e-6), 'adaptive avgpool backward');
        });
      }
  });

  // ---------------------------------------------------------------- batch norm
  describe('batchnorm', () => {
    const xs: S4 = [4, 3, 3, 2];
    const C = xs[1];
    for (const layout of LAYOUTS) {
      test(`train forward, running stats, backward (+accumulate), eval forward ${layout}`, () => {
        const x = uniform(numel(xs), -2, 3), gamma = uniform(C, 0.5, 1.5), beta = uniform(C);
        const rm0 = uniform(C), rv0 = uniform(C, 0.5, 2);
        const rm = T(rm0, [C]), rv = T(rv0, [C]), g = T(gamma, [C]), b = T(beta, [C]);
        const xt = T(x, xs, layout);
        const ref = R.bnTrainForward(x, xs, gamma, beta, rm0, rv0, 0.1, 1e-5);
        const { y, saved } = ops.batchnormForward(xt, g, b, rm, rv, true, 0.1, 1e-5);
        keep(y);
        saved.forEach(keep);
        expect(y.layout).toBe(layout);
        expectClose(arr(y), ref.y, tol(1e-5), 'bn train forward');
        expectClose(arr(rm), ref.runningMean, tol(1e-6), 'bn running_mean');
        expectClose(arr(rv), ref.runningVar, tol(1e-6), 'bn running_var');

        const dy = uniform(numel(xs));
        const refB = R.bnBackward(dy, x, xs, gamma, 1e-5);
        const dg = keep(Tensor.zeros([C], { device })), dbt = keep(Tensor.zeros([C], { device }));
        ops.fill(dg, 3);
        ops.fill(dbt, 3);
        const dx = keep(ops.batchnormBackward(T(dy, xs, layout), xt, g, 1e-5, saved, dg, dbt, false));
        expect(dx.layout).toBe(layout);
        expectClose(arr(dx), refB.dx, tol(1e-5), 'bn dx');
        expectClose(arr(dg), refB.dgamma, tol(1e-5), 'bn dgamma');
        expectClose(arr(dbt), refB.dbeta, tol(1e-5), 'bn dbeta');
        keep(ops.batchnormBackward(T(dy, xs, layout), xt, g, 1e-5, saved, dg, dbt, true));
        expectClose(arr(dg), refB.dgamma.map((v) => 2 * v), tol(1e-5), 'bn dgamma accumulated');
        expectClose(arr(dbt), refB.dbeta.map((v) => 2 * v), tol(1e-5), 'bn dbeta accumulated');

        const ev = ops.batchnormForward(xt, g, b, rm, rv, false, 0.1, 1e-5);
        keep(ev.y);
        expect(ev.saved.length).toBe(0);
        expectClose(arr(ev.y), R.bnEvalForward(x, xs, gamma, beta, ref.runningMean, ref.runningVar, 1e-5), tol(1e-5), 'bn eval forward');
        expectClose(arr(rm), ref.runningMean, tol(1e-6), 'bn running_mean unchanged by eval');
      });
    }

    for (const layout of LAYOUTS) {
      test(`relu fused: forward max(0, bn(x)), backward bn's of dy masked by that output ${layout}`, () => {
        const x = uniform(numel(xs), -2, 3), gamma = uniform(C, 0.5, 1.5), beta = uniform(C, -0.5, 0.5);
        const g = T(gamma, [C]), b = T(beta, [C]), xt = T(x, xs, layout);
        const ref = R.bnTrainForward(x, xs, gamma, beta, [0, 0, 0], [1, 1, 1], 0.1, 1e-5);
        const want = ref.y.map((v) => Math.max(v, 0));
        expect(want.some((v) => v === 0) && want.some((v) => v > 0)).toBe(true); // the mask matters
        const f = ops.batchnormForward(xt, g, b, T(new Float32Array(C), [C]), T(new Float32Array(C).fill(1), [C]), true, 0.1, 1e-5, true, true);
        keep(f.y);
        f.saved.forEach(keep);
        expect(f.y.layout).toBe(layout);
        expectClose(arr(f.y), want, tol(1e-5), 'bn+relu forward');
        const dy = uniform(numel(xs));
        const masked = dy.map((v, i) => (want[i] > 0 ? v : 0));
        const refB = R.bnBackward(masked, x, xs, gamma, 1e-5);
        const dg = keep(Tensor.zeros([C], { device })), dbt = keep(Tensor.zeros([C], { device }));
        const dx = keep(ops.batchnormBackward(T(dy, xs, layout), xt, g, 1e-5, f.saved, dg, dbt, false, f.y));
        expectClose(arr(dx), refB.dx, tol(1e-5), 'bn+relu dx');
        expectClose(arr(dg), refB.dgamma, tol(1e-5), 'bn+relu dgamma');
        expectClose(arr(dbt), refB.dbeta, tol(1e-5), 'bn+relu dbeta');
      });
    }

    test('running stats after 2 train steps (momentum 0.1, unbiased running var)', () => {
      const rm = T(new Float32Array(C), [C]), rv = T(new Float32Array(C).fill(1), [C]);
      const g = T(new Float32Array(C).fill(1), [C]), b = T(new Float32Array(C), [C]);
      let erm: Float64Array = new Float64Array(C), erv: Float64Array = new Float64Array(C).fill(1);
      for (let step = 0; step < 2; step++) {
        const x = uniform(numel(xs), -1 + step, 2 + 3 * step);
        const r = ops.batchnormForward(T(x, xs), g, b, rm, rv, true, 0.1, 1e-5);
        keep(r.y);
        r.saved.forEach(keep);
        const ref = R.bnTrainForward(x, xs, [1, 1, 1], [0, 0, 0], erm, erv, 0.1, 1e-5);
        erm = ref.runningMean;
        erv = ref.runningVar;
      }
      expectClose(arr(rm), erm, tol(1e-6), 'running_mean after 2 steps');
      expectClose(arr(rv), erv, tol(1e-6), 'running_var after 2 steps');
    });

    test('finite differences of the training-mode function', () => {
      const s: S4 = [3, 2, 2, 2];
      const x = uniform(numel(s), -1, 2), gamma = uniform(2, 0.5, 1.5), beta = uniform(2);
      const r = uniform(numel(s));
      const L = (xx: ArrayLike<number>, gg: ArrayLike<number>, bb: ArrayLike<number>) =>
        R.dot(r, R.bnTrainForward(xx as Float64Array, s, gg as Float64Array, bb as Float64Array, [0, 0], [1, 1], 0.1, 1e-5).y);
      const xt = T(x, s), g = T(gamma, [2]);
      const f = ops.batchnormForward(xt, g, T(beta, [2]), T([0, 0], [2]), T([1, 1], [2]), true, 0.1, 1e-5);
      keep(f.y);
      f.saved.forEach(keep);
      const dg = keep(Tensor.zeros([2], { device })), db = keep(Tensor.zeros([2], { device }));
      const dx = keep(ops.batchnormBackward(T(r, s), xt, g, 1e-5, f.saved, dg, db, false));
      expectClose(arr(dx), R.numericGrad((v) => L(v, gamma, beta), x), tol(1e-4), 'bn dx vs finite differences');
      expectClose(arr(dg), R.numericGrad((v) => L(x, v, beta), gamma), tol(1e-4), 'bn dgamma vs finite differences');
      expectClose(arr(db), R.numericGrad((v) => L(x, gamma, v), beta), tol(1e-4), 'bn dbeta vs finite differences');
    });
  });

  // ---------------------------------------------------------------- linear
  describe('linear', () => {
    for (const [N, K, M] of [[3, 7, 5], [5, 70, 33], [16, 64, 6], [17, 48, 4]]) {
      test(`[${N}x${K}] -> ${M}: forward (bias, fused relu), backward data, backward weights (+accumulate)`, () => {
        const x = uniform(N * K), w = uniform(M * K), b = uniform(M);
        const xt = T(x, [N, K]), wt = T(w, [M, K]), bt = T(b, [M]);
        expectClose(arr(keep(ops.linearForward(xt, wt, bt, false))), R.linearForward(x, N, K, w, M, b), tol(1e-5), 'linear forward');
        expectClose(arr(keep(ops.linearForward(xt, wt, null, true))), R.linearForward(x, N, K, w, M, null, true), tol(1e-5), 'linear forward relu');
        const dy = uniform(N * M);
        const dyt = T(dy, [N, M]);
        const dx = keep(ops.linearBackwardData(dyt, wt));
        expect(dx.shape).toEqual([N, K]);
        expectClose(arr(dx), R.linearBackwardData(dy, N, M, w, K), tol(1e-5), 'linear dx');
        const g = R.linearBackwardWeights(x, dy, N, K, M);
        const dw = keep(Tensor.zeros([M, K], { device })), db = keep(Tensor.zeros([M], { device }));
        ops.fill(dw, 5);
        ops.linearBackwardWeights(xt, dyt, dw, db, false);
        expectClose(arr(dw), g.dw, tol(1e-5), 'linear dw');
        expectClose(arr(db), g.db, tol(1e-5), 'linear db');
        ops.linearBackwardWeights(xt, dyt, dw, db, true);
        expectClose(arr(dw), g.dw.map((v) => 2 * v), tol(1e-5), 'linear dw accumulated');
        expectClose(arr(db), g.db.map((v) => 2 * v), tol(1e-5), 'linear db accumulated');
        const dw2 = keep(Tensor.zeros([M, K], { device }));
        ops.linearBackwardWeights(xt, dyt, dw2, null, false);
        expectClose(arr(dw2), g.dw, tol(1e-5), 'linear dw without bias');
      });
    }
    const N = 3, K = 7, M = 5;

    test('finite differences', () => {
      const x = uniform(N * K), w = uniform(M * K), b = uniform(M), r = uniform(N * M);
      const L = (xx: ArrayLike<number>, ww: ArrayLike<number>, bb: ArrayLike<number>) =>
        R.dot(r, R.linearForward(xx as Float64Array, N, K, ww as Float64Array, M, bb as Float64Array));
      const xt = T(x, [N, K]), wt = T(w, [M, K]), rt = T(r, [N, M]);
      const dw = keep(Tensor.zeros([M, K], { device })), db = keep(Tensor.zeros([M], { device }));
      ops.linearBackwardWeights(xt, rt, dw, db, false);
      expectClose(arr(keep(ops.linearBackwardData(rt, wt))), R.numericGrad((v) => L(v, w, b), x), tol(1e-4), 'linear dx vs fd');
      expectClose(arr(dw), R.numericGrad((v) => L(x, v, b), w), tol(1e-4), 'linear dw vs fd');
      expectClose(arr(db), R.numericGrad((v) => L(x, w, v), b), tol(1e-4), 'linear db vs fd');
    });
  });

  // ---------------------------------------------------------------- dropout
  describe('dropout', () => {
    const shape = [4, 1000], n = 4000, p = 0.3;
    test('mask from (seed, offset), scaling, backward, determinism, rate', () => {
      const x = uniform(n, 0.5, 1.5);
      const xt = T(x, shape);
      const a = ops.dropoutForward(xt, p, 42, 7, true);
      keep(a.y);
      a.saved.forEach(keep);
      const mask = R.dropoutMask(n, p, 42n, 7n);
      const scale = 1 / (1 - p);
      expectClose(arr(a.y), Float64Array.from(x, (v, i) => (mask[i] ? v * scale : 0)), 1e-6, 'dropout forward');
      const kept = mask.reduce((s, v) => s + v, 0);
      expect(Math.abs(1 - kept / n - p)).toBeLessThan(0.03);

      const b = ops.dropoutForward(xt, p, 42, 7, true);
      keep(b.y);
      b.saved.forEach(keep);
      expect(Array.from(arr(b.y))).toEqual(Array.from(arr(a.y)));
      const c = ops.dropoutForward(xt, p, 42, 8, true);
      keep(c.y);
      c.saved.forEach(keep);
      expect(Array.from(arr(c.y))).not.toEqual(Array.from(arr(a.y)));
      // offset shifts the stream: element i at offset 8 is element i+1 at offset 7
      expectClose(arr(c.y).subarray(0, n - 1).map((v, i) => (v === 0 ? 0 : 1)),
        Float64Array.from(mask.subarray(1)), 0, 'dropout offset shift');

      const dy = uniform(n);
      const dx = keep(ops.dropoutBackward(T(dy, shape), p, a.saved));
      expectClose(arr(dx), Float64Array.from(dy, (v, i) => (mask[i] ? v * scale : 0)), 1e-6, 'dropout backward');

      const ev = ops.dropoutForward(xt, p, 42, 7, false);
      expect(ev.y).toBe(xt);
      expect(ev.saved.length).toBe(0);
    });
    test('p = 0 keeps everything', () => {
      const x = uniform(100);
      const r = ops.dropoutForward(T(x, [100]), 0, 1, 0, true);
      keep(r.y);
      r.saved.forEach(keep);
      expectClose(arr(r.y), x, 0, 'dropout p=0');
    });
  });

  // ---------------------------------------------------------------- cross entropy
  describe('crossEntropy', () => {
    const N = 4, C = 6;
    test('loss and dlogits vs reference and finite differences', () => {
      const logits = uniform(N * C, -3, 3);
      const labels = Int32Array.from([0, 5, 2, 2]);
      const ref = R.crossEntropy(logits, N, C, labels);
      const lt = Tensor.from(labels, [N], { device });
      keep(lt);
      const r = ops.crossEntropy(T(logits, [N, C]), lt);
      keep(r.loss);
      keep(r.dlogits);
      expect(r.loss.numel).toBe(1);
      expect(Math.abs(r.loss.item() - ref.loss)).toBeLessThan(1e-6 * Math.max(1, ref.loss));
      expectClose(arr(r.dlogits), ref.dlogits, tol(1e-5), 'cross-entropy dlogits');
      const fd = R.numericGrad((v) => R.crossEntropy(v, N, C, labels).loss, logits);
      expectClose(arr(r.dlogits), fd, tol(1e-4), 'cross-entropy dlogits vs finite differences');
    });
    test('numerically stable for large logits', () => {
      const logits = Float32Array.from([1000, 0, -1000, 999, 1000, 1000]);
      const lt = Tensor.from(Int32Array.from([0, 1]), [2], { device });
      keep(lt);
      const r = ops.crossEntropy(T(logits, [2, 3]), lt);
      keep(r.loss);
      keep(r.dlogits);
      const ref = R.crossEntropy(logits, 2, 3, [0, 1]);
      expect(Number.isFinite(r.loss.item())).toBe(true);
      expect(Math.abs(r.loss.item() - ref.loss)).toBeLessThan(1e-5);
      expectClose(arr(r.dlogits), ref.dlogits, tol(1e-5), 'stable dlogits');
    });
    test('label out of range names the index and value', () => {
      const lt = Tensor.from(Int32Array.from([0, 1, 7]), [3], { device });
      keep(lt);
      expect(() => ops.crossEntropy(T(uniform(3 * 4), [3, 4]), lt)).toThrow(/cross_entropy.*index 2.*7/);
      const neg = Tensor.from(Int32Array.from([-1, 1, 0]), [3], { device });
      keep(neg);
      expect(() => ops.crossEntropy(T(uniform(3 * 4), [3, 4]), neg)).toThrow(/cross_entropy.*index 0.*-1/);
    });
  });

  // ---------------------------------------------------------------- SGD
  describe('sgdStep', () => {
    const hyper = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0.01 };
    // Hand-computed: p0 = 1, g = 0.5 every step; d = g + wd*p; buf = d (step 1) else 0.9*buf + d;
    // plain: p -= lr*buf; nesterov: p -= lr*(d + 0.9*buf).
    const handPlain = [0.949, 0.852151, 0.714134749];
    const handNesterov = [0.9031, 0.76507411, 0.590209958191];
    for (const nesterov of [false, true]) {
      test(`3 steps by hand, momentum 0.9, wd 0.01${nesterov ? ', nesterov' : ''}`, () => {
        const p = T([1], [1]), g = T([0.5], [1]), buf = keep(Tensor.zeros([1], { device }));
        const want = nesterov ? handNesterov : handPlain;
        for (let s = 0; s < 3; s++) {
          ops.sgdStep([p], [g], [buf], { ...hyper, nesterov }, s === 0);
          expect(Math.abs(p.item() - want[s])).toBeLessThan(1e-6);
        }
      });
    }
    test('several parameters vs reference (dampening 0.5, changing grads; momentum 0)', () => {
      const shapes = [[3, 4], [5], [2, 2, 3, 3]];
      for (const o of [
        { lr: 0.05, momentum: 0.8, dampening: 0.5, weightDecay: 1e-3, nesterov: false },
        { lr: 0.05, momentum: 0, dampening: 0, weightDecay: 5e-4, nesterov: false },
      ]) {
        const p64 = shapes.map((s) => Float64Array.from(uniform(numel(s))));
        const b64 = shapes.map((s) => new Float64Array(numel(s)));
        const pt = shapes.map((s, i) => T(p64[i], s));
        const bt = o.momentum ? shapes.map((s) => keep(Tensor.zeros(s, { device }))) : [];
        for (let step = 0; step < 3; step++) {
          const g = shapes.map((s) => uniform(numel(s)));
          R.sgdStep(p64, g, b64, o, step === 0);
          ops.sgdStep(pt, shapes.map((s, i) => T(g[i], s)), bt, o, step === 0);
        }
        pt.forEach((t, i) => expectClose(arr(t), p64[i], tol(1e-6), `sgd param ${i} (momentum ${o.momentum})`));
      }
    });
  });

  // ---------------------------------------------------------------- elementwise helpers
  describe('helpers', () => {
    test('fill and add_', () => {
      const t = keep(Tensor.zeros([2, 3], { device }));
      ops.fill(t, 3.5);
      expect(list(t)).toEqual([3.5, 3.5, 3.5, 3.5, 3.5, 3.5]);
      const i = keep(Tensor.zeros([4], { device, dtype: 'int32' }));
      ops.fill(i, 7);
      expect(list(i)).toEqual([7, 7, 7, 7]);
      const s = T([1, 2, 3, 4, 5, 6], [2, 3]);
      ops.add_(t, s, -0.5);
      expect(list(t)).toEqual([3, 2.5, 2, 1.5, 1, 0.5]);
    });
    test('cast float32 <-> bfloat16 rounds to nearest even', () => {
      const v = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -12, -2.5, 3.140625, 0];
      const want = [1, 1, 1 + 2 ** -6, 1 + 2 ** -7, -2.5, 3.140625, 0];
      const b = keep(ops.cast(T(v, [v.length]), 'bfloat16'));
      expect(b.dtype).toBe('bfloat16');
      expect(list(b)).toEqual(want);
      const f = keep(ops.cast(b, 'float32'));
      expect(f.dtype).toBe('float32');
      expect(list(f)).toEqual(want);
      // special values, against test/ref/bf16.ts: ±0, subnormals, ±inf, the largest float (rounds up to inf), and
      // NaNs whose payload lies only in the low 16 bits (rounding those bits up would turn them into inf)
      const u = new Uint32Array([0x80000000, 0x00000001, 0x807fffff, 0x7f800000, 0xff800000, 0x7f7fffff, 0x7f800001, 0xff80ffff, 0x7fc00000]);
      const sv = new Float32Array(u.buffer);
      // straight from the buffer: a copy through JS numbers may canonicalise the NaNs' payloads
      const got = list(keep(ops.cast(keep(Tensor.from(sv, [sv.length], { device })), 'bfloat16')));
      const ref = roundBf16(sv);
      for (let i = 0; i < sv.length; i++) {
        if (Number.isNaN(sv[i])) expect(got[i]).toBeNaN();
        else expect(Object.is(got[i], ref[i])).toBe(true);
      }
    });
    test('toLayout nchw <-> nhwc keeps the logical tensor', () => {
      const s: S4 = [2, 3, 2, 4];
      const x = uniform(numel(s));
      const a = keep(ops.toLayout(T(x, s), 'nhwc'));
      expect(a.layout).toBe('nhwc');
      expect(a.shape).toEqual(s);
      expectClose(arr(a), x, 0, 'to nhwc');
      const b = keep(ops.toLayout(a, 'nchw'));
      expect(b.layout).toBe('nchw');
      expectClose(arr(b), x, 0, 'back to nchw');
      ops.synchronize(device);
    });
  });

  // ---------------------------------------------------------------- bad arguments
  describe('errors name the op', () => {
    const p = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
    test('conv2d channel mismatch', () => {
      expect(() => ops.conv2dForward(T(uniform(4 * 25), [1, 4, 5, 5]), T(uniform(2 * 27), [2, 3, 3, 3]), null, p, false))
        .toThrow('conv2d_forward: input has 4 channels, weight expects 3');
    });
    test('conv2d wrong dtype and wrong bias shape', () => {
      const xi = Tensor.from(new Int32Array(75), [1, 3, 5, 5], { device });
      keep(xi);
      expect(() => ops.conv2dForward(xi, T(uniform(54), [2, 3, 3, 3]), null, p, false)).toThrow(/conv2d_forward/);
      expect(() => ops.conv2dForward(T(uniform(75), [1, 3, 5, 5]), T(uniform(54), [2, 3, 3, 3]), T([1, 2, 3], [3]), p, false))
        .toThrow(/conv2d_forward: bias/);
    });
    test('conv2d backward shape mismatch', () => {
      expect(() => ops.conv2dBackwardData(T(uniform(2 * 16), [1, 2, 4, 4]), T(uniform(54), [2, 3, 3, 3]), [1, 3, 5, 5], p))
        .toThrow(/conv2d_backward_data: dy/);
    });
    test('linear feature mismatch', () => {
      expect(() => ops.linearForward(T(uniform(6), [2, 3]), T(uniform(8), [2, 4]), null, false)).toThrow(/linear_forward/);
    });
    test('batchnorm parameter shape', () => {
      const z = T([0, 0], [2]);
      expect(() => ops.batchnormForward(T(uniform(24), [2, 3, 2, 2]), z, z, z, z, true, 0.1, 1e-5)).toThrow(/batchnorm_forward/);
    });
    test('cross-entropy labels dtype', () => {
      expect(() => ops.crossEntropy(T(uniform(6), [2, 3]), T([0, 1], [2]))).toThrow(/cross_entropy: labels/);
    });
    test('maxpool backward without the saved workspace', () => {
      const x = T(uniform(16), [1, 1, 4, 4]);
      const y = keep(ops.maxpool2dForward(x, { kernel: 2, stride: 2, pad: 0 }, false).y);
      expect(() => ops.maxpool2dBackward(T(uniform(4), [1, 1, 2, 2]), x, y, { kernel: 2, stride: 2, pad: 0 }, []))
        .toThrow(/maxpool2d_backward/);
    });
    test('sgd mismatched lists', () => {
      expect(() => ops.sgdStep([T([1], [1])], [], [], { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false }, true))
        .toThrow(/sgd_?[sS]tep/);
    });
  });
});
