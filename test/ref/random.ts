// mulberry32: the tests' small seeded generator (same numbers on every run and machine), independent of the
// library's own Rng so the references do not share code with what they check.
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A source of n float32-exact values uniform in [lo, hi), drawn from mulberry32(seed). */
export function uniformSource(seed: number): (n: number, lo?: number, hi?: number) => Float32Array {
  const rand = mulberry32(seed);
  return (n, lo = -1, hi = 1) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
    return a;
  };
}
