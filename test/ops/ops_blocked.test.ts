// The CPU backend's blocked activation layouts 'nchw8c' and 'nchw16c' (oneDNN's nChw8c/nChw16c, Layout::Blocked8/16):
// every op a VGG runs accepts both on any CPU and gives the same numbers as the float64 references, and conv2d's
// cpuBlockedOutput switches a network into the one this CPU's oneDNN works in (cpuIsaInfo().blockedLayout).
// CPU only (the layouts are the CPU backend's own).
import { Tensor, Layout } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import * as R from '../ref/naive';
import { uniformSource } from '../ref/random';
import { disposeKeptAfterEach, expectClose, f64, keep, numel } from '../helpers/tensors';

const uniform = uniformSource(777);
function T(data: ArrayLike<number>, shape: number[], layout: Layout = 'nchw'): Tensor {
  return keep(Tensor.from(Float32Array.from(data), shape, { device: 'cpu', layout }));
}
disposeKeptAfterEach();
const arr = f64;
const P1 = { strideH: 1, strideW: 1, padH: 1, padW: 1 };

test('cpuIsaInfo().blockedLayout is the layout oneDNN works in here: nchw16c on AVX-512, nchw8c on AVX2', () => {
  const { isa, blockedLayout } = ops.cpuIsaInfo();
  if (process.env.VGGNET_CPU_BLOCK === '8') expect(blockedLayout).toBe('nchw8c');
  else if (isa.startsWith('avx512')) expect(blockedLayout).toBe('nchw16c');
  else if (isa.startsWith('avx2')) expect(blockedLayout).toBe('nchw8c');
});

test('cpuIsaInfo().bf16Layout is where bf16 convolutions work: nhwc on AMX, nchw16c on avx512_core_bf16, else the f32 one', () => {
  const { isa, bf16, blockedLayout, bf16Layout } = ops.cpuIsaInfo();
  if (!bf16) expect(bf16Layout).toBe(blockedLayout);
  else if (isa === 'avx512_core_amx') expect(bf16Layout).toBe('nhwc');
  else if (isa === 'avx512_core_bf16') expect(bf16Layout).toBe('nchw16c');
  // and conv2d's cpuBlockedOutput writes each dtype's own
  const xs = [2, 16, 6, 6], ws = [32, 16, 3, 3];
  const x = T(uniform(numel(xs)), xs), w = T(uniform(numel(ws), -0.5, 0.5), ws);
  const p = { ...P1, cpuBlockedOutput: true };
  expect(keep(ops.conv2dForward(x, w, null, p)).layout).toBe(blockedLayout);
  expect(keep(ops.conv2dForward(keep(ops.cast(x, 'bfloat16')), w, null, p)).layout).toBe(bf16Layout);
});

describe.each([['nchw8c', 8], ['nchw16c', 16]] as [Layout, number][])('%s layout on the CPU', (L, B) => {
  test(`toLayout round trips nchw <-> ${L} <-> nhwc, and Tensor.from takes ${L}`, () => {
    const s = [2, 16, 3, 5], x = uniform(numel(s));
    const b = keep(ops.toLayout(T(x, s), L));
    expect(b.layout).toBe(L);
    expectClose(arr(b), x, 0, `nchw -> ${L}`);
    const h = keep(ops.toLayout(b, 'nhwc'));
    expectClose(arr(h), x, 0, `${L} -> nhwc`);
    expectClose(arr(keep(ops.toLayout(h, L))), x, 0, `nhwc -> ${L}`);
    expectClose(arr(keep(ops.toLayout(b, 'nchw'))), x, 0, `${L} -> nchw`);
    const other: Layout = L === 'nchw8c' ? 'nchw16c' : 'nchw8c';
    expectClose(arr(keep(ops.toLayout(b, other))), x, 0, `${L} -> ${other}`);
    expectClose(arr(T(x, s, L)), x, 0, `Tensor.from ${L}`);
    expect(() => T(uniform(2 * (B / 2) * 4 * 4), [2, B / 2, 4, 4], L)).toThrow(new RegExp(`${L} layout needs a channel count divisible by ${B}`));
  });

  test(`conv2d: cpuBlockedOutput from nchw (3 -> 16), ${L} in and out (16 -> ${3 * B}), fallbacks (-> 24, -> 13, dx to 3)`, () => {
    const K2 = 3 * B; // a multiple of the block: x's layout kept
    const xs: R.Shape4 = [2, 3, 6, 6], w1s: R.Shape4 = [16, 3, 3, 3], w2s: R.Shape4 = [K2, 16, 3, 3], w3s: R.Shape4 = [13, K2, 3, 3];
    const x = uniform(numel(xs)), w1 = uniform(numel(w1s), -0.5, 0.5), b1 = uniform(16);
    const w2 = uniform(numel(w2s), -0.5, 0.5), w3 = uniform(numel(w3s), -0.5, 0.5);
    const p = { ...P1, cpuBlockedOutput: true };
    const y1b = keep(ops.conv2dForward(T(x, xs), T(w1, w1s), T(b1, [16]), p, true));
    expect(y1b.layout).toBe(ops.cpuIsaInfo().blockedLayout);
    const r1 = R.convForward(x, xs, w1, w1s, b1, P1, true);
    expectClose(arr(y1b), r1.y, 1e-5, 'conv 3->16 blocked output');
    const y1 = keep(ops.toLayout(y1b, L));
    const y1v = Float32Array.from(arr(y1));
    const y2 = keep(ops.conv2dForward(y1, T(w2, w2s), null, P1, false)); // x's layout kept without the flag
    expect(y2.layout).toBe(L);
    const r2 = R.convForward(y1v, r1.shape as R.Shape4, w2, w2s, null, P1);
    expectClose(arr(y2), r2.y, 1e-5, `conv 16->${K2} ${L}`);
    const w24s: R.Shape4 = [24, K2, 3, 3], w24 = uniform(numel(w24s), -0.5, 0.5);
    const y24 = keep(ops.conv2dForward(y2, T(w24, w24s), null, p, false)); // 24 channels: nchw8c on any CPU
    expect(y24.layout).toBe('nchw8c');
    expectClose(arr(y24), R.convForward(Float32Array.from(arr(y2)), r2.shape as R.Shape4, w24, w24s, null, P1).y, 1e-5, `conv ${K2}->24`);
    const y3 = keep(ops.conv2dForward(y2, T(w3, w3s), null, p, false)); // 13 channels cannot be blocked
    expect(y3.layout).toBe('nchw');
    expectClose(arr(y3), R.convForward(Float32Array.from(arr(y2)), r2.shape as R.Shape4, w3, w3s, null, P1).y, 1e-5, `conv ${K2}->13`);

    const dy = uniform(numel(r2.shape));
    const dyt = T(dy, r2.shape, L);
    const dx = keep(ops.conv2dBackwardData(dyt, T(w2, w2s), r1.shape, P1));
    expect(dx.layout).toBe(L);
    expectClose(arr(dx), R.convBackwardData(dy, w2, w2s, r1.shape as R.Shape4, P1), 1e-5, `conv backward data ${L}`);
    const g = R.convBackwardWeights(y1v, r1.shape as R.Shape4, dy, w2s, P1);
    const dw = keep(Tensor.zeros(w2s)), db = keep(Tensor.zeros([K2]));
    ops.conv2dBackwardWeights(y1, dyt, P1, dw, db, false);
    expectClose(arr(dw), g.dw, 1e-5, `conv dw ${L}`);
    expectClose(arr(db), g.db, 1e-5, `conv db ${L}`);
    ops.conv2dBackwardWeights(y1, dyt, P1, dw, db, true);
    expectClose(arr(dw), g.dw.map((v) => 2 * v), 1e-5, `conv dw ${L} accumulated`);

    const dy1 = uniform(numel(r1.shape));
    const dx0 = keep(ops.conv2dBackwardData(T(dy1, r1.shape, L), T(w1, w1s), xs, P1));
    expect(dx0.layout).toBe('nchw'); // 3 channels: plain NCHW
    expectClose(arr(dx0), R.convBackwardData(dy1, w1, w1s, xs, P1), 1e-5, 'conv backward data to 3 channels');
    const dw1 = keep(Tensor.zeros(w1s));
    ops.conv2dBackwardWeights(T(x, xs), T(dy1, r1.shape, L), P1, dw1, null, false); // mixed layouts
    expectClose(arr(dw1), R.convBackwardWeights(x, xs, dy1, w1s, P1).dw, 1e-5, 'conv dw mixed layouts');
  });

  test(`conv2d on small maps (the batch-wide GEMM path): ${L} in and out, all three directions`, () => {
    for (const hw of [2, 4]) {
      const xs: R.Shape4 = [3, 16, hw, hw], ws: R.Shape4 = [B, 16, 3, 3];
      const x = uniform(numel(xs)), dy = uniform(numel([3, B, hw, hw]));
      const w = uniform(numel(ws), -0.5, 0.5), bias = uniform(B);
      const y = keep(ops.conv2dForward(T(x, xs, L), T(w, ws), T(bias, [B]), P1, true));
      expect(y.layout).toBe(L);
      expectClose(arr(y), R.convForward(x, xs, w, ws, bias, P1, true).y, 1e-5, `conv forward+relu ${L} ${hw}x${hw}`);
      const yb = keep(ops.conv2dForward(T(x, xs), T(w, ws), null, { ...P1, cpuBlockedOutput: true }, false));
      expect(yb.layout).toBe(B === 8 ? 'nchw8c' : ops.cpuIsaInfo().blockedLayout);
      expectClose(arr(yb), R.convForward(x, xs, w, ws, null, P1).y, 1e-5, `conv forward nchw -> blocked ${hw}x${hw}`);
      const dx = keep(ops.conv2dBackwardData(T(dy, [3, B, hw, hw], L), T(w, ws), xs, P1));
      expect(dx.layout).toBe(L);
      expectClose(arr(dx), R.convBackwardData(dy, w, ws, xs, P1), 1e-5, `conv backward data ${L} ${hw}x${hw}`);
      const g = R.convBackwardWeights(x, xs, dy, ws, P1);
      const dw = keep(Tensor.zeros(ws)), db = keep(Tensor.zeros([B]));
      ops.conv2dBackwardWeights(T(x, xs, L), T(dy, [3, B, hw, hw], L), P1, dw, db, false);
      expectClose(arr(dw), g.dw, 1e-5, `conv dw ${L} ${hw}x${hw}`);
      expectClose(arr(db), g.db, 1e-5, `conv db ${L} ${hw}x${hw}`);
      ops.conv2dBackwardWeights(T(x, xs, L), T(dy, [3, B, hw, hw], L), P1, dw, db, true);
      expectClose(arr(dw), g.dw.map((v) => 2 * v), 1e-5, `conv dw ${L} ${hw}x${hw} accumulated`);
      expectClose(arr(db), g.db.map((v) => 2 * v), 1e-5, `conv db ${L} ${hw}x${hw} accumulated`);
    }
  });

  test('conv2d backward-weights on 28×28 maps with 128 input channels (on AVX2: oneDNN\'s GEMM-based kernel)', () => {
    const xs: R.Shape4 = [2, 128, 28, 28], ws: R.Shape4 = [B, 128, 3, 3], ys = [2, B, 28, 28];
    const x = uniform(numel(xs)), dy = uniform(numel(ys));
    const g = R.convBackwardWeights(x, xs, dy, ws, P1);
    for (const layout of [L, 'nchw'] as Layout[]) {
      const dw = keep(Tensor.zeros(ws)), db = keep(Tensor.zeros([B]));
      ops.conv2dBackwardWeights(T(x, xs, layout), T(dy, ys, layout), P1, dw, db, false);
      expectClose(arr(dw), g.dw, 1e-5, `conv dw ${layout} 28x28`);
      expectClose(arr(db), g.db, 1e-5, `conv db ${layout} 28x28`);
      ops.conv2dBackwardWeights(T(x, xs, layout), T(dy, ys, layout), P1, dw, db, true);
      expectClose(arr(dw), g.dw.map((v) => 2 * v), 1e-5, `conv dw ${layout} 28x28 accumulated`);
      expectClose(arr(db), g.db.map((v) => 2 * v), 1e-5, `conv db ${layout} 28x28 accumulated`);
    }
  });

  test(`relu, maxpool, adaptive avgpool, batch norm, add_ and cast on ${L}`, () => {
    const xs: R.Shape4 = [2, 32, 6, 4];
    const x = uniform(numel(xs), -2, 3);
    const xt = T(x, xs, L);
    const y = keep(ops.reluForward(xt));
    expect(y.layout).toBe(L);
    expectClose(arr(y), R.reluForward(x), 0, 'relu forward');
    const dy = uniform(numel(xs));
    expectClose(arr(keep(ops.reluBackward(T(dy, xs, L), y))), R.reluBackward(dy, R.reluForward(x)), 0, 'relu backward');

    const pp = { kernel: 2, stride: 2, pad: 0 };
    const ref = R.maxpoolForward(x, xs, 2, 2, 0);
    const mp = ops.maxpool2dForward(xt, pp, true);
    keep(mp.y);
    mp.saved.forEach(keep);
    expect(mp.y.layout).toBe(L);
    expectClose(arr(mp.y), ref.y, 0, 'maxpool forward');
    const dyp = uniform(numel(ref.shape));
    const dxp = keep(ops.maxpool2dBackward(T(dyp, ref.shape, L), xt, mp.y, pp, mp.saved));
    expect(dxp.layout).toBe(L);
    expectClose(arr(dxp), R.maxpoolBackward(dyp, ref.argmax, xs), 1e-6, 'maxpool backward');

    const ar = R.adaptiveAvgForward(x, xs, 7, 7);
    const ay = keep(ops.adaptiveAvgpool2dForward(xt, 7, 7));
    expect(ay.layout).toBe('nchw');
    expectClose(arr(ay), ar.y, 1e-6, 'adaptive avgpool forward');
    const day = uniform(numel(ar.shape));
    const adx = keep(ops.adaptiveAvgpool2dBackward(T(day, ar.shape), xs, L));
    expect(adx.layout).toBe(L);
    expectClose(arr(adx), R.adaptiveAvgBackward(day, xs, 7, 7), 1e-6, 'adaptive avgpool backward');

    const C = xs[1];
    const gamma = uniform(C, 0.5, 1.5), beta = uniform(C), rm0 = uniform(C), rv0 = uniform(C, 0.5, 2);
    const rm = T(rm0, [C]), rv = T(rv0, [C]), gt = T(gamma, [C]);
    const bref = R.bnTrainForward(x, xs, gamma, beta, rm0, rv0, 0.1, 1e-5);
    const bn = ops.batchnormForward(xt, gt, T(beta, [C]), rm, rv, true, 0.1, 1e-5);
    keep(bn.y);
    bn.saved.forEach(keep);
    expect(bn.y.layout).toBe(L);
    expectClose(arr(bn.y), bref.y, 1e-5, 'bn forward');
    expectClose(arr(rm), bref.runningMean, 1e-6, 'bn running mean');
    const bb = R.bnBackward(dy, x, xs, gamma, 1e-5);
    const dg = keep(Tensor.zeros([C])), dbt = keep(Tensor.zeros([C]));
    const bdx = keep(ops.batchnormBackward(T(dy, xs, L), xt, gt, 1e-5, bn.saved, dg, dbt, false));
    expect(bdx.layout).toBe(L);
    expectClose(arr(bdx), bb.dx, 1e-5, 'bn dx');
    expectClose(arr(dg), bb.dgamma, 1e-5, 'bn dgamma');
    expectClose(arr(dbt), bb.dbeta, 1e-5, 'bn dbeta');

    const acc = T(x, xs, L);
    ops.add_(acc, T(dy, xs, L), 0.5);
    expectClose(arr(acc), Float64Array.from(x, (v, i) => v + 0.5 * dy[i]), 1e-6, 'add_');
    expect(() => ops.add_(acc, T(dy, xs), 1)).toThrow(new RegExp(`layouts differ \\(${L} vs nchw\\)`));
    const h = keep(ops.cast(xt, 'bfloat16'));
    expect(h.layout).toBe(L);
    expectClose(arr(keep(ops.cast(h, 'float32'))), x, 1 / 128, 'cast bf16 round trip');
  });
});
