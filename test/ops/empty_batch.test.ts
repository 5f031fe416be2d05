// Empty batches (N = 0) through every op, both directions, every layout and activation dtype of the device
// (VGGNET_DEVICE=cpu|cuda): each op returns an empty result of the shape, dtype and layout the same op gives for
// N = 1, and weight gradients are zeros (unchanged when accumulating) — PyTorch's behaviour. Batch norm in training
// and cross-entropy have no value for an empty batch and throw. A zero-size dimension other than the batch is an
// error for conv, pool, batch norm, linear and cross-entropy. Before this, oneDNN died with SIGFPE on N = 0.
import { Tensor, Layout, DType } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { VGGNet, vgg11 } from '../../lib/models/vgg';
import { noGrad } from '../../lib/nn/module';
import { device, describeOnDevice } from '../ref/device';
import { disposeKeptAfterEach, keep } from '../helpers/tensors';

disposeKeptAfterEach();

const LAYOUTS: Layout[] = device === 'cpu' ? ['nchw', 'nhwc', 'nchw8c', 'nchw16c'] : ['nchw', 'nhwc'];
const DTYPES: DType[] = ['float32', 'bfloat16'];
const zeros = (shape: number[], o: { dtype?: DType; layout?: Layout } = {}) => keep(Tensor.zeros(shape, { device, ...o }));
const filled = (shape: number[], v: number) => keep(Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v), shape, { device }));
const conv = (s: number, p: number, cpuBlockedOutput = false): ops.Conv2dParams => ({ strideH: s, strideW: s, padH: p, padW: p, cpuBlockedOutput });
const pool = { kernel: 2, stride: 2, pad: 0 };

/** `empty` is what `one` (the same op on N = 1) is, with a batch of 0. */
function expectEmptyLike(empty: Tensor, one: Tensor): void {
  keep(empty);
  keep(one);
  expect(empty.shape).toEqual([0, ...one.shape.slice(1)]);
  expect(empty.dtype).toBe(one.dtype);
  expect(empty.layout).toBe(one.layout);
  expect(empty.device).toBe(device);
  expect(empty.toArray().length).toBe(0);
}
const values = (t: Tensor) => Array.from(t.toArray() as Float32Array);

describeOnDevice(`empty batches on ${device}`, () => {
  describe.each(DTYPES)('%s activations', (dtype) => {
    describe.each(LAYOUTS)('%s', (layout) => {
      // nchw16c needs channels a multiple of 16; the other layouts run on 8.
      const C = layout === 'nchw16c' ? 16 : 8;
      const act = (n: number, c: number, h: number) => zeros([n, c, h, h], { dtype, layout });

      // 6x6 maps take oneDNN's convolution on the CPU; 2x2 maps the batch-wide GEMM path.
      test.each([6, 2])('conv2d forward (plain, fused ReLU, blocked output), backward data and weights on maps of side %i', (h) => {
        const w = filled([16, C, 3, 3], 0.5), b = filled([16], 1);
        for (const [p, relu] of [[conv(1, 1), false], [conv(1, 1), true], [conv(2, 1, true), true]] as const) {
          expectEmptyLike(ops.conv2dForward(act(0, C, h), w, b, p, relu), ops.conv2dForward(act(1, C, h), w, b, p, relu));
          const y0 = keep(ops.conv2dForward(act(0, C, h), w, b, p, relu)), y1 = keep(ops.conv2dForward(act(1, C, h), w, b, p, relu));
          expectEmptyLike(ops.conv2dBackwardData(y0, w, [0, C, h, h], p), ops.conv2dBackwardData(y1, w, [1, C, h, h], p));
          // Weight gradients of no samples: zeros, or what was there when accumulating.
          const dw = filled([16, C, 3, 3], 7), db = filled([16], 7);
          ops.conv2dBackwardWeights(act(0, C, h), y0, p, dw, db, true);
          expect(new Set(values(dw))).toEqual(new Set([7]));
          expect(new Set(values(db))).toEqual(new Set([7]));
          ops.conv2dBackwardWeights(act(0, C, h), y0, p, dw, db, false);
          expect(new Set(values(dw))).toEqual(new Set([0]));
          expect(new Set(values(db))).toEqual(new Set([0]));
        }
      });

      test('relu, max pool, adaptive average pool, dropout, cast and layout changes, both directions', () => {
        const x0 = act(0, C, 4), x1 = act(1, C, 4);
        expectEmptyLike(ops.reluForward(x0), ops.reluForward(x1));
        expectEmptyLike(ops.reluBackward(x0, x0), ops.reluBackward(x1, x1));
        const p0 = ops.maxpool2dForward(x0, pool, true), p1 = ops.maxpool2dForward(x1, pool, true);
        for (const t of [...p0.saved, ...p1.saved]) keep(t);
        expectEmptyLike(p0.y, p1.y);
        expectEmptyLike(ops.maxpool2dBackward(p0.y, x0, p0.y, pool, p0.saved), ops.maxpool2dBackward(p1.y, x1, p1.y, pool, p1.saved));
        expectEmptyLike(ops.maxpool2dForward(x0, pool, false).y, ops.maxpool2dForward(x1, pool, false).y);
        const a0 = ops.adaptiveAvgpool2dForward(x0, 7, 7), a1 = ops.adaptiveAvgpool2dForward(x1, 7, 7);
        expectEmptyLike(a0, a1);
        expectEmptyLike(ops.adaptiveAvgpool2dBackward(a0, [0, C, 4, 4], layout), ops.adaptiveAvgpool2dBackward(a1, [1, C, 4, 4], layout));
        const d0 = ops.dropoutForward(x0, 0.5, 1, 0, true), d1 = ops.dropoutForward(x1, 0.5, 1, 0, true);
        for (const t of [...d0.saved, ...d1.saved]) keep(t);
        expectEmptyLike(d0.y, d1.y);
        expectEmptyLike(ops.dropoutBackward(d0.y, 0.5, d0.saved), ops.dropoutBackward(d1.y, 0.5, d1.saved));
        const other = dtype === 'float32' ? 'bfloat16' : 'float32';
        expectEmptyLike(ops.cast(x0, other), ops.cast(x1, other));
        expectEmptyLike(ops.toLayout(x0, 'nhwc'), ops.toLayout(x1, 'nhwc'));
        expectEmptyLike(ops.toLayout(x0, 'nchw'), ops.toLayout(x1, 'nchw'));
      });

      test('batch norm: eval forward and backward are empty (gradients zero); training throws like PyTorch', () => {
        const x0 = act(0, C, 4), x1 = act(1, C, 4);
        const g = filled([C], 1), b = filled([C], 0), rm = filled([C], 0.25), rv = filled([C], 2);
        for (const relu of [false, true]) {
          const e0 = ops.batchnormForward(x0, g, b, rm, rv, false, 0.1, 1e-5, true, relu);
          const e1 = ops.batchnormForward(x1, g, b, rm, rv, false, 0.1, 1e-5, true, relu);
          for (const t of [...e0.saved, ...e1.saved]) keep(t);
          expectEmptyLike(e0.y, e1.y);
          const dg = filled([C], 7), db = filled([C], 7);
          const dx = keep(ops.batchnormBackward(e0.y, x0, g, 1e-5, e0.saved, dg, db, true, relu ? e0.y : null));
          expect(dx.shape).toEqual([0, C, 4, 4]);
          expect(new Set(values(dg))).toEqual(new Set([7]));
          keep(ops.batchnormBackward(e0.y, x0, g, 1e-5, e0.saved, dg, db, false, relu ? e0.y : null));
          expect(new Set([...values(dg), ...values(db)])).toEqual(new Set([0]));
        }
        expect(() => ops.batchnormForward(x0, g, b, rm, rv, true, 0.1, 1e-5, true, false)).toThrow(new RegExp(`batchnorm_forward: .*more than (1|one) value per channel.*\\[0,${C},4,4\\]`));
        // The running statistics were not touched by the refused batch.
        expect(values(rm)).toEqual(new Array(C).fill(0.25));
        expect(values(rv)).toEqual(new Array(C).fill(2));
      });
    });

    // A layer the Winograd rule takes on avx512_core (3×3 stride 1 pad 1, 64 channels, 8×8 maps; f32 only), in the
    // blocked and plain layouts: the empty batch must not reach the Winograd primitive either.
    test.each(device === 'cpu' ? ['nchw16c', 'nchw'] as Layout[] : ['nchw'] as Layout[])('conv2d on a Winograd-sized layer (64 channels, 8x8), %s', (layout) => {
      const w = filled([64, 64, 3, 3], 0.5), b = filled([64], 1), p = conv(1, 1, true);
      const x = (n: number) => zeros([n, 64, 8, 8], { dtype, layout });
      const y0 = ops.conv2dForward(x(0), w, b, p, true), y1 = ops.conv2dForward(x(1), w, b, p, true);
      expectEmptyLike(y0, y1);
      expectEmptyLike(ops.conv2dBackwardData(y0, w, [0, 64, 8, 8], p), ops.conv2dBackwardData(y1, w, [1, 64, 8, 8], p));
      const dw = filled([64, 64, 3, 3], 7), db = filled([64], 7);
      ops.conv2dBackwardWeights(x(0), y0, p, dw, db, true);
      expect(new Set([...values(dw), ...values(db)])).toEqual(new Set([7]));
      ops.conv2dBackwardWeights(x(0), y0, p, dw, db, false);
      expect(new Set([...values(dw), ...values(db)])).toEqual(new Set([0]));
    });

    test('linear: forward (with and without ReLU), backward data and weights', () => {
      const w = filled([3, 5], 0.5), b = filled([3], 1);
      const x0 = zeros([0, 5], { dtype }), x1 = zeros([1, 5], { dtype });
      for (const relu of [false, true]) expectEmptyLike(ops.linearForward(x0, w, b, relu), ops.linearForward(x1, w, b, relu));
      expectEmptyLike(ops.linearForward(x0, w, null, false), ops.linearForward(x1, w, null, false));
      const dy0 = zeros([0, 3], { dtype }), dy1 = zeros([1, 3], { dtype });
      expectEmptyLike(ops.linearBackwardData(dy0, w), ops.linearBackwardData(dy1, w));
      const dw = filled([3, 5], 7), db = filled([3], 7);
      ops.linearBackwardWeights(x0, dy0, dw, db, true);
      expect(new Set([...values(dw), ...values(db)])).toEqual(new Set([7]));
      ops.linearBackwardWeights(x0, dy0, dw, db, false);
      expect(new Set([...values(dw), ...values(db)])).toEqual(new Set([0]));
      ops.linearBackwardWeights(x0, dy0, dw, null, true);
      expect(new Set(values(dw))).toEqual(new Set([0]));
    });

    test('cross-entropy of an empty batch throws (its mean over no samples is undefined)', () => {
      expect(() => ops.crossEntropy(zeros([0, 3], { dtype }), zeros([0], { dtype: 'int32' })))
        .toThrow(/cross_entropy: empty batch \(logits \[0,3\]\): the mean loss over no samples is undefined/);
    });
  });

  test('zero-size dimensions other than the batch are errors naming the op, the argument and the dimension', () => {
    const x = (s: number[]) => zeros(s);
    const cases: [string, () => unknown, RegExp][] = [
      ['conv: 0 input channels', () => ops.conv2dForward(x([1, 0, 4, 4]), x([8, 0, 3, 3]), null, conv(1, 1)), /conv2d_forward: (input|x) \[1,0,4,4\] has a zero-size dimension 1 \(only the batch may be empty\)/],
      ['conv: 0 output channels', () => ops.conv2dForward(x([1, 8, 4, 4]), x([0, 8, 3, 3]), null, conv(1, 1)), /conv2d_forward: weight \[0,8,3,3\] has a zero-size dimension 0/],
      ['conv: 0x0 kernel', () => ops.conv2dForward(x([1, 8, 4, 4]), x([8, 8, 0, 0]), null, conv(1, 1)), /conv2d_forward: weight \[8,8,0,0\] has a zero-size dimension 2/],
      ['conv: 0x0 image with padding', () => ops.conv2dForward(x([1, 8, 0, 0]), x([8, 8, 3, 3]), null, conv(1, 2)), /conv2d_forward: (input|x) \[1,8,0,0\] has a zero-size dimension 2/],
      ['conv backward data: 0 channels', () => ops.conv2dBackwardData(x([1, 8, 4, 4]), x([8, 0, 3, 3]), [1, 0, 4, 4], conv(1, 1)), /conv2d_backward_data: .*\[1,0,4,4\] has a zero-size dimension 1/],
      ['conv backward weights: 0 channels', () => ops.conv2dBackwardWeights(x([1, 0, 4, 4]), x([1, 8, 4, 4]), conv(1, 1), x([8, 0, 3, 3]), null, false), /conv2d_backward_weights: .*\[1,0,4,4\] has a zero-size dimension 1/],
      ['max pool: 0 channels', () => ops.maxpool2dForward(x([1, 0, 4, 4]), pool, true), /maxpool2d_forward: (input|x) \[1,0,4,4\] has a zero-size dimension 1/],
      ['max pool: 0 rows with padding', () => ops.maxpool2dForward(x([1, 8, 0, 0]), { kernel: 2, stride: 2, pad: 1 }, true), /maxpool2d_forward: (input|x) \[1,8,0,0\] has a zero-size dimension 2/],
      ['adaptive pool: 0x0 image', () => ops.adaptiveAvgpool2dForward(x([1, 8, 0, 0]), 7, 7), /adaptive_avgpool2d_forward: (input|x) \[1,8,0,0\] has a zero-size dimension 2/],
      ['adaptive pool backward: 0x0 input shape', () => ops.adaptiveAvgpool2dBackward(x([1, 8, 7, 7]), [1, 8, 0, 0], 'nchw'), /adaptive_avgpool2d_backward: (input|x) shape \[1,8,0,0\] has a zero-size dimension 2/],
      ['batch norm: 0 channels', () => ops.batchnormForward(x([2, 0, 4, 4]), x([0]), x([0]), x([0]), x([0]), true, 0.1, 1e-5), /batchnorm_forward: (input|x) \[2,0,4,4\] has a zero-size dimension 1/],
      ['batch norm (eval): 0x0 image', () => ops.batchnormForward(x([2, 8, 0, 0]), x([8]), x([8]), x([8]), x([8]), false, 0.1, 1e-5), /batchnorm_forward: (input|x) \[2,8,0,0\] has a zero-size dimension 2/],
      ['linear: 0 input features', () => ops.linearForward(x([2, 0]), x([3, 0]), null), /linear_forward: (input|x) \[2,0\] has a zero-size dimension 1/],
      ['linear: 0 outputs', () => ops.linearForward(x([2, 5]), x([0, 5]), null), /linear_forward: weight \[0,5\] has a zero-size dimension 0 \(every size must be >= 1\)/],
      ['linear backward data: 0 inputs', () => ops.linearBackwardData(x([2, 3]), x([3, 0])), /linear_backward_data: (weight|w) \[3,0\] has a zero-size dimension 1/],
      ['linear backward weights: 0 outputs', () => ops.linearBackwardWeights(x([2, 5]), x([2, 0]), x([0, 5]), null, false), /linear_backward_weights: .* has a zero-size dimension/],
      ['cross-entropy: 0 classes', () => ops.crossEntropy(x([2, 0]), zeros([2], { dtype: 'int32' })), /cross_entropy: logits \[2,0\] has a zero-size dimension 1/],
    ];
    for (const [name, run, msg] of cases) {
      let err: unknown;
      try {
        keep(run() as Tensor);
      } catch (e) {
        err = e;
      }
      expect([name, String((err as Error | undefined)?.message)]).toEqual([name, expect.stringMatching(msg)]);
    }
  });

  test('elementwise ops take zero-size dimensions anywhere', () => {
    for (const s of [[0, 8, 4, 4], [2, 0, 4, 4], [2, 8, 0, 4], [0, 0]]) {
      const t = zeros(s);
      expect(keep(ops.reluForward(t)).shape).toEqual(s);
      ops.fill(t, 3);
      ops.add_(t, t, 2);
      expect(keep(ops.cast(t, 'bfloat16')).shape).toEqual(s);
      const d = ops.dropoutForward(t, 0.5, 1, 0, true);
      for (const k of d.saved) keep(k);
      expect(keep(d.y).shape).toEqual(s);
    }
  });

  describe('models', () => {
    const tiny = (batchNorm: boolean) => new VGGNet([8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'], { numClasses: 5, hiddenFeatures: 8, batchNorm, device, seed: 3 });

    test('vgg11 forward of [0,3,32,32] gives [0,10] in training and eval mode, and predict gives no rows', () => {
      const m = vgg11({ numClasses: 10, hiddenFeatures: 16, device });
      try {
        expect(keep(m.forward(zeros([0, 3, 32, 32]))).shape).toEqual([0, 10]);
        m.releaseSaved();
        m.eval();
        expect(keep(noGrad(() => m.forward(zeros([0, 3, 32, 32])))).shape).toEqual([0, 10]);
        expect(m.predict(zeros([0, 3, 32, 32]))).toEqual([]);
      } finally {
        m.dispose();
      }
    });

    test('backward of an empty batch leaves every gradient zero, and the model still trains on a real batch after it', () => {
      const m = tiny(false);
      try {
        const logits = keep(m.forward(zeros([0, 3, 32, 32])));
        m.zeroGrad();
        m.backward(zeros([0, 5]));
        for (const p of m.parameters()) expect([p.name, new Set(values(p.grad))]).toEqual([p.name, new Set([0])]);
        expect(logits.shape).toEqual([0, 5]);
        const y = keep(m.forward(filled([2, 3, 32, 32], 0.5)));
        expect(y.shape).toEqual([2, 5]);
        expect(values(y).every(Number.isFinite)).toBe(true);
      } finally {
        m.dispose();
      }
    });

    test('vgg11_bn: an empty batch in training mode throws from batch norm and leaves the running statistics alone; eval mode gives [0,5]', () => {
      const m = tiny(true);
      try {
        const before = values(m.stateDict()['features.1.running_var'] as Tensor);
        expect(() => m.forward(zeros([0, 3, 32, 32]))).toThrow(/batchnorm_forward: .*more than (1|one) value per channel/);
        expect(values(m.stateDict()['features.1.running_var'] as Tensor)).toEqual(before);
        m.releaseSaved();
        m.eval();
        expect(keep(noGrad(() => m.forward(zeros([0, 3, 32, 32])))).shape).toEqual([0, 5]);
      } finally {
        m.dispose();
      }
    });
  });
});
