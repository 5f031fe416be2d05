import * as fs from 'fs';
import * as path from 'path';
import * as os from 'os';
import { DataLoader, STL10, transforms as T, SAMPLE_CLASSES, generateSampleStl10 } from '../../lib/data';
import { sampleRoot, tinyStl10 } from '../helpers/data_fixtures';

const S = 96;
// The image as stored in the file: each channel column-major.
function fileImage(file: string, i: number): Uint8Array {
  const fd = fs.openSync(file, 'r');
  const raw = Buffer.alloc(3 * S * S);
  fs.readSync(fd, raw, 0, raw.length, i * raw.length);
  fs.closeSync(fd);
  const out = new Uint8Array(3 * S * S);
  for (let c = 0; c < 3; c++) for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) out[c * S * S + y * S + x] = raw[c * S * S + x * S + y];
  return out;
}

describe('STL10', () => {
  const root = sampleRoot();
  const dir = path.join(root, 'stl10_binary');

  test('splits, lengths, classes, labels 0..9 and -1', () => {
    const train = new STL10({ root, split: 'train' });
    const test = new STL10({ root, split: 'test' });
    const unl = new STL10({ root, split: 'unlabeled' });
    const both = new STL10({ root, split: 'train+unlabeled' });
    expect([train.length, test.length, unl.length, both.length]).toEqual([1000, 800, 200, 1200]);
    expect(train.classes).toEqual(SAMPLE_CLASSES);
    const y = fs.readFileSync(path.join(dir, 'train_y.bin'));
    const labels = train.labels();
    for (let i = 0; i < 1000; i++) expect(labels[i]).toBe(y[i] - 1);
    expect(Math.min(...labels)).toBe(0);
    expect(Math.max(...labels)).toBe(9);
    expect(Array.from(unl.labels()).every((l) => l === -1)).toBe(true);
    expect(both.get(999).label).toBe(labels[999]);
    expect(both.get(1000).label).toBe(-1);
  });

  test('get(i) without a transform: uint8 CHW, column-major file transposed', () => {
    const train = new STL10({ root, split: 'train' });
    for (const i of [0, 1, 517, 999]) {
      const { image, label } = train.get(i);
      expect(image.shape).toEqual([3, 96, 96]);
      expect(image.dtype).toBe('uint8');
      expect(Buffer.from(image.toArray() as Uint8Array).equals(Buffer.from(fileImage(path.join(dir, 'train_X.bin'), i)))).toBe(true);
      expect(label).toBe(i % 10);
      image.dispose();
    }
    const both = new STL10({ root, split: 'train+unlabeled' });
    const img = both.get(1003).image;
    expect(Buffer.from(img.toArray() as Uint8Array).equals(Buffer.from(fileImage(path.join(dir, 'unlabeled_X.bin'), 3)))).toBe(true);
    expect(() => train.get(1000)).toThrow(/out of range/);
  });

  test('get(i) with a transform gives the float32 output', () => {
    const ds = new STL10({ root, split: 'test', transform: T.compose([T.evalTransform(64), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]) });
    const { image, label } = ds.get(5);
    expect(image.shape).toEqual([3, 64, 64]);
    expect(image.dtype).toBe('float32');
    expect(label).toBe(5);
  });

  test('folds select the indices of that line of fold_indices.txt', () => {
    const lines = fs.readFileSync(path.join(dir, 'fold_indices.txt'), 'utf8').trim().split('\n');
    const fold3 = lines[3].split(' ').map(Number);
    const ds = new STL10({ root, split: 'train', folds: 3 });
    expect(ds.length).toBe(fold3.length);
    const all = new STL10({ root, split: 'train' }).labels();
    expect(Array.from(ds.labels())).toEqual(fold3.map((i) => all[i]));
    const a = ds.get(7).image.toArray(), b = new STL10({ root, split: 'train' }).get(fold3[7]).image.toArray();
    expect(Buffer.from(a as Uint8Array).equals(Buffer.from(b as Uint8Array))).toBe(true);
    expect(new STL10({ root, split: 'train+unlabeled', folds: 3 }).length).toBe(fold3.length + 200);
    expect(() => new STL10({ root, split: 'train', folds: 10 })).toThrow(/folds must be an integer in 0..9, got 10/);
    expect(() => new STL10({ root, split: 'test', folds: 1 })).toThrow(/folds/);
  });

  test('bad input: missing files, wrong sizes, bad labels, bad fold lines, bad split', () => {
    const r1 = tinyStl10();
    const d1 = path.join(r1, 'stl10_binary');
    expect(new STL10({ root: r1, split: 'train' }).length).toBe(20);
    fs.rmSync(path.join(d1, 'test_X.bin'));
    expect(() => new STL10({ root: r1, split: 'test' })).toThrow(/test_X\.bin: expected .*got missing file/);
    fs.truncateSync(path.join(d1, 'train_X.bin'), 27648 * 20 - 5);
    expect(() => new STL10({ root: r1, split: 'train' })).toThrow(/train_X\.bin: expected a size that is a positive multiple of 27648 bytes.*got 552955 bytes/);
    fs.rmSync(r1, { recursive: true });

    const r2 = tinyStl10();
    const d2 = path.join(r2, 'stl10_binary');
    const y = fs.readFileSync(path.join(d2, 'train_y.bin'));
    y[4] = 11;
    fs.writeFileSync(path.join(d2, 'train_y.bin'), y);
    expect(() => new STL10({ root: r2, split: 'train' })).toThrow(/train_y\.bin: expected labels in 1\.\.10, got 11 at index 4/);
    fs.writeFileSync(path.join(d2, 'train_y.bin'), y.subarray(0, 19));
    expect(() => new STL10({ root: r2, split: 'train' })).toThrow(/train_y\.bin: expected 20 bytes .*got 19 bytes/);
    fs.writeFileSync(path.join(d2, 'fold_indices.txt'), '0 1 2 99\n'.repeat(10));
    expect(() => new STL10({ root: r2, split: 'test', download: false }).length).not.toThrow();
    y[4] = 3;
    fs.writeFileSync(path.join(d2, 'train_y.bin'), y.subarray(0, 20));
    expect(() => new STL10({ root: r2, split: 'train', folds: 2 })).toThrow(/fold_indices\.txt: line 3: expected training indices in 0\.\.19, got 99/);
    fs.writeFileSync(path.join(d2, 'fold_indices.txt'), '0 1\n');
    expect(() => new STL10({ root: r2, split: 'train', folds: 0 })).toThrow(/fold_indices\.txt: expected 10 lines/);
    expect(() => new STL10({ root: r2, split: 'val' as never })).toThrow(/split must be one of/);
    fs.rmSync(r2, { recursive: true });
    expect(() => new STL10({ root: '/nonexistent-vggnet', split: 'train' })).toThrow(/class_names\.txt: expected the class names file, got missing file/);
  });

  test('sample data: deterministic from the seed, classes separable (nearest class mean on 8x8 > 50%)', async () => {
    const a = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-gen-'));
    generateSampleStl10(path.join(a, 'x'), { train: 10, test: 10, unlabeled: 2, seed: 4 });
    generateSampleStl10(path.join(a, 'y'), { train: 10, test: 10, unlabeled: 2, seed: 4 });
    generateSampleStl10(path.join(a, 'z'), { train: 10, test: 10, unlabeled: 2, seed: 5 });
    const read = (d: string): Buffer => fs.readFileSync(path.join(a, d, 'train_X.bin'));
    expect(read('x').equals(read('y'))).toBe(true);
    expect(read('x').equals(read('z'))).toBe(false);
    fs.rmSync(a, { recursive: true });

    const small = T.resize([8, 8]);
    const feats = async (split: 'train' | 'test') => {
      const xs: Float32Array[] = [], ys: number[] = [];
      for await (const b of new DataLoader(new STL10({ root, split, transform: small }), { batchSize: 200 })) {
        const im = b.images.toArray() as Float32Array, lb = b.labels.toArray() as Int32Array;
        for (let i = 0; i < lb.length; i++) { xs.push(im.slice(i * 192, (i + 1) * 192)); ys.push(lb[i]); }
        b.images.dispose(); b.labels.dispose();
      }
      return { xs, ys };
    };
    const tr = await feats('train'), te = await feats('test');
    const means = Array.from({ length: 10 }, () => new Float64Array(192));
    const counts = new Array(10).fill(0);
    tr.xs.forEach((x, i) => { counts[tr.ys[i]]++; x.forEach((v, j) => (means[tr.ys[i]][j] += v)); });
    means.forEach((m, k) => m.forEach((_, j) => (m[j] /= counts[k])));
    let correct = 0;
    te.xs.forEach((x, i) => {
      let best = -1, bd = Infinity;
      means.forEach((m, k) => { let d = 0; for (let j = 0; j < 192; j++) d += (x[j] - m[j]) ** 2; if (d < bd) { bd = d; best = k; } });
      if (best === te.ys[i]) correct++;
    });
    expect(correct / te.xs.length).toBeGreaterThan(0.5);
  });
});
