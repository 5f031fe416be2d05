import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataLoader, ImageFolder, STL10, transforms as T, permutation } from '../../lib/data';
import { CIFAR_MINI, sampleRoot } from '../helpers/data_fixtures';

const aug = T.compose([T.randomResizedCrop(32), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);

async function collect(loader: DataLoader, epoch?: number, startBatch?: number) {
  const out: { images: Float32Array; labels: Int32Array; shape: number[]; indices: Int32Array }[] = [];
  for await (const b of epoch === undefined ? loader : loader.iterate(epoch, { startBatch })) {
    out.push({ images: b.images.toArray() as Float32Array, labels: b.labels.toArray() as Int32Array, shape: b.images.shape, indices: b.indices });
    b.images.dispose();
    b.labels.dispose();
  }
  return out;
}

describe('DataLoader', () => {
  const root = sampleRoot();

  test('batches: shapes, dtypes, last smaller batch kept or dropped, length', async () => {
    const ds = new STL10({ root, split: 'test', transform: T.evalTransform(32) });
    const loader = new DataLoader(ds, { batchSize: 64, workers: 2 });
    expect(loader.length).toBe(13);
    const batches = await collect(loader);
    expect(batches.length).toBe(13);
    expect(batches[0].shape).toEqual([64, 3, 32, 32]);
    expect(batches[12].shape).toEqual([800 - 12 * 64, 3, 32, 32]);
    expect(Array.from(batches[0].labels.slice(0, 12))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    // batch contents equal get(i)
    const one = ds.get(70).image.toArray() as Float32Array;
    expect(Buffer.from(batches[1].images.buffer, 6 * 3 * 32 * 32 * 4, 3 * 32 * 32 * 4).equals(Buffer.from(one.buffer))).toBe(true);
    const dropped = new DataLoader(ds, { batchSize: 64, dropLast: true });
    expect(dropped.length).toBe(12);
    expect((await collect(dropped)).length).toBe(12);
    // no transform: uint8 -> float32 [0,1]
    const raw = await collect(new DataLoader(new STL10({ root, split: 'unlabeled' }), { batchSize: 50 }));
    expect(raw[0].shape).toEqual([50, 3, 96, 96]);
    expect(Math.max(...raw[0].images.subarray(0, 5000))).toBeLessThanOrEqual(1);
    expect(Array.from(raw[0].labels).every((l) => l === -1)).toBe(true);
  });

  test('shuffle: a seeded permutation per epoch; same result whatever the thread count; exact resume', async () => {
    const ds = new STL10({ root, split: 'train', transform: aug });
    const a = new DataLoader(ds, { batchSize: 100, shuffle: true, seed: 3, workers: 1, prefetch: 1 });
    const b = new DataLoader(ds, { batchSize: 100, shuffle: true, seed: 3, workers: 2, prefetch: 3 });
    expect(a.epoch).toBe(0);
    const e0 = await collect(a);
    expect(a.epoch).toBe(1);
    const e0b = await collect(b);
    const seen = new Set<number>();
    e0.forEach((x, k) => {
      x.indices.forEach((i) => seen.add(i));
      expect(Buffer.from(x.images.buffer).equals(Buffer.from(e0b[k].images.buffer))).toBe(true);
      expect(Array.from(x.labels)).toEqual(Array.from(e0b[k].labels));
    });
    expect(seen.size).toBe(1000);
    const e1 = await collect(a);
    expect(Array.from(e1[0].indices)).not.toEqual(Array.from(e0[0].indices));
    // resume epoch 1 at batch 4: the same batches as the full pass
    const resumed = await collect(b, 1, 4);
    expect(resumed.length).toBe(6);
    expect(Buffer.from(resumed[0].images.buffer).equals(Buffer.from(e1[4].images.buffer))).toBe(true);
    expect(Array.from(permutation(10, 1, 0)).sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  test('breaking out mid-epoch frees the batches in flight and the loader keeps working', async () => {
    const ds = new STL10({ root, split: 'train', transform: aug });
    const loader = new DataLoader(ds, { batchSize: 32, shuffle: true, workers: 2, prefetch: 3 });
    for (let round = 0; round < 3; round++) {
      let n = 0;
      for await (const b of loader.iterate(round)) {
        b.images.dispose();
        b.labels.dispose();
        if (++n === 2) break;
      }
      expect(n).toBe(2);
    }
    await new Promise((r) => setTimeout(r, 200));
    expect((await collect(new DataLoader(ds, { batchSize: 500 }))).length).toBe(2);
  });

  test('errors: images of different sizes without a crop, bad options', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-if-'));
    const sharp = (await import('sharp')).default;
    fs.mkdirSync(path.join(tmp, 'a'));
    await sharp({ create: { width: 8, height: 6, channels: 3, background: '#f00' } }).png().toFile(path.join(tmp, 'a', '1.png'));
    await sharp({ create: { width: 5, height: 6, channels: 3, background: '#0f0' } }).jpeg().toFile(path.join(tmp, 'a', '2.jpg'));
    const ds = new ImageFolder({ root: tmp });
    await expect(collect(new DataLoader(ds, { batchSize: 2 }))).rejects.toThrow(/add a resize\/crop transform/);
    const ok = await collect(new DataLoader(new ImageFolder({ root: tmp, transform: T.resize([4, 4]) }), { batchSize: 2 }));
    expect(ok[0].shape).toEqual([2, 3, 4, 4]);
    expect(ok[0].images[0]).toBeCloseTo(1, 5); // red
    expect(() => new DataLoader(ds, { batchSize: 0 })).toThrow(/batchSize must be an integer >= 1/);
    fs.rmSync(tmp, { recursive: true });
  });
});

describe('ImageFolder', () => {
  const testDir = path.join(CIFAR_MINI, 'test');
  const have = fs.existsSync(testDir);
  if (!have) console.log(`skipping the cifar10-mini ImageFolder test: ${testDir} is not there (shared/ beside the checkout)`);
  (have ? test : test.skip)('cifar10-mini: sorted classes, sharp decode to uint8 CHW, loader batches', async () => {
    const ds = new ImageFolder({ root: testDir, transform: T.compose([T.randomHorizontalFlip(), T.normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])]) });
    expect(ds.classes).toEqual(fs.readdirSync(testDir).filter((d) => fs.statSync(path.join(testDir, d)).isDirectory()).sort());
    expect(ds.length).toBeGreaterThan(500);
    expect(() => ds.get(0)).toThrow(/await dataset.load\(\)/);
    await ds.load();
    const plain = new ImageFolder({ root: testDir });
    await plain.load();
    const { image, label } = plain.get(0);
    expect(image.shape).toEqual([3, 32, 32]);
    expect(image.dtype).toBe('uint8');
    expect(label).toBe(0);
    // pixel (0,0) matches sharp's own decode
    const sharp = (await import('sharp')).default;
    const ref = await sharp(ds.samples[0][0]).raw().toBuffer();
    const u = image.toArray() as Uint8Array;
    expect([u[0], u[1024], u[2048], u[1]]).toEqual([ref[0], ref[1], ref[2], ref[3]]);
    const loader = new DataLoader(ds, { batchSize: 256, shuffle: true, seed: 1 });
    let n = 0;
    for await (const b of loader) {
      expect(b.images.shape.slice(1)).toEqual([3, 32, 32]);
      n += b.labels.shape[0];
      b.images.dispose();
      b.labels.dispose();
    }
    expect(n).toBe(ds.length);
  });

  test('non-image files are skipped with a warning; a corrupt image is an error naming its path', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-if-'));
    const sharp = (await import('sharp')).default;
    for (const c of ['cat', 'ant']) fs.mkdirSync(path.join(tmp, c));
    await sharp({ create: { width: 4, height: 4, channels: 4, background: '#00f8' } }).png().toFile(path.join(tmp, 'ant', 'x.png'));
    await sharp({ create: { width: 4, height: 4, channels: 3, background: '#0f0' } }).jpeg().toFile(path.join(tmp, 'cat', 'y.JPG'));
    fs.writeFileSync(path.join(tmp, 'cat', 'notes.txt'), 'hello');
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const ds = new ImageFolder({ root: tmp });
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/skipped 1 file.*notes\.txt/));
    warn.mockRestore();
    expect(ds.classes).toEqual(['ant', 'cat']);
    expect(ds.samples.map((s) => s[1])).toEqual([0, 1]);
    await ds.load();
    expect(ds.get(0).image.shape).toEqual([3, 4, 4]); // alpha removed
    fs.writeFileSync(path.join(tmp, 'cat', 'z.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
    const warn2 = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const bad = new ImageFolder({ root: tmp });
    warn2.mockRestore();
    await expect(bad.load()).rejects.toThrow(new RegExp(`ImageFolder: ${path.join(tmp, 'cat', 'z.jpg').replace(/[.]/g, '\\.')}: truncated image: the file ends without JPEG's end-of-image marker`));
    fs.rmSync(tmp, { recursive: true });
    expect(() => new ImageFolder({ root: '/nonexistent-vggnet' })).toThrow(/nonexistent-vggnet: expected a folder of class folders/);
  });
});
