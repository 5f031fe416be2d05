// Linear weights converted once for bf16 activations (ops.linearWeights, PreparedLinearWeights): what the conversion
// gives (against an independent bf16 rounding), that the ops compute bit for bit what they compute from the float32
// weights, and when layers make, reuse and drop them: once per training step (forward and its backward), once per
// VGGNet.withFrozenWeights scope, never across a change of the weights.
import { Tensor } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { addon } from '../../lib/native';
import { VGGNet } from '../../lib/models/vgg';
import { isGradEnabled, noGrad } from '../../lib/nn/module';
import { Linear } from '../../lib/nn/layers';
import { Rng } from '../../lib/random';
import { randomBatch, TINY_CFG } from '../helpers/tiny';
import { roundBf16 } from '../ref/bf16';
import { disposeKeptAfterEach, keep } from '../helpers/tensors';

const device = (process.env.VGGNET_DEVICE as 'cpu' | 'cuda' | undefined) ?? 'cpu';
// The dtype the prepared weights have: the GPU and CPUs with bf16 kernels compute on bf16 weights, the other CPUs
// emulate bf16 on float32 weights rounded to bf16 (native/cpu/common.h, Bf16Path).
const preparedDtype = device === 'cuda' || ops.cpuIsaInfo().bf16 ? 'bfloat16' : 'float32';
disposeKeptAfterEach();
afterEach(() => jest.restoreAllMocks());

const rng = new Rng(77);
const f32 = (n: number, shape: number[], scale = 1) =>
  keep(Tensor.from(rng.fillNormal(new Float32Array(n), 0, scale), shape, { device }));
const bf16 = (n: number, shape: number[]) => keep(ops.cast(f32(n, shape), 'bfloat16'));
const vals = (t: Tensor) => Array.from(t.toArray() as Float32Array);
/** ops.linearWeights, its tensor disposed after the test (keep). */
const prepare = (w: Tensor, dtype: 'bfloat16' | 'float32') => {
  const p = ops.linearWeights(w, dtype);
  keep(p.tensor);
  return p;
};
/** Bit patterns, so that equality also tells -0 from 0. */
const bits = (t: Tensor) => Array.from(new Uint32Array(Float32Array.from(t.toArray() as Float32Array).buffer));

describe('ops.linearWeights and the linear ops on prepared weights', () => {
  const N = 4, K = 70, M = 9;

  test('bf16: the weights rounded to bf16 (ties to even), in the dtype this device computes with', () => {
    // values at and around bf16 ties, so that truncation or ties-away would differ
    const w = f32(M * K, [M, K]);
    const edge = Float32Array.from(vals(w));
    edge[0] = 1 + 2 ** -8; // a tie: stays 1
    edge[1] = 1 + 3 * 2 ** -8; // a tie: goes to even, 1 + 2^-6
    edge[2] = -(1 + 2 ** -8 + 2 ** -20); // above the tie: away from zero
    const W = keep(Tensor.from(edge, [M, K], { device }));
    const p = prepare(W, 'bfloat16');
    expect(p.dtype).toBe('bfloat16');
    expect(p.tensor.dtype).toBe(preparedDtype);
    expect(p.tensor.shape).toEqual([M, K]);
    expect(bits(p.tensor)).toEqual(Array.from(new Uint32Array(roundBf16(edge).buffer)));
  });

  test('float32: the weights as they are', () => {
    const W = f32(M * K, [M, K]);
    const p = prepare(W, 'float32');
    expect(p.tensor.dtype).toBe('float32');
    expect(bits(p.tensor)).toEqual(bits(W));
    p.dispose();
    expect(W.toArray()).toHaveLength(M * K); // disposing the prepared handle left the weights alive
  });

  test.each(['bfloat16', 'float32'] as const)('%s: forward (bias, relu) and backward data equal the ops on the float32 weights bit for bit', (dt) => {
    const W = f32(M * K, [M, K], 0.3), b = f32(M, [M]);
    const x = dt === 'bfloat16' ? bf16(N * K, [N, K]) : f32(N * K, [N, K]);
    const dy = dt === 'bfloat16' ? bf16(N * M, [N, M]) : f32(N * M, [N, M]);
    const p = prepare(W, dt);
    for (const relu of [false, true]) {
      const want = keep(ops.linearForward(x, W, b, relu)), got = keep(ops.linearForward(x, p, b, relu));
      expect(got.dtype).toBe(dt);
      expect(bits(got)).toEqual(bits(want));
    }
    const want = keep(ops.linearBackwardData(dy, W)), got = keep(ops.linearBackwardData(dy, p));
    expect(got.dtype).toBe(dt);
    expect(bits(got)).toEqual(bits(want));
  });

  test('refuses weights prepared for another dtype, and a prepared tensor of the wrong dtype', () => {
    const W = f32(M * K, [M, K]);
    const p = prepare(W, 'bfloat16');
    expect(() => ops.linearForward(f32(N * K, [N, K]), p, null)).toThrow(/prepared for bfloat16 activations, these are float32/);
    expect(() => ops.linearBackwardData(f32(N * M, [N, M]), p)).toThrow(/prepared for bfloat16 activations, these are float32/);
    // the addon itself: a tensor that cannot be what linearWeights made for bf16 activations
    const wrong = keep(ops.cast(W, preparedDtype === 'bfloat16' ? 'float32' : 'bfloat16'));
    const x = bf16(N * K, [N, K]);
    expect(() => addon().linearForward(x.native, wrong.native, null, false, true)).toThrow(/prepared weight/);
    expect(() => addon().linearBackwardData(bf16(N * M, [N, M]).native, wrong.native, true)).toThrow(/prepared weight/);
    // an empty batch too (it returns before any matmul)
    expect(() => addon().linearForward(bf16(0, [0, K]).native, wrong.native, null, false, true)).toThrow(/prepared weight/);
    expect(() => addon().linearBackwardData(bf16(0, [0, M]).native, wrong.native, true)).toThrow(/prepared weight/);
    expect(() => ops.linearWeights(keep(ops.cast(W, 'bfloat16')), 'bfloat16')).toThrow(/linear_weights: weight/);
    expect(() => ops.linearWeights(W, 'int32')).toThrow(/linear_weights: activations must be float32 or bfloat16/);
  });
});

describe('Linear in bf16: one conversion per training step', () => {
  /** Counts ops.linearWeights calls, and which weights each linearBackwardData got. */
  function spies() {
    const prepare = jest.spyOn(ops, 'linearWeights');
    const bwd = ops.linearBackwardData;
    const backwardGot: string[] = [];
    jest.spyOn(ops, 'linearBackwardData').mockImplementation((dy, w) => {
      backwardGot.push(w instanceof ops.PreparedLinearWeights ? 'prepared' : 'tensor');
      return bwd(dy, w);
    });
    return { prepared: () => prepare.mock.calls.length, backwardGot };
  }

  // The step the layer must compute: the ops on its float32 weights (each converting them itself).
  function reference(l: Linear, x: Tensor, dy: Tensor) {
    const y = keep(ops.linearForward(x, l.weight.value, l.bias!.value, false));
    const dx = keep(ops.linearBackwardData(dy, l.weight.value));
    const dw = keep(Tensor.zeros(l.weight.shape, { device })), db = keep(Tensor.zeros([l.outFeatures], { device }));
    ops.linearBackwardWeights(x, dy, dw, db, false);
    return { y: bits(y), dx: bits(dx), dw: bits(dw) };
  }

  test('forward prepares, its backward reuses, the next step prepares again from the changed weights', () => {
    const l = new Linear(33, 7, { device });
    const x = bf16(5 * 33, [5, 33]), dy = bf16(5 * 7, [5, 7]);
    l.weight.value.copy_(f32(7 * 33, [7, 33], 0.3));
    l.bias!.value.copy_(f32(7, [7]));
    const s = spies();
    for (let step = 0; step < 2; step++) {
      // the weights changed in place before each step, as SGD changes them: a stale conversion would show
      if (step > 0) ops.add_(l.weight.value, f32(7 * 33, [7, 33], 0.1));
      const want = noGrad(() => reference(l, x, dy));
      expect(isGradEnabled()).toBe(true);
      const before = s.prepared();
      const y = keep(l.forward(x));
      const dx = keep(l.backward(dy));
      expect(bits(y)).toEqual(want.y);
      expect(bits(dx)).toEqual(want.dx);
      expect(bits(l.weight.grad)).toEqual(want.dw);
      expect(s.prepared() - before).toBe(1);
      l.weight.zeroGrad();
      l.bias!.zeroGrad();
    }
    // per step: the reference's backward on the float32 weights, then the layer's on its prepared ones
    expect(s.backwardGot).toEqual(['tensor', 'prepared', 'tensor', 'prepared']);
    l.dispose();
  });
});

describe('VGGNet.withFrozenWeights in bf16: the classifier converted once per scope', () => {
  const bf16Vgg = (seed: number) => {
    const m = new VGGNet(TINY_CFG, { numClasses: 5, seed, hiddenFeatures: 12, precision: 'bf16', device });
    m.eval();
    return m;
  };
  const logitBits = (m: VGGNet, x: Tensor) => {
    const l = noGrad(() => m.forward(x));
    try {
      return bits(l);
    } finally {
      l.dispose();
    }
  };

  // 224²: 7×7 features, no fold, so the scope's logits are the plain forward's bit for bit
  test('224² input: three layers converted once for all the scope\'s forwards, logits unchanged; dropped after it', () => {
    const m = bf16Vgg(5);
    const { x } = randomBatch(2, 3, 5, 224);
    const plain = logitBits(m, x);
    const prepare = jest.spyOn(ops, 'linearWeights');
    const inside = m.withFrozenWeights(() => [logitBits(m, x), logitBits(m, x), m.withFrozenWeights(() => logitBits(m, x))]);
    expect(prepare).toHaveBeenCalledTimes(3);
    for (const l of inside) expect(l).toEqual(plain);
    logitBits(m, x); // outside the scope each forward converts again
    expect(prepare).toHaveBeenCalledTimes(6);
    x.dispose();
    m.dispose();
  });

  test('32² input: the folded first layer is prepared once too (3 conversions for the scope)', () => {
    const m = bf16Vgg(6);
    const { x } = randomBatch(2, 4);
    const prepare = jest.spyOn(ops, 'linearWeights');
    m.withFrozenWeights(() => {
      logitBits(m, x);
      logitBits(m, x);
    });
    expect(prepare).toHaveBeenCalledTimes(3);
    x.dispose();
    m.dispose();
  });

  test('a forward with gradients and no backward, then the weights changed in place: the scope converts them anew', () => {
    const m = bf16Vgg(8);
    const { x } = randomBatch(2, 5, 5, 224);
    m.train();
    m.forward(x).dispose(); // its Linears keep their conversion for a backward that never comes
    for (const l of m.classifier.layers) if (l instanceof Linear) ops.add_(l.weight.value, f32(l.weight.value.shape[0] * l.inFeatures, l.weight.shape, 0.1));
    m.eval();
    const inside = m.withFrozenWeights(() => logitBits(m, x));
    expect(inside).toEqual(logitBits(m, x)); // outside the scope each forward converts the current weights
    m.releaseSaved();
    x.dispose();
    m.dispose();
  });

  test('loadStateDict inside the scope drops the converted weights: the new ones are used', () => {
    const a = bf16Vgg(1), b = bf16Vgg(2);
    const { x } = randomBatch(2, 9, 5, 224);
    const want = logitBits(b, x);
    const got = a.withFrozenWeights(() => {
      const before = logitBits(a, x);
      a.loadStateDict(b.stateDict());
      return { before, after: logitBits(a, x) };
    });
    expect(got.before).not.toEqual(want);
    expect(got.after).toEqual(want);
    for (const t of [x, a, b]) t.dispose();
  });
});
