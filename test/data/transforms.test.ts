// Each native transform against the independent reference in data_reference.ts: exact for flips and crops, within
// 1/255 for resampling and colour.
import { transforms as T } from '../../lib/data';
import { flatten, Transform } from '../../lib/data/transforms';
import { transformImage } from '../../lib/data/native_source';
import { addon } from '../../lib/native';
import * as R from '../ref/data_reference';

const TOL = 1 / 255;

function run(u8: Uint8Array, shape: [number, number, number], t: Transform, seed = 7, epoch = 0, index = 0): R.Img {
  const r = transformImage(u8, shape, flatten(t), seed, epoch, index);
  return { c: r.shape[0], h: r.shape[1], w: r.shape[2], d: Float64Array.from(r.data as Float32Array) };
}
const SHAPES: [number, number, number][] = [[3, 13, 17], [3, 20, 9], [3, 8, 8]];

describe('data transforms vs reference', () => {
  test('no transform: uint8 -> [0,1] float', () => {
    const u = R.randomU8(3 * 5 * 6, 1);
    const out = run(u, [3, 5, 6], T.compose([]));
    expect(R.maxDiff(out.d, R.fromU8(u, 3, 5, 6).d)).toBeLessThan(1e-7);
  });

  test('randomHorizontalFlip: p=1 exact, p=0 identity, p=0.5 follows the (seed, epoch, index) draw', () => {
    for (const [c, h, w] of SHAPES) {
      const u = R.randomU8(c * h * w, h * w);
      const ref = R.fromU8(u, c, h, w);
      expect(R.maxDiff(run(u, [c, h, w], T.randomHorizontalFlip(1)).d, R.hflip(ref).d)).toBe(0);
      expect(R.maxDiff(run(u, [c, h, w], T.randomHorizontalFlip(0)).d, ref.d)).toBe(0);
      let flips = 0;
      for (let index = 0; index < 40; index++) {
        const flip = R.uniform01(R.sampleKey(3, 2, index), 0) < 0.5;
        flips += flip ? 1 : 0;
        const out = run(u, [c, h, w], T.randomHorizontalFlip(0.5), 3, 2, index);
        expect(R.maxDiff(out.d, flip ? R.hflip(ref).d : ref.d)).toBe(0);
      }
      expect(flips).toBeGreaterThan(5);
      expect(flips).toBeLessThan(35);
    }
  });

  test('centerCrop: exact, odd sizes and zero padding when larger than the image', () => {
    for (const [c, h, w] of SHAPES) {
      const u = R.randomU8(c * h * w, 5 + h);
      const ref = R.fromU8(u, c, h, w);
      for (const [ch, cw] of [[5, 5], [4, 7], [h, w], [h + 3, w - 2], [h + 4, w + 5], [1, 1]]) {
        if (cw <= 0) continue;
        const out = run(u, [c, h, w], T.centerCrop([ch, cw]));
        expect([out.h, out.w]).toEqual([ch, cw]);
        expect(R.maxDiff(out.d, R.centerCrop(ref, ch, cw).d)).toBe(0);
      }
    }
  });

  test('resize: shorter side and exact size, up and down, within 1/255', () => {
    for (const [c, h, w] of SHAPES) {
      const u = R.randomU8(c * h * w, 11 + w);
      const ref = R.fromU8(u, c, h, w);
      for (const s of [4, 7, 16, 31]) {
        const out = run(u, [c, h, w], T.resize(s));
        const exp = R.resizeShort(ref, s);
        expect([out.h, out.w]).toEqual([exp.h, exp.w]);
        expect(R.maxDiff(out.d, exp.d)).toBeLessThan(TOL);
      }
      for (const [oh, ow] of [[5, 23], [29, 6], [h, w]]) {
        const out = run(u, [c, h, w], T.resize([oh, ow]));
        expect(R.maxDiff(out.d, R.resizeBilinear(ref, oh, ow).d)).toBeLessThan(TOL);
      }
    }
  });

  test('randomResizedCrop: torchvision sampling (10 attempts + fallback) then bilinear, within 1/255', () => {
    const cases: [number[], number[]][] = [[[0.08, 1], [3 / 4, 4 / 3]], [[0.5, 1], [0.5, 2]], [[0.9, 1], [3, 4]]];
    for (const [c, h, w] of SHAPES) {
      const u = R.randomU8(c * h * w, 17 + h);
      const ref = R.fromU8(u, c, h, w);
      for (const [scale, ratio] of cases) {
        for (let index = 0; index < 12; index++) {
          const t = T.randomResizedCrop([9, 11], { scale: scale as [number, number], ratio: ratio as [number, number] });
          const out = run(u, [c, h, w], t, 5, 1, index);
          const [top, left, ch, cw] = R.rrcParams(h, w, scale, ratio, R.sampleKey(5, 1, index), 0);
          const exp = R.resizeBilinear(R.crop(ref, top, left, ch, cw), 9, 11);
          expect(R.maxDiff(out.d, exp.d)).toBeLessThan(TOL);
        }
      }
    }
  });

  test('colorJitter: each factor alone and all four in the random per-sample order, within 1/255', () => {
    const [c, h, w] = [3, 9, 10];
    const u = R.randomU8(c * h * w, 99);
    const ref = R.fromU8(u, c, h, w);
    const single: [Transform, (im: R.Img, key: bigint) => R.Img][] = [
      [T.colorJitter(0.5), (im, k) => R.brightness(im, 0.5 + R.uniform01(k, 4) * 1.0)],
      [T.colorJitter(0, 0.5), (im, k) => R.contrast(im, 0.5 + R.uniform01(k, 5) * 1.0)],
      [T.colorJitter(0, 0, 0.7), (im, k) => R.saturation(im, 0.3 + R.uniform01(k, 6) * 1.4)],
      [T.colorJitter(0, 0, 0, 0.3), (im, k) => R.hue(im, -0.3 + R.uniform01(k, 7) * 0.6)],
    ];
    for (const [t, f] of single) {
      for (let index = 0; index < 8; index++) {
        const out = run(u, [c, h, w], t, 1, 0, index);
        expect(R.maxDiff(out.d, f(ref, R.sampleKey(1, 0, index)).d)).toBeLessThan(TOL);
      }
    }
    const orders = new Set<string>();
    for (let index = 0; index < 30; index++) {
      const key = R.sampleKey(2, 3, index);
      const perm = [0, 1, 2, 3];
      for (let i = 3; i > 0; i--) {
        const j = Math.floor(R.uniform01(key, i) * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      orders.add(perm.join(''));
      const fb = 0.6 + R.uniform01(key, 4) * 0.8, fc = 0.7 + R.uniform01(key, 5) * 0.6;
      const fs = 0.5 + R.uniform01(key, 6) * 1.0, fh = -0.1 + R.uniform01(key, 7) * 0.2;
      let im = ref;
      for (const p of perm) {
        if (p === 0) im = R.brightness(im, fb);
        if (p === 1) im = R.contrast(im, fc);
        if (p === 2) im = R.saturation(im, fs);
        if (p === 3) im = R.hue(im, fh);
      }
      const out = run(u, [c, h, w], T.colorJitter(0.4, 0.3, 0.5, 0.1), 2, 3, index);
      expect(R.maxDiff(out.d, im.d)).toBeLessThan(TOL);
    }
    expect(orders.size).toBeGreaterThan(5);
  });

  test('normalize and evalTransform', () => {
    const u = R.randomU8(3 * 12 * 15, 4);
    const ref = R.fromU8(u, 3, 12, 15);
    const out = run(u, [3, 12, 15], T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD));
    expect(R.maxDiff(out.d, R.normalize(ref, T.IMAGENET_MEAN, T.IMAGENET_STD).d)).toBeLessThan(1e-5);
    const ev = run(u, [3, 12, 15], T.evalTransform(7)); // resize(8) then centerCrop(7)
    expect([ev.h, ev.w]).toEqual([7, 7]);
    expect(R.maxDiff(ev.d, R.centerCrop(R.resizeShort(ref, 8), 7, 7).d)).toBeLessThan(TOL);
    expect(T.evalTransform(224)).toEqual(T.compose([T.resize(256), T.centerCrop(224)]));
  });

  test('a full pipeline is a function of (seed, epoch, index) only', () => {
    const u = R.randomU8(3 * 24 * 24, 8);
    const t = T.compose([T.randomResizedCrop(16), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4, 0.1), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
    const a = run(u, [3, 24, 24], t, 1, 2, 3), b = run(u, [3, 24, 24], t, 1, 2, 3);
    expect(R.maxDiff(a.d, b.d)).toBe(0);
    expect(R.maxDiff(a.d, run(u, [3, 24, 24], t, 1, 3, 3).d)).toBeGreaterThan(0);
    expect(R.maxDiff(a.d, run(u, [3, 24, 24], t, 2, 2, 3).d)).toBeGreaterThan(0);
    expect(R.maxDiff(a.d, run(u, [3, 24, 24], t, 1, 2, 4).d)).toBeGreaterThan(0);
  });

  test('bad descriptions are JS errors', () => {
    expect(() => T.colorJitter(-1)).toThrow(/non negative/);
    expect(() => T.colorJitter(0, 0, 0, 0.7)).toThrow(/hue/);
    expect(() => T.centerCrop(0)).toThrow(/positive integer/);
    expect(() => addon().dataTransformImage(new Uint8Array(12), [3, 2, 2], [{ type: 'warp' }], 0, 0, 0)).toThrow(/unknown transform type 'warp'/);
    expect(() => addon().dataTransformImage(new Uint8Array(11), [3, 2, 2], [], 0, 0, 0)).toThrow(/does not match/);
  });
});
