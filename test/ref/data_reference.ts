// Independent reference implementations of the data transforms for the tests: plain loops in float64 over CHW
// arrays, written from torchvision's functional definitions (not from the native code), and the counter-based RNG
// re-derived with BigInt from native/rng.h's definition.
const M64 = (1n << 64n) - 1n;

export function mix64(z: bigint): bigint {
  z = (z + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}
export function uniform01(key: bigint, counter: number): number {
  return Number(mix64(mix64(key) ^ BigInt(counter)) >> 40n) / 16777216;
}
export function sampleKey(seed: number, epoch: number, index: number): bigint {
  let k = mix64(BigInt(seed));
  k = mix64(k ^ BigInt(epoch));
  return mix64(k ^ BigInt(index));
}

export interface Img {
  c: number;
  h: number;
  w: number;
  d: Float64Array;
}
export const fromU8 = (u: Uint8Array, c: number, h: number, w: number): Img => ({ c, h, w, d: Float64Array.from(u, (v) => Math.fround(v / 255)) });
const at = (im: Img, c: number, y: number, x: number): number => im.d[(c * im.h + y) * im.w + x];
const pyround = (x: number): number => {
  const f = Math.floor(x);
  const r = x - f;
  if (r > 0.5) return f + 1;
  if (r < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
};

// F.interpolate(mode='bilinear', align_corners=False) without antialias.
export function resizeBilinear(im: Img, oh: number, ow: number): Img {
  const out: Img = { c: im.c, h: oh, w: ow, d: new Float64Array(im.c * oh * ow) };
  const src = (o: number, n: number, i: number): [number, number, number] => {
    let s = (n / o) * (i + 0.5) - 0.5;
    if (s < 0) s = 0;
    const i0 = Math.floor(s);
    const i1 = Math.min(i0 + 1, n - 1);
    return [i0, i1, s - i0];
  };
  for (let c = 0; c < im.c; c++)
    for (let y = 0; y < oh; y++) {
      const [y0, y1, ly] = src(oh, im.h, y);
      for (let x = 0; x < ow; x++) {
        const [x0, x1, lx] = src(ow, im.w, x);
        out.d[(c * oh + y) * ow + x] =
          (1 - ly) * ((1 - lx) * at(im, c, y0, x0) + lx * at(im, c, y0, x1)) + ly * ((1 - lx) * at(im, c, y1, x0) + lx * at(im, c, y1, x1));
      }
    }
  return out;
}
export function resizeShort(im: Img, size: number): Img {
  const { h, w } = im;
  const short = Math.min(h, w), long = Math.max(h, w);
  const nl = Math.floor((size * long) / short);
  const [oh, ow] = w <= h ? [nl, size] : [size, nl];
  if (oh === h && ow === w) return im;
  return resizeBilinear(im, oh, ow);
}
// F.crop: pads with zeros outside the image.
export function crop(im: Img, top: number, left: number, h: number, w: number): Img {
  const out: Img = { c: im.c, h, w, d: new Float64Array(im.c * h * w) };
  for (let c = 0; c < im.c; c++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const sy = y + top, sx = x + left;
        out.d[(c * h + y) * w + x] = sy >= 0 && sy < im.h && sx >= 0 && sx < im.w ? at(im, c, sy, sx) : 0;
      }
  return out;
}
export function centerCrop(im: Img, ch: number, cw: number): Img {
  // pad (left/top get the floor half), then crop at round((H - h) / 2)
  let { h, w } = im;
  let padT = 0, padL = 0;
  if (ch > h) { padT = Math.floor((ch - h) / 2); h = ch; }
  if (cw > w) { padL = Math.floor((cw - w) / 2); w = cw; }
  const top = pyround((h - ch) / 2) - padT, left = pyround((w - cw) / 2) - padL;
  return crop(im, top, left, ch, cw);
}
export function rrcParams(h: number, w: number, scale: number[], ratio: number[], key: bigint, ctr: number): [number, number, number, number] {
  const area = h * w;
  const lr = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let a = 0; a < 10; a++) {
    const k = ctr + 4 * a;
    const ta = area * (scale[0] + uniform01(key, k) * (scale[1] - scale[0]));
    const ar = Math.exp(lr[0] + uniform01(key, k + 1) * (lr[1] - lr[0]));
    const cw = pyround(Math.sqrt(ta * ar)), ch = pyround(Math.sqrt(ta / ar));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      return [Math.floor(uniform01(key, k + 2) * (h - ch + 1)), Math.floor(uniform01(key, k + 3) * (w - cw + 1)), ch, cw];
    }
  }
  const inr = w / h;
  let cw: number, ch: number;
  if (inr < ratio[0]) { cw = w; ch = pyround(cw / ratio[0]); }
  else if (inr > ratio[1]) { ch = h; cw = pyround(ch * ratio[1]); }
  else { cw = w; ch = h; }
  return [Math.floor((h - ch) / 2), Math.floor((w - cw) / 2), ch, cw];
}
export function hflip(im: Img): Img {
  const out: Img = { ...im, d: new Float64Array(im.d.length) };
  for (let c = 0; c < im.c; c++) for (let y = 0; y < im.h; y++) for (let x = 0; x < im.w; x++) out.d[(c * im.h + y) * im.w + x] = at(im, c, y, im.w - 1 - x);
  return out;
}
const clamp = (v: number): number => Math.min(1, Math.max(0, v));
const grayOf = (im: Img, i: number): number => {
  const n = im.h * im.w;
  return 0.2989 * im.d[i] + 0.587 * im.d[n + i] + 0.114 * im.d[2 * n + i];
};
export function brightness(im: Img, f: number): Img {
  return { ...im, d: im.d.map((v) => clamp(f * v)) };
}
export function contrast(im: Img, f: number): Img {
  const n = im.h * im.w;
  let s = 0;
  for (let i = 0; i < n; i++) s += grayOf(im, i);
  const mean = s / n;
  return { ...im, d: im.d.map((v) => clamp(f * v + (1 - f) * mean)) };
}
export function saturation(im: Img, f: number): Img {
  const n = im.h * im.w;
  const d = new Float64Array(im.d.length);
  for (let i = 0; i < n; i++) {
    const g = grayOf(im, i);
    for (let c = 0; c < 3; c++) d[c * n + i] = clamp(f * im.d[c * n + i] + (1 - f) * g);
  }
  return { ...im, d };
}
// Hue via the textbook HSV conversion (colorsys), shifting H by f (mod 1).
export function hue(im: Img, f: number): Img {
  const n = im.h * im.w;
  const d = new Float64Array(im.d.length);
  for (let i = 0; i < n; i++) {
    const r = im.d[i], g = im.d[n + i], b = im.d[2 * n + i];
    const mx = Math.max(r, g, b), mn = Math.min(r, g, b);
    let h = 0;
    const v = mx, s = mx === 0 ? 0 : (mx - mn) / mx;
    if (mx !== mn) {
      const rc = (mx - r) / (mx - mn), gc = (mx - g) / (mx - mn), bc = (mx - b) / (mx - mn);
      if (r === mx) h = bc - gc;
      else if (g === mx) h = 2 + rc - bc;
      else h = 4 + gc - rc;
      h = (((h / 6) % 1) + 1) % 1;
    }
    h = (((h + f) % 1) + 1) % 1;
    const k = Math.floor(h * 6), fr = h * 6 - k;
    const p = v * (1 - s), q = v * (1 - s * fr), t = v * (1 - s * (1 - fr));
    const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][k % 6];
    for (let c = 0; c < 3; c++) d[c * n + i] = rgb[c];
  }
  return { ...im, d };
}
export function normalize(im: Img, mean: number[], std: number[]): Img {
  const n = im.h * im.w;
  return { ...im, d: im.d.map((v, i) => (v - mean[Math.floor(i / n)]) / std[Math.floor(i / n)]) };
}

export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
export function randomU8(n: number, seed: number): Uint8Array {
  const u = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    u[i] = s & 255;
  }
  return u;
}
