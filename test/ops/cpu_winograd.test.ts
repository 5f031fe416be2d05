// oneDNN's Winograd F(4×4, 3×3) convolutions on the CPU (conv.cc, use_winograd): which layers take them (a fixed
// rule of shape and ISA, checked through the kernel log), and their accuracy in all three directions against the
// float64 references. Winograd's transforms round more than a direct convolution does; the measured error and the
// tolerance it needs are stated below. Runs where oneDNN has the kernels (avx512_core and newer) and
// VGGNET_CPU_WINOGRAD is not 0; elsewhere it is skipped with the reason.
import { Tensor, Layout } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import * as R from '../ref/naive';
import { uniformSource } from '../ref/random';
import { disposeKeptAfterEach, f64 as arr, keep, numel } from '../helpers/tensors';

const uniform = uniformSource(4242);
disposeKeptAfterEach();
function T(data: ArrayLike<number>, shape: number[], layout: Layout = 'nchw'): Tensor {
  return keep(Tensor.from(Float32Array.from(data), shape, { device: 'cpu', layout }));
}

/** max |a - e| / max |e| */
function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let scale = 0, worst = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]));
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  }
  return worst / scale;
}

/** The implementation each conv direction ran since the last call, e.g. { conv2d_forward: 'jit_wino_4x3:avx512_core' }. */
function convKernels(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ops.cpuKernelsUsed()) if (k.op.startsWith('conv2d_') && k.impl !== 'reorder') out[k.op] = k.impl;
  return out;
}

const P1 = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
// Winograd's error relative to the largest reference value, measured on these inputs (uniform in [-1, 1), weights
// in [-0.5, 0.5)), avx512_core: forward 1.1-2.1e-6, backward-data 0.9-1.2e-6, weight gradients 0.6-0.9e-6; the
// direct kernels on the same inputs (VGGNET_CPU_WINOGRAD=0): 2-5e-7. So about 4-6x a direct convolution's rounding
// error, still float32-sized; the tolerance leaves ~5x headroom, and a wrong transform or tile edge is off by O(1).
const TOL = 1e-5;

const isa = ops.cpuIsaInfo().isa;
const why = !isa.startsWith('avx512_core')
  ? `oneDNN's Winograd kernels need avx512_core, this CPU's oneDNN runs ${isa}`
  : process.env.VGGNET_CPU_WINOGRAD === '0'
    ? 'VGGNET_CPU_WINOGRAD=0'
    : null;
if (why) console.log(`skipping the Winograd tests: ${why}`);
const describeWino = why ? describe.skip : describe;

describeWino('Winograd convolutions (avx512_core)', () => {
  // 3×3 stride-1 pad-1, channels multiples of 16 with at least 64 in, maps of at least 8×8: Winograd in all three
  // directions; odd map sizes exercise partial 4×4 output tiles.
  const cases: { xs: R.Shape4; k: number }[] = [
    { xs: [2, 64, 8, 8], k: 16 },
    { xs: [2, 64, 13, 11], k: 16 },
    { xs: [1, 256, 10, 10], k: 16 },
  ];
  for (const { xs, k } of cases)
    for (const layout of ['nchw16c', 'nchw'] as Layout[]) {
      test(`[${xs}] -> ${k} channels, ${layout}: forward (bias, relu), backward data, backward weights (+accumulate) within ${TOL}`, () => {
        const ws: R.Shape4 = [k, xs[1], 3, 3];
        const x = uniform(numel(xs)), w = uniform(numel(ws), -0.5, 0.5), b = uniform(k);
        const ref = R.convForward(x, xs, w, ws, b, P1, true);
        const dy = uniform(numel(ref.shape));
        ops.cpuKernelsUsed(); // clear

        const y = ops.conv2dForward(T(x, xs, layout), T(w, ws), T(b, [k]), P1, true);
        keep(y);
        const dx = ops.conv2dBackwardData(T(dy, ref.shape, layout), T(w, ws), xs, P1);
        keep(dx);
        const dw = T(new Float32Array(numel(ws)), ws), db = T(new Float32Array(k), [k]);
        ops.conv2dBackwardWeights(T(x, xs, layout), T(dy, ref.shape, layout), P1, dw, db, false);
        const kernels = convKernels();
        expect(kernels.conv2d_forward).toMatch(/^jit_wino/);
        expect(kernels.conv2d_backward_data).toMatch(/^jit_wino/);
        expect(kernels.conv2d_backward_weights).toMatch(/^jit_wino/);

        const g = R.convBackwardWeights(x, xs, dy, ws, P1);
        const errs = {
          forward: relErr(arr(y), ref.y),
          backwardData: relErr(arr(dx), R.convBackwardData(dy, w, ws, xs, P1)),
          dw: relErr(arr(dw), g.dw),
          db: relErr(arr(db), g.db),
        };
        ops.conv2dBackwardWeights(T(x, xs, layout), T(dy, ref.shape, layout), P1, dw, db, true);
        const acc = { dw: relErr(arr(dw), g.dw.map((v) => 2 * v)), db: relErr(arr(db), g.db.map((v) => 2 * v)) };
        console.log(`Winograd [${xs}] -> ${k} ${layout}: relative error ${JSON.stringify(errs)}, accumulated ${JSON.stringify(acc)}`);
        for (const [what, e] of Object.entries({ ...errs, dwAccumulated: acc.dw, dbAccumulated: acc.db })) {
          if (!(e <= TOL)) throw new Error(`${what}: relative error ${e} exceeds ${TOL}`);
        }
      });
    }

  test('outside the rule the direct kernels run: 32 input channels, a 4-channel output, stride 2, 6×6 maps', () => {
    const run = (xs: R.Shape4, k: number, p: typeof P1) => {
      const ws: R.Shape4 = [k, xs[1], 3, 3];
      ops.cpuKernelsUsed();
      const x = T(uniform(numel(xs)), xs), w = T(uniform(numel(ws)), ws);
      const y = ops.conv2dForward(x, w, null, p, false);
      keep(y);
      const dw = T(new Float32Array(numel(ws)), ws);
      ops.conv2dBackwardWeights(x, T(uniform(numel(y.shape)), y.shape), p, dw, null, false);
      return convKernels();
    };
    for (const [xs, k, p] of [
      [[2, 32, 12, 12], 16, P1],
      [[2, 64, 12, 12], 4, P1],
      [[2, 64, 12, 12], 16, { strideH: 2, strideW: 2, padH: 1, padW: 1 }],
      [[2, 64, 6, 6], 16, P1],
    ] as [R.Shape4, number, typeof P1][]) {
      const kernels = run(xs, k, p);
      expect(kernels.conv2d_forward).not.toMatch(/wino/);
      expect(kernels.conv2d_backward_weights).not.toMatch(/wino/);
    }
  });
});
