// Deferred augmentation (the GPU path's host side), on the CPU: raw uint8 batches + the parameters drawn for them,
// run by the host twin of the GPU kernels (same shared per-pixel functions, same passes), must reproduce the CPU
// pipeline bit for bit; the parameters must be the CPU pipeline's own draws. The GPU itself is tested in
// test/cuda_data.test.ts.
import { backends } from '../../lib/backend';
import { addon } from '../../lib/native';
import { augmentSupport, memorySource } from '../../lib/data/native_source';
import { augmentBatch, DataLoader, STL10, transforms as T } from '../../lib/data';
import { flatten, Transform } from '../../lib/data/transforms';
import * as ops from '../../lib/ops';
import { Tensor } from '../../lib/tensor';
import * as R from '../ref/data_reference';
import { sampleRoot } from '../helpers/data_fixtures';

const NORM = T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD);
const PIPELINES: [string, Transform][] = [
  ['rrc + flip + jitter + normalize', T.compose([T.randomResizedCrop(64), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4, 0.1), NORM])],
  ['rrc (fallback-prone ratio) + flip', T.compose([T.randomResizedCrop([40, 52], { scale: [0.9, 1], ratio: [3, 4] }), T.randomHorizontalFlip(0.7)])],
  ['resize(48) + flip + contrast/hue', T.compose([T.resize(48), T.randomHorizontalFlip(), T.colorJitter(0, 0.8, 0, 0.5)])],
  ['jitter + normalize (no resampling)', T.compose([T.colorJitter(0.5, 0.5, 0.5, 0.2), NORM])],
  ['identity resize + flip', T.compose([T.resize([96, 96]), T.randomHorizontalFlip(1)])],
  ['normalize only', NORM],
];

async function firstBatches(loader: DataLoader, defer: boolean, epoch: number, count: number) {
  const out: { images: Tensor; labels: Tensor; params?: Tensor }[] = [];
  for await (const b of loader.iterate(epoch, { deferAugment: defer })) {
    out.push({ images: b.images, labels: b.labels, params: b.augment?.params });
    if (out.length === count) break;
  }
  return out;
}

describe('deferred augmentation (host twin of the GPU kernels)', () => {
  const root = sampleRoot();

  test.each(PIPELINES)('%s: raw batch + augmentBatch equals the CPU pipeline bit for bit', async (_name, transform) => {
    const ds = new STL10({ root, split: 'train', transform });
    const loader = new DataLoader(ds, { batchSize: 24, shuffle: true, seed: 11, workers: 2 });
    expect(loader.augmentSupport()).toBeNull();
    for (const epoch of [0, 3]) {
      const cpu = await firstBatches(loader, false, epoch, 2);
      const raw = await firstBatches(loader, true, epoch, 2);
      for (let i = 0; i < cpu.length; i++) {
        const r = raw[i];
        expect(r.images.dtype).toBe('uint8');
        expect(r.images.shape).toEqual([24, 3, 96, 96]);
        expect(r.params!.shape).toEqual([24, 16]);
        expect(r.labels.toNumbers()).toEqual(cpu[i].labels.toNumbers());
        const out = augmentBatch(r.images, { params: r.params!, ops: flatten(transform) });
        expect(out.shape).toEqual(cpu[i].images.shape);
        const a = out.toArray() as Float32Array, e = cpu[i].images.toArray() as Float32Array;
        expect(Buffer.from(a.buffer).equals(Buffer.from(e.buffer))).toBe(true);
        // bf16 / channels-last output: the float32 result rounded and laid out (toArray reads NCHW back)
        const bf = augmentBatch(r.images, { params: r.params!, ops: flatten(transform) }, { dtype: 'bfloat16', layout: 'nhwc' });
        expect(bf.dtype).toBe('bfloat16');
        expect(bf.layout).toBe('nhwc');
        const rounded = ops.cast(out, 'bfloat16');
        expect(Buffer.from((bf.toArray() as Float32Array).buffer).equals(Buffer.from((rounded.toArray() as Float32Array).buffer))).toBe(true);
        for (const t of [out, bf, rounded, r.images, r.labels, r.params!, cpu[i].images, cpu[i].labels]) t.dispose();
      }
    }
  });

  test('the parameters are the CPU pipeline\'s draws (crop window as torchvision samples it, flip, jitter order)', async () => {
    const scale = [0.08, 1], ratio = [3 / 4, 4 / 3];
    const ds = new STL10({ root, split: 'train', transform: T.compose([T.randomResizedCrop(32), T.randomHorizontalFlip(0.5), T.colorJitter(0.4, 0.4, 0.4, 0.1)]) });
    const loader = new DataLoader(ds, { batchSize: 40, shuffle: true, seed: 5, workers: 2 });
    const [b] = await firstBatches(loader, true, 2, 1);
    const p = b.params!.toArray() as Float32Array;
    const idx = loader.order(2).subarray(0, 40);
    let flips = 0;
    for (let k = 0; k < 40; k++) {
      const key = R.sampleKey(5, 2, idx[k]);
      const row = Array.from(p.subarray(16 * k, 16 * k + 16));
      expect(row.slice(0, 4)).toEqual(R.rrcParams(96, 96, scale, ratio, key, 0)); // top, left, h, w: op 0 draws from 0
      const flip = R.uniform01(key, 64) < 0.5; // op 1 draws from 64
      expect(row[4]).toBe(flip ? 1 : 0);
      flips += flip ? 1 : 0;
      const perm = [0, 1, 2, 3]; // op 2 draws from 128
      for (let i = 3; i > 0; i--) {
        const j = Math.floor(R.uniform01(key, 128 + i) * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      expect(row.slice(5, 9)).toEqual(perm);
      // factor ranges are held as float32 natively; the draw is mixed in double, then rounded
      const f = Math.fround;
      expect(row[9]).toBe(f(f(0.6) + R.uniform01(key, 132) * (f(1.4) - f(0.6))));
      expect(row[12]).toBe(f(f(-0.1) + R.uniform01(key, 135) * (f(0.1) - f(-0.1))));
    }
    expect(flips).toBeGreaterThan(5);
    expect(flips).toBeLessThan(35);
    for (const t of [b.images, b.labels, b.params!]) t.dispose();
  });

  test('unsupported transforms and datasets say why; augmentBatch checks its arguments', async () => {
    const ev = new DataLoader(new STL10({ root, split: 'test', transform: T.compose([T.evalTransform(32), NORM]) }), { batchSize: 4 });
    expect(ev.augmentSupport()).toMatch(/transform 1 \(centerCrop\) is not supported/);
    await expect(firstBatches(ev, true, 0, 1)).rejects.toThrow(/DataLoader: deferAugment: .*centerCrop/);
    const flipFirst = new DataLoader(new STL10({ root, split: 'test', transform: T.compose([T.randomHorizontalFlip(), T.randomResizedCrop(32)]) }), { batchSize: 4 });
    expect(flipFirst.augmentSupport()).toMatch(/randomResizedCrop.*in that order/);
    // images of two sizes
    const src = memorySource([new Uint8Array(3 * 4 * 5), new Uint8Array(3 * 6 * 5)], Int32Array.from([3, 4, 5, 3, 6, 5]), Int32Array.from([0, 1]), 'chw');
    expect(augmentSupport(src, [])).toMatch(/one image size per batch/);
    const gray = memorySource([new Uint8Array(4 * 5)], Int32Array.from([1, 4, 5]), Int32Array.from([0]), 'chw');
    expect(augmentSupport(gray, [])).toMatch(/needs 3/);

    const ds = new STL10({ root, split: 'test', transform: T.randomResizedCrop(32) });
    const loader = new DataLoader(ds, { batchSize: 4 });
    const [b] = await firstBatches(loader, true, 0, 1);
    const opsList = flatten(ds.transform);
    const badParams = Tensor.zeros([3, 16]);
    expect(() => augmentBatch(b.images, { params: badParams, ops: opsList })).toThrow(/augmentBatch: params: expected shape \[4,16\]/);
    const zeroParams = Tensor.zeros([4, 16]);
    expect(() => augmentBatch(b.images, { params: zeroParams, ops: opsList })).toThrow(/params of sample 0 are not valid/);
    expect(() => augmentBatch(b.params!, { params: b.params!, ops: opsList })).toThrow(/augmentBatch: images: expected uint8/);
    expect(() => augmentBatch(b.images, { params: b.params!, ops: opsList }, { layout: 'nchw8c' as never })).toThrow(/layout must be nchw or nhwc/);
    for (const t of [b.images, b.labels, b.params!, badParams, zeroParams]) t.dispose();
  });

  const cpuOnly = !backends().cuda.built;
  (cpuOnly ? test : test.skip)('CPU-only build: the CUDA entry points say the addon was built without CUDA', () => {
    const t = Tensor.from(new Float32Array(4), [4]);
    expect(() => addon().tensorTo(t.native, 'cuda', true)).toThrow(/built without CUDA/);
    expect(() => addon().tensorTo(t.native, 'cuda')).toThrow(/built without CUDA/);
    // a CPU target ignores nonBlocking
    const same = t.to('cpu', { nonBlocking: true });
    expect(same.toNumbers()).toEqual([0, 0, 0, 0]);
    t.dispose();
    same.dispose();
  });
});
