// Errors carry the JS class a caller can branch on, as better-sqlite3's do: TypeError for a value of the wrong type,
// RangeError for a value out of range, Error for the rest; the messages stay precise. Native errors (vgg::TypeError
// and vgg::RangeError, mapped by the bindings) and the TypeScript layer's alike.
import { Tensor } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { addon } from '../../lib/native';
import { setNumThreads, getNumThreads } from '../../lib/backend';
import { sgd } from '../../lib/optim/sgd';
import { Dropout } from '../../lib/nn/layers';
import { VGGNet } from '../../lib/models/vgg';
import { disposeKeptAfterEach, keep } from '../helpers/tensors';

disposeKeptAfterEach();
const P = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
const f = (shape: number[]) => keep(Tensor.zeros(shape));

/**
 * fn throws exactly `cls` with a message matching `re`. By name: the addon builds its errors in Node's main realm,
 * and jest runs each test file in a realm of its own, so instanceof across them is false.
 */
function expectThrows(fn: () => unknown, cls: ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor, re: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeDefined();
  expect([(err as Error).constructor.name, (err as Error).name]).toEqual([cls.name, cls.name]);
  expect((err as Error).message).toMatch(re);
}

describe('native errors', () => {
  test('a wrong JS type is a TypeError', () => {
    expectThrows(() => addon().conv2dForward('x' as never, f([4, 3, 3, 3]).native, null, P, false), TypeError, /conv2dForward: input: expected a Tensor/);
    expectThrows(() => addon().tensorZeros([2, 'a' as never], 'float32', 'cpu', 'nchw'), TypeError, /expected a number/);
    expectThrows(() => addon().tensorZeros([2.5], 'float32', 'cpu', 'nchw'), TypeError, /expected an integer, got 2.5/);
    expectThrows(() => addon().dataSourceLength({} as never), TypeError, /expected a native data source/);
  });
  test('a tensor of the wrong dtype is a TypeError', () => {
    const xi = keep(Tensor.from(new Int32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]));
    expectThrows(() => ops.reluForward(xi), TypeError, /relu_forward: input: expected float32 or bfloat16, got int32/);
  });
  test('a value out of range is a RangeError', () => {
    const logits = f([3, 4]);
    const labels = keep(Tensor.from(Int32Array.from([0, 1, 7]), [3]));
    expectThrows(() => ops.crossEntropy(logits, labels), RangeError, /cross_entropy: label at index 2 is 7, out of range \[0, 4\)/);
    expectThrows(() => ops.dropoutForward(f([2, 3]), 1.5, 1, 0, true), RangeError, /dropoutForward: p must be in \[0, 1\), got 1.5/);
    expectThrows(() => ops.conv2dForward(f([1, 3, 5, 5]), f([2, 3, 3, 3]), null, { ...P, strideH: 0 }, false), RangeError, /strides must be >= 1/);
    const before = getNumThreads();
    expectThrows(() => setNumThreads(0), RangeError, /setNumThreads: expected 1\.\.4096 threads, got 0/);
    expect(getNumThreads()).toBe(before);
    expectThrows(() => addon().tensorZeros([2], 'float16' as never, 'cpu', 'nchw'), RangeError, /unknown dtype 'float16'/);
    expectThrows(() => ops.toLayout(f([1, 8, 2, 2]), 'nhcw' as never), RangeError, /unknown layout 'nhcw'/);
  });
  test('everything else is an Error', () => {
    expectThrows(() => ops.conv2dForward(f([1, 4, 5, 5]), f([2, 3, 3, 3]), null, P, false), Error, /conv2d_forward: input has 4 channels, weight expects 3/);
    const t = Tensor.zeros([2]);
    t.dispose();
    expectThrows(() => ops.reluForward(t), Error, /disposed/);
  });
});

describe('TypeScript errors', () => {
  test('options out of range are RangeErrors, wrong types TypeErrors', () => {
    expectThrows(() => sgd({ lr: -1 }), RangeError, /sgd: invalid lr -1/);
    expectThrows(() => sgd({ lr: '0.1' as never }), TypeError, /sgd: lr must be a number, got string/);
    expectThrows(() => new Dropout(1.5), RangeError, /Dropout: p must be in \[0, 1\), got 1.5/);
    expectThrows(() => new VGGNet([8, 'M'], { numClasses: 0 }), RangeError, /numClasses must be a positive integer, got 0/);
    expectThrows(() => Tensor.from({} as never, [1]), TypeError, /Tensor.from: expected a Float32Array/);
  });
});
