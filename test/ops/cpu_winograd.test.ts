// Winograd F(4×4, 3×3) convolutions on the CPU (conv.cc): oneDNN's (use_winograd: avx512_core and newer) and our own
// (native/cpu/winograd.cc, use_our_winograd: AVX2 CPUs, or any CPU with AVX2 and FMA when VGGNET_CPU_WINOGRAD=avx2).
// Which layers take them (a fixed rule of shape and ISA, checked through the kernel log), and their accuracy in all
// three directions against the float64 references. Winograd's transforms round more than a direct convolution does;
// the measured error and the tolerance it needs are stated below. Each part runs where its kernels can and
// VGGNET_CPU_WINOGRAD is not 0; elsewhere it is skipped with the reason.
import { Tensor, Layout } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { cpuWinograd, setCpuWinograd } from '../../lib/backend';
import * as R from '../ref/naive';
import { uniformSource } from '../ref/random';
import { roundBf16 } from '../ref/bf16';
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
// in [-0.5, 0.5)). oneDNN's (Xeon avx512_core): forward 1.1-2.1e-6, backward-data 0.9-1.2e-6, weight gradients
// 0.6-0.9e-6. Ours (AMD EPYC avx2, the same points as oneDNN's): forward 1.0-3.2e-6, backward-data 0.8-1.6e-6,
// weight gradients 0.6-1.0e-6, bias gradients < 1e-7 (with Lavin & Gray's points 0, ±1, ±2 it was 3-12e-6 forward).
// The direct kernels on the same inputs (setCpuWinograd('off')): 2-5e-7. So about 4-6x a direct convolution's
// rounding error, still float32-sized; the tolerance leaves ~3x headroom, and a wrong transform or tile edge is off
// by O(1).
const TOL = 1e-5;

const isa = ops.cpuIsaInfo().isa;
const off = process.env.VGGNET_CPU_WINOGRAD === '0';

/** Runs all three directions (and backward-weights accumulating) on one shape, checks which kernel ran and holds
 * each result to TOL against float64. */
function checkDirections(xs: R.Shape4, k: number, layout: Layout, impl: RegExp, label: string): void {
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
  expect(kernels.conv2d_forward).toMatch(impl);
  expect(kernels.conv2d_backward_data).toMatch(impl);
  expect(kernels.conv2d_backward_weights).toMatch(impl);

  const g = R.convBackwardWeights(x, xs, dy, ws, P1);
  const errs = {
    forward: relErr(arr(y), ref.y),
    backwardData: relErr(arr(dx), R.convBackwardData(dy, w, ws, xs, P1)),
    dw: relErr(arr(dw), g.dw),
    db: relErr(arr(db), g.db),
  };
  ops.conv2dBackwardWeights(T(x, xs, layout), T(dy, ref.shape, layout), P1, dw, db, true);
  const acc = { dw: relErr(arr(dw), g.dw.map((v) => 2 * v)), db: relErr(arr(db), g.db.map((v) => 2 * v)) };
  console.log(`${label} [${xs}] -> ${k} ${layout}: relative error ${JSON.stringify(errs)}, accumulated ${JSON.stringify(acc)}`);
  for (const [what, e] of Object.entries({ ...errs, dwAccumulated: acc.dw, dbAccumulated: acc.db })) {
    if (!(e <= TOL)) throw new Error(`${what}: relative error ${e} exceeds ${TOL}`);
  }
}

/** The kernels each direction ran for a conv outside (or inside) the rule, forward and backward-weights. */
function kernelsFor(xs: R.Shape4, k: number, p: typeof P1, layout: Layout = 'nchw'): Record<string, string> {
  const ws: R.Shape4 = [k, xs[1], 3, 3];
  ops.cpuKernelsUsed();
  const x = T(uniform(numel(xs)), xs, layout), w = T(uniform(numel(ws)), ws);
  const y = ops.conv2dForward(x, w, null, p, false);
  keep(y);
  const dw = T(new Float32Array(numel(ws)), ws);
  ops.conv2dBackwardWeights(x, T(uniform(numel(y.shape)), y.shape, y.layout), p, dw, null, false);
  return convKernels();
}

const whyNotOneDnn = !isa.startsWith('avx512_core')
  ? `oneDNN's Winograd kernels need avx512_core, this CPU's oneDNN runs ${isa}`
  : off
    ? 'VGGNET_CPU_WINOGRAD=0'
    : null;
if (whyNotOneDnn) console.log(`skipping the oneDNN Winograd tests: ${whyNotOneDnn}`);

(whyNotOneDnn ? describe.skip : describe)("oneDNN's Winograd convolutions (avx512_core)", () => {
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
        checkDirections(xs, k, layout, /^jit_wino/, 'oneDNN Winograd');
      });
    }

  test('outside the rule the direct kernels run: 32 input channels, a 4-channel output, stride 2, 6×6 maps', () => {
    for (const [xs, k, p] of [
      [[2, 32, 12, 12], 16, P1],
      [[2, 64, 12, 12], 4, P1],
      [[2, 64, 12, 12], 16, { strideH: 2, strideW: 2, padH: 1, padW: 1 }],
      [[2, 64, 6, 6], 16, P1],
    ] as [R.Shape4, number, typeof P1][]) {
      const kernels = kernelsFor(xs, k, p);
      expect(kernels.conv2d_forward).not.toMatch(/wino/);
      expect(kernels.conv2d_backward_weights).not.toMatch(/wino/);
    }
  });
});

// Ours: on AVX2 CPUs by default; on AVX-512 ones (where oneDNN's is the default) setCpuWinograd('avx2') puts ours in
// its place (a test file's process.env is its own copy, which the addon never sees, hence the setter).
const hasAvx2 = isa.startsWith('avx2') || isa.startsWith('avx512');
const whyNotOurs = !hasAvx2 ? `our Winograd kernels need AVX2, this CPU's oneDNN runs ${isa}` : off ? 'VGGNET_CPU_WINOGRAD=0' : null;
if (whyNotOurs) console.log(`skipping the tests of our Winograd: ${whyNotOurs}`);
const OURS = /^wino_4x3:avx2 \(vggnet\)$/;

(whyNotOurs ? describe.skip : describe)('our Winograd convolutions (AVX2)', () => {
  const mode = isa.startsWith('avx2') ? 'auto' : 'avx2';
  beforeAll(() => setCpuWinograd(mode));
  afterAll(() => setCpuWinograd('auto'));

  // Channels multiples of 8 with at least 64 in, maps of at least 8×8, blocked activations (8 channels at a time in
  // both nchw8c and nchw16c); odd map sizes exercise partial output tiles; 24 output channels are three 8-channel
  // groups.
  const cases: { xs: R.Shape4; k: number; layouts: Layout[] }[] = [
    { xs: [2, 64, 8, 8], k: 16, layouts: ['nchw8c', 'nchw16c'] },
    { xs: [2, 64, 13, 11], k: 24, layouts: ['nchw8c'] },
    { xs: [1, 256, 10, 10], k: 16, layouts: ['nchw8c', 'nchw16c'] },
    { xs: [2, 72, 9, 9], k: 128, layouts: ['nchw8c'] },
  ];
  for (const { xs, k, layouts } of cases)
    for (const layout of layouts) {
      test(`[${xs}] -> ${k} channels, ${layout}: forward (bias, relu), backward data, backward weights (+accumulate) within ${TOL}`, () => {
        checkDirections(xs, k, layout, OURS, 'our Winograd');
      });
    }

  test('a batch of more tiles than one chunk (900: two chunks, the second partial) equals the direct kernels within the tolerance', () => {
    // Against oneDNN's direct kernels, not float64: the naive reference would take half a minute at this size.
    const xs: R.Shape4 = [100, 64, 9, 9], ws: R.Shape4 = [8, 64, 3, 3];
    const x = uniform(numel(xs)), w = uniform(numel(ws), -0.5, 0.5), b = uniform(8), dy = uniform(100 * 8 * 81);
    const run = () => {
      const y = keep(ops.conv2dForward(T(x, xs, 'nchw8c'), T(w, ws), T(b, [8]), P1, true));
      const dx = keep(ops.conv2dBackwardData(T(dy, [100, 8, 9, 9], 'nchw8c'), T(w, ws), xs, P1));
      const dw = T(new Float32Array(numel(ws)), ws), db = T(new Float32Array(8), [8]);
      ops.conv2dBackwardWeights(T(x, xs, 'nchw8c'), T(dy, [100, 8, 9, 9], 'nchw8c'), P1, dw, db, false);
      return { kernels: convKernels(), out: [y, dx, dw, db].map((t) => arr(t)) };
    };
    ops.cpuKernelsUsed();
    const ours = run();
    expect(Object.values(ours.kernels)).toEqual([expect.stringMatching(OURS), expect.stringMatching(OURS), expect.stringMatching(OURS)]);
    setCpuWinograd('off');
    let direct: ReturnType<typeof run>;
    try {
      direct = run();
    } finally {
      setCpuWinograd(mode);
    }
    expect(Object.values(direct.kernels).join()).not.toMatch(/wino/);
    ours.out.forEach((o, i) => expect(relErr(o, direct.out[i])).toBeLessThan(TOL));
  });

  test('outside the rule it does not run: plain nchw maps, 32 input channels, 12 output channels, stride 2, 7×7 maps', () => {
    for (const [xs, k, p, layout] of [
      [[2, 64, 12, 12], 16, P1, 'nchw'],
      [[2, 32, 12, 12], 16, P1, 'nchw8c'],
      [[2, 64, 12, 12], 12, P1, 'nchw8c'],
      [[2, 64, 12, 12], 16, { strideH: 2, strideW: 2, padH: 1, padW: 1 }, 'nchw8c'],
      [[2, 64, 7, 7], 16, P1, 'nchw8c'],
    ] as [R.Shape4, number, typeof P1, Layout][]) {
      const kernels = kernelsFor(xs, k, p, layout);
      expect(kernels.conv2d_forward).not.toMatch(OURS);
      expect(kernels.conv2d_backward_weights).not.toMatch(OURS);
    }
  });

  test("setCpuWinograd('off') turns it off, and back on", () => {
    setCpuWinograd('off');
    try {
      expect(cpuWinograd()).toBe('off');
      expect(kernelsFor([2, 64, 8, 8], 16, P1, 'nchw8c').conv2d_forward).not.toMatch(/wino/);
    } finally {
      setCpuWinograd(mode);
    }
    expect(kernelsFor([2, 64, 8, 8], 16, P1, 'nchw8c').conv2d_forward).toMatch(OURS);
    expect(() => setCpuWinograd('fast' as never)).toThrow(/setCpuWinograd: expected 'auto', 'off' or 'avx2', got 'fast'/);
  });
});

// Our bf16 Winograd F(2×2, 3×3) (native/cpu/winograd_bf16.cc, use_bf16_winograd in conv.cc): native bf16 layers on
// avx512_core_bf16 CPUs, at least 256 channels each side, maps of 7² to 56²; forward and backward-data only where
// N·P·Q·min(C, K) >= 512², backward-weights on every such layer. That rule's layers are too large for the float64
// references here (minutes), so the accuracy tests take small layers with setCpuWinograd('avx2'), which puts ours on
// every layer it can take; the rule is checked by the kernel each direction ran. Held against float64 on the same
// bf16 inputs (x and dy rounded to bf16, the f32 weights as they are). Measured on these inputs (uniform in [-1, 1),
// weights in [-0.05, 0.05); AMD Zen 4), relative to the largest value: forward 2.5-4.2e-3, backward-data 4.2-5.2e-3,
// weight gradients 2.3-5.6e-3; oneDNN's direct bf16 kernels 2.4-2.8e-3, 3.1-3.2e-3 and 2e-7 (their outputs' own bf16
// rounding; their weight gradients are f32 sums of exact products, where ours round the transformed operands to bf16
// once, about the rounding of a bf16 weight gradient such as PyTorch's bf16 autocast makes). A wrong transform, tile
// edge or channel group is off by O(1).
const TOL_BF16 = { forward: 1e-2, backwardData: 1e-2, dw: 1.5e-2, db: 1e-6 };
const OURS_BF16 = /^wino_2x3_bf16:avx512_core_bf16 \(vggnet\)$/;
const whyNotBf16 =
  isa !== 'avx512_core_bf16'
    ? `our bf16 Winograd runs on avx512_core_bf16 CPUs, this CPU's oneDNN runs ${isa}`
    : !ops.cpuIsaInfo().bf16 || ops.cpuIsaInfo().bf16Layout !== 'nchw16c'
      ? 'native bf16 with nchw16c activations is off here (VGGNET_CPU_BF16)'
      : off
        ? 'VGGNET_CPU_WINOGRAD=0'
        : null;
if (whyNotBf16) console.log(`skipping the tests of our bf16 Winograd: ${whyNotBf16}`);

(whyNotBf16 ? describe.skip : describe)('our bf16 Winograd convolutions (avx512_core_bf16)', () => {
  const bf16 = (data: ArrayLike<number>, shape: number[]) => keep(ops.cast(T(data, shape, 'nchw16c'), 'bfloat16'));

  describe("accuracy, on every layer it can take (setCpuWinograd('avx2'))", () => {
    beforeAll(() => setCpuWinograd('avx2'));
    afterAll(() => setCpuWinograd('auto'));
    // Odd maps leave partial 2×2 tiles on the right and bottom; 1×3 and 2×2 maps are mostly padding; 48 and 80
    // channels are three and five 16-channel groups.
    const cases: { xs: R.Shape4; k: number }[] = [
      { xs: [2, 32, 9, 11], k: 48 },
      { xs: [3, 80, 7, 5], k: 32 },
      { xs: [2, 16, 1, 3], k: 16 },
      { xs: [1, 64, 2, 2], k: 16 },
      { xs: [2, 256, 6, 6], k: 64 },
    ];
    for (const { xs, k } of cases)
      test(`[${xs}] -> ${k}: forward (bias, relu), backward data, backward weights (+accumulate) against float64`, () => {
        const ws: R.Shape4 = [k, xs[1], 3, 3];
        const x = roundBf16(uniform(numel(xs))), w = uniform(numel(ws), -0.05, 0.05), b = uniform(k);
        const ref = R.convForward(x, xs, w, ws, b, P1, true);
        const dy = roundBf16(uniform(numel(ref.shape)));
        ops.cpuKernelsUsed(); // clear
        const y = keep(ops.conv2dForward(bf16(x, xs), T(w, ws), T(b, [k]), P1, true));
        const dx = keep(ops.conv2dBackwardData(bf16(dy, ref.shape), T(w, ws), xs, P1));
        const dw = T(new Float32Array(numel(ws)), ws), db = T(new Float32Array(k), [k]);
        ops.conv2dBackwardWeights(bf16(x, xs), bf16(dy, ref.shape), P1, dw, db, false);
        expect([y.dtype, y.layout, dx.dtype, dx.layout]).toEqual(['bfloat16', 'nchw16c', 'bfloat16', 'nchw16c']);
        const kernels = convKernels();
        expect(kernels.conv2d_forward).toMatch(OURS_BF16);
        expect(kernels.conv2d_backward_data).toMatch(OURS_BF16);
        expect(kernels.conv2d_backward_weights).toMatch(OURS_BF16);

        const g = R.convBackwardWeights(x, xs, dy, ws, P1);
        const errs = {
          forward: relErr(arr(y), ref.y),
          backwardData: relErr(arr(dx), R.convBackwardData(dy, w, ws, xs, P1)),
          dw: relErr(arr(dw), g.dw),
          db: relErr(arr(db), g.db),
        };
        ops.conv2dBackwardWeights(bf16(x, xs), bf16(dy, ref.shape), P1, dw, db, true);
        const acc = { dw: relErr(arr(dw), g.dw.map((v) => 2 * v)), db: relErr(arr(db), g.db.map((v) => 2 * v)) };
        console.log(`our bf16 Winograd [${xs}] -> ${k}: relative error ${JSON.stringify(errs)}, accumulated ${JSON.stringify(acc)}`);
        for (const [what, e] of Object.entries({ ...errs, dwAccumulated: acc.dw, dbAccumulated: acc.db })) {
          const tol = TOL_BF16[what.replace('Accumulated', '') as keyof typeof TOL_BF16];
          if (!(e <= tol)) throw new Error(`${what}: relative error ${e} exceeds ${tol}`);
        }
      });
  });

  /** The kernel each direction ran for one bf16 (or float32) layer under the default rule. */
  function kernels(xs: R.Shape4, k: number, p: typeof P1 = P1, dtype: 'bfloat16' | 'float32' = 'bfloat16') {
    const ws: R.Shape4 = [k, xs[1], 3, 3];
    const x = T(uniform(numel(xs)), xs, 'nchw16c');
    const xa = dtype === 'bfloat16' ? keep(ops.cast(x, 'bfloat16')) : x;
    const w = T(uniform(numel(ws), -0.05, 0.05), ws);
    ops.cpuKernelsUsed();
    const y = keep(ops.conv2dForward(xa, w, null, p, false));
    keep(ops.conv2dBackwardData(y, w, xs, p));
    ops.conv2dBackwardWeights(xa, y, p, T(new Float32Array(numel(ws)), ws), null, false);
    const kk = convKernels();
    const ours = (d: string) => OURS_BF16.test(kk[d] ?? '');
    return { forward: ours('conv2d_forward'), backwardData: ours('conv2d_backward_data'), backwardWeights: ours('conv2d_backward_weights') };
  }
  const all = { forward: true, backwardData: true, backwardWeights: true };
  const weightsOnly = { forward: false, backwardData: false, backwardWeights: true };
  const none = { forward: false, backwardData: false, backwardWeights: false };

  test('the rule: wide layers on 7²-56² maps, forward and backward-data from 512² positions × channels', () => {
    expect(kernels([4, 256, 16, 16], 256)).toEqual(all); // 1024 positions × 256
    expect(kernels([4, 512, 8, 8], 512)).toEqual(weightsOnly); // 256 × 512
    expect(kernels([8, 512, 8, 8], 512)).toEqual(all); // 512 × 512
    expect(kernels([2, 512, 27, 27], 256)).toEqual(all);
    expect(kernels([1, 256, 7, 9], 256)).toEqual(weightsOnly);
    expect(kernels([8, 512, 6, 6], 512)).toEqual(none); // 6² maps
    expect(kernels([1, 256, 28, 28], 256)).toEqual(weightsOnly); // 784 × 256
    expect(kernels([2, 256, 28, 28], 256)).toEqual(all); // in place of the emulated f32 Winograd
    expect(kernels([1, 256, 57, 57], 256)).toEqual(none); // maps over 56²
    expect(kernels([4, 128, 16, 16], 256)).toEqual(none); // 128 input channels
    expect(kernels([4, 256, 16, 16], 256, { strideH: 2, strideW: 2, padH: 1, padW: 1 })).toEqual(none);
    expect(kernels([4, 256, 16, 16], 256, P1, 'float32')).toEqual(none);
  });

  test("setCpuWinograd('off') turns it off, and back on", () => {
    setCpuWinograd('off');
    try {
      expect(kernels([4, 256, 16, 16], 256)).toEqual(none);
    } finally {
      setCpuWinograd('auto');
    }
    expect(kernels([4, 256, 16, 16], 256)).toEqual(all);
  });
});
