// What the op tests share: tensors kept alive until the test ends (disposed after each test of the file that calls
// disposeKeptAfterEach), and the closeness check every op is held to.
import { Tensor } from '../../lib/tensor';

const live: Tensor[] = [];

/** Keeps `t` until the current test ends; returns it. */
export function keep<X extends Tensor>(t: X): X {
  live.push(t);
  return t;
}

/** Call once at the top of a test file that uses keep(). */
export function disposeKeptAfterEach(): void {
  afterEach(() => {
    for (const t of live.splice(0)) t.dispose();
  });
}

/** max |a - e| <= rtol * max|e| (the reference's max-abs), with a message naming the worst element. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, what: string): void {
  expect(actual.length).toBe(expected.length);
  let scale = 0, worst = 0, at = -1;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  const limit = rtol * Math.max(scale, 1e-30);
  if (!(worst <= limit)) {
    throw new Error(
      `${what}: max |diff| ${worst.toExponential(3)} at [${at}] (got ${actual[at]}, want ${expected[at]}) ` +
        `exceeds ${rtol} x max-abs ${scale.toExponential(3)}`,
    );
  }
}

export const numel = (s: number[]): number => s.reduce((a, b) => a * b, 1);
/** A float tensor's values as float64 (for comparison with the float64 references). */
export const f64 = (t: Tensor): Float64Array => Float64Array.from(t.toArray() as Float32Array);

/** The largest |a - b| over the largest |a| (1 when a is all zeros): a tensor's error relative to its scale. */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0, mag = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    mag = Math.max(mag, Math.abs(a[i]));
  }
  return err / (mag || 1);
}
