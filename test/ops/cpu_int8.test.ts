// int8 inference on the CPU (native/cpu/int8.cc, lib/models/int8.ts):
//   1. the ops against float64 references: quantize/dequantize (round to nearest, clamp to [0, 255]), per-channel
//      weight quantization, the u8 × s8 convolution on the quantized operands (exact int32 sums, so only the float
//      rescale rounds: 1e-6 of the max-abs), its uint8 output (within half a step), the uint8 max pool (exact);
//   2. Int8VGG on a batch-normed network against the float32 model: logits within the stated tolerance, the scales
//      round-trip through fromScales, and bad input is refused with a message.
import { Tensor } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { noGrad } from '../../lib/nn/module';
import { BatchNorm2d } from '../../lib/nn/layers';
import { Int8VGG } from '../../lib/models/int8';
import * as R from '../ref/naive';
import { uniformSource, mulberry32 } from '../ref/random';
import { disposeKeptAfterEach, expectClose, keep } from '../helpers/tensors';
import { randomBatch } from '../helpers/tiny';
import { VGGNet } from '../../lib/models/vgg';

const uniform = uniformSource(808);
disposeKeptAfterEach();
const f32 = (data: Float32Array, shape: number[]) => keep(Tensor.from(data, shape, { device: 'cpu' }));

describe('int8 ops', () => {
  test('quantize: x / scale rounded to nearest, clamped to [0, 255] or [-128, 127], nhwc; dequantizeU8: q * scale', () => {
    const shape = [2, 5, 3, 4];
    const x = uniform(120, -1, 4);
    x[0] = 100; // saturates
    x[1] = -3; // clamps to 0
    const scale = 3 / 255;
    for (const layout of ['nchw', 'nhwc'] as const) {
      const q = keep(ops.quantize(keep(Tensor.from(x, shape, { layout })), scale));
      expect(q.dtype).toBe('uint8');
      expect(q.layout).toBe('nhwc');
      const qa = q.toArray() as Uint8Array;
      for (let i = 0; i < x.length; i++) {
        const want = Math.min(255, Math.max(0, x[i] / scale));
        // round to nearest: within half a step (+ float32's rounding of x * (1/scale) at a .5 tie)
        expect(Math.abs(qa[i] - want)).toBeLessThanOrEqual(0.5 + 1e-5);
      }
      expect(qa[0]).toBe(255);
      expect(qa[1]).toBe(0);
      const d = keep(ops.dequantizeU8(q, scale));
      expect(d.dtype).toBe('float32');
      const da = d.toArray() as Float32Array;
      for (let i = 0; i < qa.length; i++) expect(da[i]).toBe(Math.fround(qa[i] * Math.fround(scale)));
      const s8 = keep(ops.quantize(keep(Tensor.from(x, shape, { layout })), scale, 'int8'));
      expect(s8.dtype).toBe('int8');
      expect(s8.layout).toBe('nhwc');
      const sa = s8.toArray() as Int8Array;
      for (let i = 0; i < x.length; i++) expect(Math.abs(sa[i] - Math.min(127, Math.max(-128, x[i] / scale)))).toBeLessThanOrEqual(0.5 + 1e-5);
      expect(sa[0]).toBe(127);
      expect(sa[1]).toBe(-128);
    }
  });

  test('quantizeConvWeights: per output channel, scale max|w| / int8WeightMax(), q within half a step', () => {
    const K = 6, C = 4;
    const w = uniform(K * C * 9, -0.3, 0.3);
    for (let i = 0; i < C * 9; i++) w[2 * C * 9 + i] = 0; // an all-zero channel
    for (let i = 0; i < C * 9; i++) w[3 * C * 9 + i] *= 100; // a large one
    const { q, scales } = ops.quantizeConvWeights(f32(w, [K, C, 3, 3]));
    keep(q);
    keep(scales);
    expect(q.dtype).toBe('int8');
    const qmax = ops.int8WeightMax();
    expect([63, 127]).toContain(qmax);
    const qa = q.toArray() as Int8Array, sa = scales.toArray() as Float32Array;
    for (let k = 0; k < K; k++) {
      const row = w.subarray(k * C * 9, (k + 1) * C * 9);
      const m = Math.max(...row.map(Math.abs));
      if (m === 0) {
        expect(sa[k]).toBe(1);
      } else {
        expect(sa[k]).toBeCloseTo(m / qmax, 6);
        expect(Math.max(...qa.subarray(k * C * 9, (k + 1) * C * 9).map(Math.abs))).toBe(qmax);
      }
      for (let i = 0; i < row.length; i++) expect(Math.abs(qa[k * C * 9 + i] * sa[k] - row[i])).toBeLessThanOrEqual(sa[k] / 2 + 1e-7);
    }
    expect(() => ops.quantizeConvWeights(f32(new Float32Array([NaN, 1]), [1, 2, 1, 1]))).toThrow(/NaN or an infinity/);
  });

  // The u8 × s8 convolution against float64 on the quantized operands, several shapes and paddings.
  const cases: { xs: R.Shape4; K: number; k: number; p: R.ConvP }[] = [
    { xs: [2, 16, 9, 9], K: 32, k: 3, p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
    { xs: [1, 24, 7, 6], K: 8, k: 3, p: { strideH: 2, strideW: 2, padH: 0, padW: 0 } },
    { xs: [3, 64, 2, 2], K: 48, k: 3, p: { strideH: 1, strideW: 1, padH: 1, padW: 1 } },
    { xs: [2, 8, 5, 5], K: 16, k: 1, p: { strideH: 1, strideW: 1, padH: 0, padW: 0 } },
  ];
  test.each(cases)('int8Conv2dForward $xs K=$K k=$k: float64 on the quantized operands', ({ xs, K, k, p }) => {
    const [N, C, H, W] = xs;
    const xScale = 2 / 255;
    const q = keep(ops.quantize(f32(uniform(N * C * H * W, 0, 2), xs), xScale));
    const xq = Float64Array.from(q.toArray() as Uint8Array, (v) => v * xScale);
    const wq = ops.quantizeConvWeights(f32(uniform(K * C * k * k, -0.2, 0.2), [K, C, k, k]));
    keep(wq.q);
    keep(wq.scales);
    const qa = wq.q.toArray() as Int8Array, sa = wq.scales.toArray() as Float32Array;
    const per = C * k * k;
    const wDeq = Float64Array.from(qa, (v, i) => v * sa[Math.floor(i / per)]);
    const b = uniform(K, -0.5, 0.5);
    for (const relu of [false, true]) {
      const ref = R.convForward(xq, xs, wDeq, [K, C, k, k], b, p, relu);
      const y = keep(ops.int8Conv2dForward(q, xScale, wq, f32(b, [K]), p, 0, relu));
      expect(y.dtype).toBe('float32');
      expect(y.shape).toEqual(ref.shape);
      expectClose(y.toArray() as Float32Array, ref.y, 1e-6, `int8 conv f32 out relu=${relu}`);
      if (!relu) continue;
      // uint8 output: the same values quantized with yScale, within half a step (plus the f32 rescale's rounding)
      const yScale = Math.max(...ref.y) / 200; // some values saturate at 255
      const y8 = keep(ops.int8Conv2dForward(q, xScale, wq, f32(b, [K]), p, yScale, true));
      expect(y8.dtype).toBe('uint8');
      expect(y8.layout).toBe('nhwc');
      const a8 = y8.toArray() as Uint8Array;
      for (let i = 0; i < a8.length; i++) {
        const want = Math.min(255, ref.y[i] / yScale);
        expect(Math.abs(a8[i] - want)).toBeLessThanOrEqual(0.5 + 1e-4);
      }
    }
    // without a bias
    const ref0 = R.convForward(xq, xs, wDeq, [K, C, k, k], null, p, false);
    expectClose(keep(ops.int8Conv2dForward(q, xScale, wq, null, p, 0, false)).toArray() as Float32Array, ref0.y, 1e-6, 'int8 conv without bias');
    // the weights were reordered once and kept in wq.prepared, which later calls of this shape reuse
    expect(wq.prepared?.dtype).toBe('int8');
    keep(wq.prepared!);
    const before = wq.prepared;
    expectClose(keep(ops.int8Conv2dForward(q, xScale, wq, null, p, 0, false)).toArray() as Float32Array, ref0.y, 1e-6, 'int8 conv, prepared weights');
    expect(wq.prepared).toBe(before);
  });

  test('prepared weights of another shape are not used: the call reorders afresh', () => {
    const C = 16, K = 32, p = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
    const wq: ops.Int8ConvWeights = ops.quantizeConvWeights(f32(uniform(K * C * 9, -0.2, 0.2), [K, C, 3, 3]));
    keep(wq.q);
    keep(wq.scales);
    const qa = wq.q.toArray() as Int8Array, sa = wq.scales.toArray() as Float32Array;
    const wDeq = Float64Array.from(qa, (v, i) => v * sa[Math.floor(i / (C * 9))]);
    // a bogus prepared tensor of the right size is refused by its header, as is one made for another batch shape
    for (const xs of [[4, C, 16, 16], [1, C, 3, 3], [4, C, 16, 16]] as R.Shape4[]) {
      const q = keep(ops.quantize(f32(uniform(xs[0] * C * xs[2] * xs[3], 0, 1), xs), 1 / 255));
      const xq = Float64Array.from(q.toArray() as Uint8Array, (v) => v / 255);
      const ref = R.convForward(xq, xs, wDeq, [K, C, 3, 3], null, p, false);
      const y = keep(ops.int8Conv2dForward(q, 1 / 255, wq, null, p, 0, false));
      expectClose(y.toArray() as Float32Array, ref.y, 1e-6, `int8 conv ${xs} after another shape's prepared weights`);
      keep(wq.prepared!);
      const bogus = keep(Tensor.from(new Int8Array(wq.prepared!.numel).fill(1), [wq.prepared!.numel]));
      const y2 = keep(ops.int8Conv2dForward(q, 1 / 255, { ...wq, prepared: bogus }, null, p, 0, false));
      expectClose(y2.toArray() as Float32Array, ref.y, 1e-6, 'int8 conv with a bogus prepared tensor');
    }
  });

  test('int8 (signed) input: float64 on the quantized operands, the largest products exact', () => {
    const xs: R.Shape4 = [2, 3, 10, 9], K = 16, p = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
    const xScale = 2.5 / 127;
    const q = keep(ops.quantize(f32(uniform(2 * 3 * 90, -2.5, 2.5), xs), xScale, 'int8'));
    const xq = Float64Array.from(q.toArray() as Int8Array, (v) => v * xScale);
    const wq = ops.quantizeConvWeights(f32(uniform(K * 27, -0.5, 0.5), [K, 3, 3, 3]));
    keep(wq.q);
    keep(wq.scales);
    const qa = wq.q.toArray() as Int8Array, sa = wq.scales.toArray() as Float32Array;
    const wDeq = Float64Array.from(qa, (v, i) => v * sa[Math.floor(i / 27)]);
    const b = uniform(K, -0.5, 0.5);
    const ref = R.convForward(xq, xs, wDeq, [K, 3, 3, 3], b, p, true);
    const y = keep(ops.int8Conv2dForward(q, xScale, wq, f32(b, [K]), p, 0, true));
    // Exact sums with VNNI. Without it oneDNN halves the weights of an s8 × s8 convolution in their reorder (its
    // guard against int16 saturation), rounding away a bit: 2.3 % of the max-abs here under ONEDNN_MAX_CPU_ISA=AVX2
    // and =AVX512_CORE, which is why Int8VGG runs the first conv in float32 on such CPUs.
    const vnni = ops.int8WeightMax() === 127;
    expectClose(y.toArray() as Float32Array, ref.y, vnni ? 1e-6 : 0.05, 'int8 conv, signed input');
    keep(wq.prepared!);
    // extremes, with VNNI: -128 and 127 inputs against ±int8WeightMax() weights, 64 channels (s8 × s8 products and
    // oneDNN's compensation for the signed input)
    const C = 64, qmax = ops.int8WeightMax();
    for (const v of vnni ? [-128, 127] : []) {
      const xe = keep(Tensor.from(new Int8Array(C * 4).fill(v), [1, C, 2, 2], { layout: 'nhwc' }));
      const w = new Int8Array(2 * C).fill(qmax);
      w.fill(-qmax, C);
      const we: ops.Int8ConvWeights = { q: keep(Tensor.from(w, [2, C, 1, 1])), scales: f32(new Float32Array(2).fill(1), [2]) };
      const ye = keep(ops.int8Conv2dForward(xe, 1, we, null, { strideH: 1, strideW: 1, padH: 0, padW: 0 }, 0, false));
      keep(we.prepared!);
      const a = ye.toArray() as Float32Array;
      expect(Array.from(a)).toEqual([...new Array(4).fill(v * qmax * C), ...new Array(4).fill(-v * qmax * C)]);
    }
  });

  test('the largest products sum exactly: 255 × ±int8WeightMax() over 64 channels (no int16 saturation)', () => {
    // Without VNNI oneDNN sums pairs of u8 × s8 products in int16 with saturation: 16 channels of 255 × 127 summed
    // to 262136 instead of 518160 under ONEDNN_MAX_CPU_ISA=AVX512_CORE and =AVX2 (on a Zen 5), hence 63 there.
    const C = 64, K = 2, qmax = ops.int8WeightMax();
    const x = keep(ops.quantize(f32(new Float32Array(C * 9).fill(1), [1, C, 3, 3]), 1 / 255));
    const w = new Int8Array(K * C).fill(qmax);
    w.fill(-qmax, C); // second output channel: all negative
    const wq: ops.Int8ConvWeights = { q: keep(Tensor.from(w, [K, C, 1, 1])), scales: f32(new Float32Array(K).fill(1), [K]) };
    const y = keep(ops.int8Conv2dForward(x, 1, wq, null, { strideH: 1, strideW: 1, padH: 0, padW: 0 }, 0, false));
    const a = y.toArray() as Float32Array; // nchw order: channel 0's 9 values, then channel 1's
    expect(Array.from(a.subarray(0, 9))).toEqual(new Array(9).fill(255 * qmax * C));
    expect(Array.from(a.subarray(9))).toEqual(new Array(9).fill(-255 * qmax * C));
  });

  test('uint8 max pool: exact, nhwc in and out; no backward', () => {
    const xs: R.Shape4 = [2, 8, 6, 7];
    const q = keep(ops.quantize(f32(uniform(2 * 8 * 6 * 7, 0, 1), xs), 1 / 255));
    const qa = Float64Array.from(q.toArray() as Uint8Array);
    for (const [k, s] of [[2, 2], [3, 2]]) {
      const y = keep(ops.maxpool2dForward(q, { kernel: k, stride: s, pad: 0 }, false).y);
      expect(y.dtype).toBe('uint8');
      expect(y.layout).toBe('nhwc');
      expect(Array.from(y.toArray() as Uint8Array)).toEqual(Array.from(R.maxpoolForward(qa, xs, k, s, 0).y));
    }
    expect(() => ops.maxpool2dForward(q, { kernel: 2, stride: 2, pad: 0 }, true)).toThrow(/uint8 input \(int8 inference\) has no backward/);
  });

  test('int8LinearForward: float64 on the quantized operands, (N, K) and flattened (N, K, 1, 1) input', () => {
    const N = 3, K = 40, M = 12, xScale = 1.5 / 255;
    const q = keep(ops.quantize(f32(uniform(N * K, 0, 1.5), [N, K, 1, 1]), xScale));
    const xq = Float64Array.from(q.toArray() as Uint8Array, (v) => v * xScale);
    const wq = ops.quantizeConvWeights(f32(uniform(M * K, -0.3, 0.3), [M, K, 1, 1]));
    keep(wq.q);
    keep(wq.scales);
    const qa = wq.q.toArray() as Int8Array, sa = wq.scales.toArray() as Float32Array;
    const wDeq = Float64Array.from(qa, (v, i) => v * sa[Math.floor(i / K)]);
    const b = uniform(M, -0.5, 0.5);
    for (const relu of [false, true]) {
      const ref = R.linearForward(xq, N, K, wDeq, M, b, relu);
      const y = keep(ops.int8LinearForward(q, xScale, wq, f32(b, [M]), 0, relu));
      keep(wq.prepared!);
      expect(y.shape).toEqual([N, M]);
      expectClose(y.toArray() as Float32Array, ref, 1e-6, `int8 linear relu=${relu}`);
      if (!relu) continue;
      const yScale = Math.max(...ref) / 200;
      const y8 = keep(ops.int8LinearForward(q, xScale, wq, f32(b, [M]), yScale, true));
      expect(y8.dtype).toBe('uint8');
      const a8 = y8.toArray() as Uint8Array;
      for (let i = 0; i < a8.length; i++) expect(Math.abs(a8[i] - Math.min(255, ref[i] / yScale))).toBeLessThanOrEqual(0.5 + 1e-4);
    }
    expect(() => ops.int8LinearForward(f32(uniform(N * K), [N, K]), xScale, wq, null, 0, false)).toThrow(/input must be uint8/);
    const q2 = keep(ops.quantize(f32(uniform(N * 8, 0, 1), [N, 8, 1, 1]), xScale));
    expect(() => ops.int8LinearForward(q2, xScale, wq, null, 0, false)).toThrow(/input has 8 features, weight expects 40/);
  });

  test('int8Flatten: an nhwc map as (N, H·W·C, 1, 1) in (h, w, c) order, sharing its bytes', () => {
    const xs: R.Shape4 = [2, 3, 2, 2];
    const v = Float32Array.from({ length: 24 }, (_, i) => i);
    const q = keep(ops.quantize(f32(v, xs), 1));
    const flat = keep(ops.int8Flatten(q));
    expect(flat.shape).toEqual([2, 12, 1, 1]);
    // element (n, (h*W + w)*C + c) of the flat tensor is x[n, c, h, w]
    const a = flat.toArray() as Uint8Array;
    for (let n = 0; n < 2; n++) for (let c = 0; c < 3; c++) for (let p = 0; p < 4; p++) expect(a[n * 12 + p * 3 + c]).toBe(v[n * 12 + c * 4 + p]);
    expect(() => ops.int8Flatten(f32(v, xs))).toThrow(/uint8 or int8/);
  });

  test('bad arguments are refused with a message', () => {
    const x = f32(uniform(2 * 4 * 5 * 5, 0, 1), [2, 4, 5, 5]);
    const q = keep(ops.quantize(x, 0.01));
    const wq = ops.quantizeConvWeights(f32(uniform(8 * 4 * 9), [8, 4, 3, 3]));
    keep(wq.q);
    keep(wq.scales);
    const p = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
    expect(() => ops.quantize(x, 0)).toThrow(/expected a finite scale > 0, got 0/);
    expect(() => ops.quantize(x, NaN)).toThrow(/finite/);
    expect(() => ops.dequantizeU8(x, 1)).toThrow(/uint8/);
    expect(() => ops.int8Conv2dForward(x, 0.01, wq, null, p, 0, false)).toThrow(/input must be uint8 or int8/);
    expect(() => ops.int8Conv2dForward(q, 0.01, { q: x, scales: wq.scales }, null, p, 0, false)).toThrow(/weight must be int8/);
    expect(() => ops.int8Conv2dForward(q, 0.01, wq, null, p, -1, false)).toThrow(/output scale/);
    expect(() => ops.int8Conv2dForward(q, 0.01, { q: wq.q, scales: f32(new Float32Array(8).fill(0), [8]) }, null, p, 0, false)).toThrow(/weight scale 0 must be finite and > 0/);
    const wrongC = ops.quantizeConvWeights(f32(uniform(8 * 3 * 9), [8, 3, 3, 3]));
    keep(wrongC.q);
    keep(wrongC.scales);
    expect(() => ops.int8Conv2dForward(q, 0.01, wrongC, null, p, 0, false)).toThrow(/4 channels, weight expects 3/);
    expect(() => ops.absMax(keep(ops.quantize(x, 1)))).toThrow(/float32 or bfloat16|float/);
    expect(ops.absMax(f32(new Float32Array([1, -7, 3]), [3]))).toBe(7);
    expect(ops.absMax(f32(new Float32Array([1, NaN, 3]), [3]))).toBeNaN();
  });
});

describe('Int8VGG', () => {
  // Logits against the float32 model, of its max-abs. Measured on these networks (random inputs): 0.4-0.8 % with
  // 8-bit weights (VNNI), 0.9-1.4 % with 7-bit ones and the first conv in float32 (ONEDNN_MAX_CPU_ISA=AVX2 or
  // AVX512_CORE on the same Zen 5), 0.16 % where the classifier runs in float32 (8×8 map); a wrong fold, scale,
  // layout or column order is off by tens of percent.
  const TOL = 0.025;
  /**
   * A batch-normed small VGG (32-128 channels, PyTorch's default init) in eval mode, with non-trivial running
   * statistics and affine parameters so that the fold matters.
   */
  function trainedLike(seed: number, batchNorm = true) {
    const m = new VGGNet([32, 'M', 64, 'M', 64, 64, 'M', 128, 'M', 128, 'M'], {
      batchNorm, numClasses: 10, hiddenFeatures: 64, dropout: 0, initWeights: false, seed, device: 'cpu', precision: 'fp32',
    });
    const rand = mulberry32(seed);
    for (const l of m.features.layers) {
      if (!(l instanceof BatchNorm2d)) continue;
      const c = l.numFeatures;
      const add = (t: Tensor, lo: number, hi: number) => {
        const v = Tensor.from(Float32Array.from({ length: c }, () => lo + (hi - lo) * rand()), [c]);
        ops.add_(t, v, 1);
        v.dispose();
      };
      add(l.runningMean, -0.3, 0.3);
      add(l.runningVar, 0.5, 2); // 1 + [0.5, 2)
      add(l.weight.value, -0.5, 0.5);
      add(l.bias.value, 0, 0.4);
    }
    m.eval();
    return m;
  }

  test('logits within 2.5 % of the float32 model\'s max-abs; scales round-trip', async () => {
    const m = trainedLike(3);
    const cal = [randomBatch(16, 1).x, randomBatch(16, 2).x];
    const q = await Int8VGG.calibrate(m, cal);
    const x = randomBatch(8, 9).x;
    try {
      expect(q.scales.activations).toHaveLength(6);
      expect(q.scales.channels).toEqual([32, 64, 64, 64, 128, 128]);
      expect(q.scales.classifier).toHaveLength(2); // the two hidden linear layers run in int8 too
      const ref = noGrad(() => m.forward(x));
      const got = q.forward(x);
      const r = ref.toArray() as Float32Array, g = got.toArray() as Float32Array;
      ref.dispose();
      got.dispose();
      expectClose(g, r, TOL, 'int8 logits vs float32');
      // the same scales give the same model
      const again = Int8VGG.fromScales(m, JSON.parse(JSON.stringify(q.scales)));
      const g2 = again.forward(x);
      expect(Array.from(g2.toArray() as Float32Array)).toEqual(Array.from(g));
      g2.dispose();
      again.dispose();
      const probs = q.predict(x);
      expect(probs).toHaveLength(8);
      for (const p of probs) expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    } finally {
      for (const t of [...cal, x]) t.dispose();
      q.dispose();
      m.dispose();
    }
  });

  test('feature maps of 1×1 (classifier folded with the pool), 7×7 (no pool) and 8×8 (float32 head): within 2.5 %', async () => {
    const m = trainedLike(5);
    const q = await Int8VGG.calibrate(m, [randomBatch(4, 1, 5, 224).x, randomBatch(8, 2).x]);
    try {
      for (const size of [32, 224, 256]) {
        const x = randomBatch(2, 7, 5, size).x;
        const ref = noGrad(() => m.forward(x));
        const got = q.forward(x);
        expectClose(got.toArray() as Float32Array, ref.toArray() as Float32Array, TOL, `int8 logits at ${size}²`);
        for (const t of [x, ref, got]) t.dispose();
      }
    } finally {
      q.dispose();
      m.dispose();
    }
  }, 60_000);

  test('refuses scales of another network, no calibration images, and use after dispose', async () => {
    const m = trainedLike(4);
    const other = trainedLike(4, false);
    const cal = randomBatch(4, 1).x;
    try {
      const q = await Int8VGG.calibrate(m, [cal]);
      expect(() => Int8VGG.fromScales(other, q.scales)).toThrow(/they are for vgg_bn with conv widths \[32,64,64,64,128,128\], the model is vgg with/);
      expect(() => Int8VGG.fromScales(m, { ...q.scales, activations: q.scales.activations.slice(1) })).toThrow(/5 activation scales for 6 convs/);
      expect(() => Int8VGG.fromScales(m, { ...q.scales, activations: q.scales.activations.map(() => -1) })).toThrow(/finite number > 0/);
      expect(() => Int8VGG.fromScales(m, { ...q.scales, input: NaN })).toThrow(/a scale is not a finite number > 0/);
      await expect(Int8VGG.calibrate(m, [])).rejects.toThrow(/no calibration images/);
      q.dispose();
      expect(() => q.forward(cal)).toThrow(/disposed/);
    } finally {
      cal.dispose();
      m.dispose();
      other.dispose();
    }
  });
});
