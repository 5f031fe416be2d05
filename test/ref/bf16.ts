// bfloat16 for the references, independent of the native cast: round to nearest even, and the tolerance a bf16
// result is held to.

/** Each value rounded to the nearest bfloat16 (ties to even), as float32; NaN stays NaN. */
export function roundBf16(a: ArrayLike<number>): Float32Array {
  const f = Float32Array.from(a);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000) u[i] = (x & 0xffff0000) | (x & 0xffff ? 0x400000 : 0); // Inf, NaN
    else u[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 0) & 0xffff0000;
  }
  return f;
}

/**
 * A bf16 result against a float64 reference computed from the same (bf16) inputs: rounding to bf16 (8 significant
 * bits, to nearest) moves a value v by at most half a unit in the last place, 2^-8·|v|; the float32 arithmetic before
 * the rounding adds a little, bounded here by `abs` times the largest |reference| (cancellation makes it absolute,
 * not relative). So |got − ref| ≤ 2^-8·|ref| + abs·max|ref|.
 */
export function expectBf16Close(got: ArrayLike<number>, ref: ArrayLike<number>, what: string, abs = 1e-4): void {
  if (got.length !== ref.length) throw new Error(`${what}: ${got.length} values, reference has ${ref.length}`);
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]));
  for (let i = 0; i < ref.length; i++) {
    const tol = 2 ** -8 * Math.abs(ref[i]) + abs * scale;
    const d = Math.abs(got[i] - ref[i]);
    if (!(d <= tol)) {
      throw new Error(`${what}: at [${i}] got ${got[i]}, reference ${ref[i]}: |diff| ${d.toExponential(3)} > ${tol.toExponential(3)} (2^-8·|ref| + ${abs}·${scale.toExponential(3)})`);
    }
  }
}

/** A float32 result against a float64 reference: |got − ref| ≤ rtol·max|ref|. */
export function expectF32Close(got: ArrayLike<number>, ref: ArrayLike<number>, what: string, rtol = 1e-5): void {
  if (got.length !== ref.length) throw new Error(`${what}: ${got.length} values, reference has ${ref.length}`);
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]));
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    if (!(d <= rtol * scale)) {
      throw new Error(`${what}: at [${i}] got ${got[i]}, reference ${ref[i]}: |diff| ${d.toExponential(3)} > ${rtol}·${scale.toExponential(3)}`);
    }
  }
}
