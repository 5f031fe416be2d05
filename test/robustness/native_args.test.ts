// Wrong types and hostile values from JS into every native entry point: each addon function is called with each of
// its arguments replaced in turn by values of the wrong type, NaN, infinities, huge and negative numbers, BigInts,
// disposed tensors and so on. Every call must return or throw an Error — never crash, and (under
// `npm run test:asan`, where UBSan aborts on undefined behaviour) never convert NaN or an out-of-range double to an
// integer, read past a buffer or write where a stale index points. Then the specific checks these found.
import { addon } from '../../lib/native';

const A = addon() as unknown as Record<string, (...a: unknown[]) => unknown>;
const cpu = (s: number[], dt = 'float32', l = 'nchw') => addon().tensorZeros(s, dt as never, 'cpu', l as never);
const conv = { strideH: 1, strideW: 1, padH: 1, padW: 1 };
const isError = (e: unknown) => Object.prototype.toString.call(e) === '[object Error]';

/** Valid arguments per function (the fuzz replaces one at a time); functions not listed get only the hostile values. */
function validArgs(): Record<string, unknown[]> {
  const src = addon().dataMemorySource([new Uint8Array(12)], new Int32Array([3, 2, 2]), new Int32Array([0]), false);
  const pool = addon().maxpool2dForward(cpu([1, 2, 4, 4]), { kernel: 2, stride: 2, pad: 0 }, true);
  const bn = addon().batchnormForward(cpu([2, 2, 2, 2]), cpu([2]), cpu([2]), cpu([2]), cpu([2]), true, 0.1, 1e-5, true, false);
  const drop = addon().dropoutForward(cpu([4]), 0.5, 1n, 0n, true);
  return {
    tensorFromBuffer: [new Float32Array(4), [2, 2], 'float32', 'cpu', 'nchw'],
    tensorEmpty: [[2, 2], 'float32', 'cpu', 'nchw'],
    tensorZeros: [[2, 2], 'float32', 'cpu', 'nchw'],
    tensorView: [cpu([2, 2]), [4]],
    tensorTo: [cpu([2]), 'cpu'],
    tensorClone: [cpu([2])],
    tensorCopyInto: [cpu([2]), cpu([2])],
    conv2dForward: [cpu([1, 2, 4, 4]), cpu([2, 2, 3, 3]), cpu([2]), conv, false],
    conv2dBackwardData: [cpu([1, 2, 4, 4]), cpu([2, 2, 3, 3]), [1, 2, 4, 4], conv],
    conv2dBackwardWeights: [cpu([1, 2, 4, 4]), cpu([1, 2, 4, 4]), conv, cpu([2, 2, 3, 3]), cpu([2]), false],
    reluForward: [cpu([2])],
    reluBackward: [cpu([2]), cpu([2])],
    maxpool2dForward: [cpu([1, 2, 4, 4]), { kernel: 2, stride: 2, pad: 0 }, true],
    maxpool2dBackward: [pool.y, cpu([1, 2, 4, 4]), pool.y, { kernel: 2, stride: 2, pad: 0 }, pool.saved],
    adaptiveAvgpool2dForward: [cpu([1, 2, 4, 4]), 7, 7],
    adaptiveAvgpool2dBackward: [cpu([1, 2, 7, 7]), [1, 2, 4, 4], 'nchw'],
    batchnormForward: [cpu([2, 2, 2, 2]), cpu([2]), cpu([2]), cpu([2]), cpu([2]), true, 0.1, 1e-5, true, false],
    batchnormBackward: [bn.y, cpu([2, 2, 2, 2]), cpu([2]), 1e-5, bn.saved, cpu([2]), cpu([2]), false, null],
    linearWeights: [cpu([4, 3]), 'bfloat16'],
    linearForward: [cpu([2, 3]), cpu([4, 3]), cpu([4]), false, false],
    linearBackwardData: [cpu([2, 4]), cpu([4, 3]), false],
    linearBackwardWeights: [cpu([2, 3]), cpu([2, 4]), cpu([4, 3]), cpu([4]), false],
    dropoutForward: [cpu([4]), 0.5, 1n, 0n, true],
    dropoutBackward: [drop.y, 0.5, drop.saved],
    crossEntropy: [cpu([2, 3]), cpu([2], 'int32')],
    sgdStep: [[cpu([2])], [cpu([2])], [cpu([2])], { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false }, false],
    cpuAdaptivePoolFold: [cpu([3, 196]), 4, 2, 2, 7, 7],
    cpuDeferredFold: [cpu([3, 16]), cpu([3, 16]), cpu([3, 16]), 1, 0.5, [4, 2, 2, 7, 7]],
    cpuDeferredMaterialise: [cpu([3, 196]), cpu([3, 196]), cpu([3, 196]), cpu([3, 196]), cpu([3, 16]), cpu([3, 16]), [1, 0.1, 0.2, 0.9], [4, 2, 2, 7, 7]],
    tensorVersion: [cpu([2])],
    fill: [cpu([2]), 1],
    fillRandom: [cpu([2]), 'normal', 0, 1, 1n],
    add_: [cpu([2]), cpu([2]), 1],
    cast: [cpu([2]), 'bfloat16'],
    toLayout: [cpu([1, 8, 2, 2]), 'nhwc'],
    synchronize: ['cpu'],
    memoryStats: ['cpu'],
    resetPeakMemory: ['cpu'],
    emptyCache: ['cpu'],
    setCudaMathMode: [0],
    cpuPeakGflops: [1, 0.01],
    setNumThreads: [1],
    setCpuWinograd: ['auto'],
    cudaGraphStepGuard: [cpu([1])],
    dataMemorySource: [[new Uint8Array(12)], new Int32Array([3, 2, 2]), new Int32Array([0]), false],
    dataSourceLength: [src],
    dataSourceLabels: [src],
    dataGet: [src, 0],
    dataGetTransformed: [src, 0, [{ type: 'resize', size: 4 }], 0, 0],
    dataTransformImage: [new Uint8Array(12), [3, 2, 2], [{ type: 'centerCrop', size: [2, 2] }], 0, 0, 0],
    dataLoadBatch: [src, new Int32Array([0]), [], 0, 0, 1, false],
    dataAugmentSupport: [src, []],
    dataAugmentBatch: [cpu([1, 3, 4, 4], 'uint8'), cpu([1, 16]), [], 'float32', 'nchw'],
  };
}

function hostileValues(): unknown[] {
  const disposed = cpu([2]);
  disposed.dispose();
  return [
    undefined, null, NaN, Infinity, -Infinity, -1, -0, 1.5, 2 ** 31, 2 ** 32 + 1, 2 ** 53, 2 ** 63, 1e300, -1e300, 2n ** 70n, -1n,
    '', 'x', 'cuda', {}, [], [NaN], [-1], [1e300], [2 ** 31, 2 ** 31, 2 ** 31], Symbol('s'), () => 1, disposed,
    new Uint8Array(3), new Float32Array(2), new Int32Array([-1, 2 ** 31 - 1, 7]), cpu([1, 2, 2, 2], 'int32'), cpu([0]),
    { type: 'resize', size: 1e300 }, [{ type: 'resize', size: [NaN, 3] }], [{ type: 'randomHorizontalFlip', p: NaN }],
    { kernel: 2 ** 32 + 2, stride: 2, pad: 0 }, { strideH: 2 ** 32 + 1, strideW: 1, padH: 0, padW: 0 },
  ];
}

// Never called: they change global state the rest of the run depends on (capture mode) or take long by design.
const SKIP = new Set(['NativeTensor', 'cudaGraphBegin', 'cudaGraphEnd', 'cudaGraphAbort', 'dataStl10Source']);

test('every addon function, each argument replaced by each hostile value: a result or an Error, nothing else', async () => {
  const valid = validArgs();
  const hostile = hostileValues();
  const names = Object.keys(A).filter((n) => typeof A[n] === 'function' && !SKIP.has(n));
  expect(names.length).toBeGreaterThan(45);
  let calls = 0, errors = 0;
  for (const name of names) {
    const good = valid[name] ?? [];
    const arities = Math.max(good.length, 3);
    for (let i = 0; i < arities; i++) {
      for (const h of hostile) {
        const args = good.slice();
        args[i] = h;
        calls++;
        try {
          const r = A[name](...args);
          if (r instanceof Promise) await r;
        } catch (e) {
          if (!isError(e)) throw new Error(`${name} with argument ${i} = ${String(h)} threw a non-Error: ${String(e)}`);
          errors++;
        }
      }
    }
  }
  A.setNumThreads(Number(process.env.VGGNET_THREADS ?? 2) || 2);
  expect(calls).toBeGreaterThan(3000);
  expect(errors).toBeGreaterThan(calls / 2);
});

describe('the checks the fuzz found, with their messages', () => {
  const cases: [string, () => unknown, RegExp][] = [
    ['an integer argument given NaN', () => addon().adaptiveAvgpool2dForward(cpu([1, 2, 4, 4]), NaN, 7), /expected an integer, got nan/],
    ['an integer argument given 1e300', () => addon().dataGet(addon().dataMemorySource([], new Int32Array(0), new Int32Array(0)), 1e300), /dataGet: index: 1e\+300 is out of the 64-bit integer range/],
    ['a conv stride beyond int', () => addon().conv2dForward(cpu([1, 2, 4, 4]), cpu([2, 2, 3, 3]), null, { ...conv, strideH: 2 ** 32 + 1 }, false), /conv2dForward: 4294967297 is out of the 32-bit integer range/],
    ['a pool kernel beyond int', () => addon().maxpool2dForward(cpu([1, 2, 4, 4]), { kernel: 2 ** 32 + 2, stride: 2, pad: 0 }, true), /maxpool2dForward: 4294967298 is out of the 32-bit integer range/],
    ['batch norm momentum NaN', () => addon().batchnormForward(cpu([2, 2, 2, 2]), cpu([2]), cpu([2]), cpu([2]), cpu([2]), true, NaN, 1e-5, true, false), /batchnormForward: momentum: expected a finite number, got nan/],
    ['batch norm momentum 5', () => addon().batchnormForward(cpu([2, 2, 2, 2]), cpu([2]), cpu([2]), cpu([2]), cpu([2]), true, 5, 1e-5, true, false), /expected 0 <= momentum <= 1 and eps > 0, got 5 and 1e-05/],
    ['SGD lr NaN', () => addon().sgdStep([cpu([2])], [cpu([2])], [], { lr: NaN, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false }, true), /sgdStep: lr: expected a finite number, got nan/],
    ['SGD lr negative', () => addon().sgdStep([cpu([2])], [cpu([2])], [], { lr: -5, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false }, true), /sgdStep: lr, momentum and weightDecay must be >= 0, got -5/],
    ['fillRandom with an infinite bound', () => addon().fillRandom(cpu([2]), 'uniform', 0, Infinity, 1n), /fillRandom: b: expected a finite number, got inf/],
    ['fillRandom of an int32 tensor', () => addon().fillRandom(cpu([2], 'int32'), 'normal', 0, 1, 1n), /fillRandom: tensor: expected float32, got int32/],
    ['fill of an int32 tensor with NaN', () => addon().fill(cpu([2], 'int32'), NaN), /fill: a int32 tensor cannot hold nan/],
    ['fill of a uint8 tensor with 256', () => addon().fill(cpu([2], 'uint8'), 256), /fill: a uint8 tensor cannot hold 256/],
    ['a transform size of 1e300', () => addon().dataTransformImage(new Uint8Array(12), [3, 2, 2], [{ type: 'centerCrop', size: [1e300, 2] }], 0, 0, 0), /centerCrop: size must be two integers in 1\.\.65536, got \[1e\+300, 2\]/],
    ['a flip probability of NaN', () => addon().dataTransformImage(new Uint8Array(12), [3, 2, 2], [{ type: 'randomHorizontalFlip', p: NaN }], 0, 0, 0), /randomHorizontalFlip\.p: expected a finite number, got nan/],
    ['an STL10 part that is not a pair', () => addon().dataStl10Source([5 as never]), /dataStl10Source: expected an array of \[xPath, yPath\|null\]/],
  ];
  test.each(cases)('%s', (_name, run, msg) => {
    expect(run).toThrow(msg);
  });

  test('their classes: TypeError for a wrong type, RangeError for a value out of range (compared by name: the addon throws from the main realm)', () => {
    const nameOf = (run: () => unknown) => {
      try {
        run();
      } catch (e) {
        return (e as Error).name;
      }
      return 'no error';
    };
    expect(nameOf(() => addon().adaptiveAvgpool2dForward(cpu([1, 2, 4, 4]), NaN, 7))).toBe('TypeError');
    expect(nameOf(() => addon().adaptiveAvgpool2dForward(cpu([1, 2, 4, 4]), 2 ** 40, 7))).toBe('RangeError');
    expect(nameOf(() => addon().sgdStep([cpu([2])], [cpu([2])], [], { lr: -5, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false }, true))).toBe('RangeError');
    expect(nameOf(() => addon().fill(cpu([2], 'uint8'), 256))).toBe('RangeError');
    expect(nameOf(() => addon().dataStl10Source([5 as never]))).toBe('TypeError');
    expect(nameOf(() => addon().linearForward(cpu([0, 3]), cpu([0, 3]), null, false, false))).toBe('RangeError');
    expect(nameOf(() => addon().crossEntropy(cpu([0, 3]), cpu([0], 'int32')))).toBe('RangeError');
  });

  test('dropout backward refuses a mask of another layout (it would scale the wrong elements)', () => {
    const x = cpu([1, 8, 2, 2]);
    const d = addon().dropoutForward(x, 0.5, 1n, 0n, true);
    expect(() => addon().dropoutBackward(addon().toLayout(d.y, 'nhwc'), 0.5, d.saved)).toThrow(/dropout_backward: mask and dy/);
  });
});
