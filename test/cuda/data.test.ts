// The CUDA data path: non-blocking host->device copies (pinned staging, own stream) and augmentation on the GPU from
// uint8 batches, against the synchronous copies and the CPU pipeline. Runs where a GPU is usable (CI has none: the
// suite is skipped with the reason printed); the host side of the GPU augmentation is tested on the CPU in
// data_augment.test.ts.
import { memoryStats } from '../../lib/backend';
import { describeCuda } from '../ref/device';
import { augmentBatch, DataLoader, STL10, transforms as T } from '../../lib/data';
import { flatten, Transform } from '../../lib/data/transforms';
import { VGGNet, Precision } from '../../lib/models/vgg';
import * as ops from '../../lib/ops';
import { sgd } from '../../lib/optim/sgd';
import { Rng } from '../../lib/random';
import { Tensor, TensorData } from '../../lib/tensor';
import { Trainer } from '../../lib/train/trainer';
import { sampleRoot } from '../helpers/data_fixtures';


const NORM = T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD);
const conv = { strideH: 1, strideW: 1, padH: 1, padW: 1 };

describeCuda('CUDA data path', () => {
  test('non-blocking copies round-trip every dtype and layout; the source may be freed at once', () => {
    const rng = new Rng(3);
    const cases: [TensorData, number[], { dtype?: 'bfloat16'; layout?: 'nhwc' }][] = [
      [rng.fillNormal(new Float32Array(1 << 20), 0, 1), [1 << 20], {}],
      [Int32Array.from({ length: 1000 }, (_, i) => i * 7 - 300), [1000], {}],
      [Uint8Array.from({ length: 64 * 3 * 96 * 96 }, (_, i) => (i * 31) & 255), [64, 3, 96, 96], {}],
      [rng.fillNormal(new Float32Array(2 * 3 * 5 * 7), 0, 1), [2, 3, 5, 7], { layout: 'nhwc' }],
      [rng.fillNormal(new Float32Array(4096), 0, 1), [4096], { dtype: 'bfloat16' }],
      [new Float32Array(0), [0], {}],
    ];
    for (const [data, shape, opt] of cases) {
      const h = Tensor.from(data, shape, opt);
      const expected = h.toArray();
      const dtype = h.dtype;
      const d = h.to('cuda', { nonBlocking: true });
      h.dispose();
      // reuse the freed host block at once: the copy must already have taken the bytes
      const junk = Tensor.from(new Uint8Array(expected.byteLength).fill(0xee), [expected.byteLength]);
      expect(d.device).toBe('cuda');
      expect(d.dtype).toBe(dtype);
      expect(d.layout).toBe(opt.layout ?? 'nchw');
      expect(Buffer.from(d.toArray().buffer).equals(Buffer.from(expected.buffer))).toBe(true);
      d.dispose();
      junk.dispose();
    }
  });

  test('many non-blocking copies overlapped with queued compute give the synchronous copies\' results', () => {
    const rng = new Rng(9);
    // A long conv keeps the GPU busy while copies are queued. Blocks of the copies' size are freed while kernels
    // writing them are still queued (the copy must wait for them), and copies are freed unread while still in flight
    // (the next kernel given that block must wait for the copy).
    const bigX = Tensor.from(rng.fillNormal(new Float32Array(16 * 128 * 64 * 64), 0, 1), [16, 128, 64, 64], { device: 'cuda' });
    const bigW = Tensor.from(rng.fillNormal(new Float32Array(128 * 128 * 9), 0, 0.05), [128, 128, 3, 3], { device: 'cuda' });
    const smallX = Tensor.from(rng.fillNormal(new Float32Array(16 * 32 * 64 * 64), 0, 1), [16, 32, 64, 64], { device: 'cuda' });
    const smallW = Tensor.from(rng.fillNormal(new Float32Array(3 * 32 * 9), 0, 0.05), [3, 32, 3, 3], { device: 'cuda' });
    const shape = [16, 3, 64, 64]; // the small conv's output: the size of every copy below
    const hosts: Float32Array[] = [];
    const outs: Tensor[] = [];
    const smalls: Tensor[] = [];
    for (let i = 0; i < 40; i++) {
      const big = ops.conv2dForward(bigX, bigW, null, conv);
      const unread = Tensor.from(rng.fillNormal(new Float32Array(16 * 3 * 64 * 64), 0, 100), shape).to('cuda', { nonBlocking: true });
      unread.dispose(); // in flight, never used
      smalls.push(ops.conv2dForward(smallX, smallW, null, conv)); // likely in `unread`'s block
      ops.conv2dForward(smallX, smallW, null, conv).dispose(); // queued, then its block freed for the next copy
      const data = rng.fillNormal(new Float32Array(16 * 3 * 64 * 64), 0, 1);
      hosts.push(data);
      const h = Tensor.from(data, shape);
      const d = h.to('cuda', { nonBlocking: true });
      h.dispose();
      outs.push(ops.reluForward(d)); // the first use: queued after the copy
      d.dispose();
      big.dispose();
    }
    const refSmall = ops.conv2dForward(smallX, smallW, null, conv).toArray() as Float32Array;
    const scale = refSmall.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (let i = 0; i < hosts.length; i++) {
      const d = Tensor.from(hosts[i], shape).to('cuda');
      const ref = ops.reluForward(d);
      expect(Buffer.from(outs[i].toArray().buffer).equals(Buffer.from(ref.toArray().buffer))).toBe(true);
      const sm = smalls[i].toArray() as Float32Array;
      let worst = 0;
      for (let k = 0; k < sm.length; k++) worst = Math.max(worst, Math.abs(sm[k] - refSmall[k]));
      expect(worst).toBeLessThanOrEqual(1e-5 * scale);
      for (const t of [d, ref, outs[i], smalls[i]]) t.dispose();
    }
    for (const t of [bigX, bigW, smallX, smallW]) t.dispose();
  });

  const PIPELINES: [string, Transform][] = [
    ['rrc + flip + jitter + normalize', T.compose([T.randomResizedCrop(64), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4, 0.1), NORM])],
    ['resize(48) + flip + contrast/hue', T.compose([T.resize(48), T.randomHorizontalFlip(), T.colorJitter(0, 0.8, 0, 0.5)])],
    ['rrc + flip, no jitter', T.compose([T.randomResizedCrop([40, 52]), T.randomHorizontalFlip(0.7), NORM])],
  ];
  test.each(PIPELINES)('GPU augmentation (%s) equals the CPU pipeline: fp32 within 1e-5, bf16 within its rounding', async (_name, transform) => {
    const ds = new STL10({ root: sampleRoot(), split: 'train', transform });
    const loader = new DataLoader(ds, { batchSize: 32, shuffle: true, seed: 4, workers: 2 });
    const cpu: Float32Array[] = [];
    for await (const b of loader.iterate(1)) {
      cpu.push(b.images.toArray() as Float32Array);
      b.images.dispose();
      b.labels.dispose();
      if (cpu.length === 3) break;
    }
    let k = 0, worst = 0;
    for await (const b of loader.iterate(1, { deferAugment: true })) {
      const images = b.images.to('cuda', { nonBlocking: true });
      const params = b.augment!.params.to('cuda', { nonBlocking: true });
      const aug = { params, ops: flatten(transform) };
      const f32 = augmentBatch(images, aug);
      const bf = augmentBatch(images, aug, { dtype: 'bfloat16', layout: 'nhwc' });
      expect(f32.device).toBe('cuda');
      expect(bf.layout).toBe('nhwc');
      const a = f32.toArray() as Float32Array, c = bf.toArray() as Float32Array, e = cpu[k];
      expect(a.length).toBe(e.length);
      for (let i = 0; i < e.length; i++) {
        const d = Math.abs(a[i] - e[i]);
        worst = Math.max(worst, d);
        if (!(d <= 1e-5)) throw new Error(`fp32 element ${i}: GPU ${a[i]}, CPU ${e[i]}`);
        if (!(Math.abs(c[i] - e[i]) <= Math.abs(e[i]) / 256 + 1e-5)) throw new Error(`bf16 element ${i}: GPU ${c[i]}, CPU ${e[i]}`);
      }
      for (const t of [images, params, f32, bf, b.images, b.labels, b.augment!.params]) t.dispose();
      if (++k === 3) break;
    }
    expect(k).toBe(3);
    console.log(`GPU augmentation (${_name}): max |GPU - CPU| = ${worst} over 3 batches`);
  });

  async function trainLosses(precision: Precision, gpuAugment: boolean, steps: number): Promise<number[]> {
    const CFG: (number | 'M')[] = [16, 'M', 32, 'M', 64, 64, 'M', 128, 128, 'M', 128, 128, 'M'];
    const model = new VGGNet(CFG, { numClasses: 10, batchNorm: true, dropout: 0, hiddenFeatures: 128, seed: 7, device: 'cuda', precision });
    const transform = T.compose([T.randomResizedCrop(32), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4), NORM]);
    const loader = new DataLoader(new STL10({ root: sampleRoot(), split: 'train', transform }), { batchSize: 16, shuffle: true, seed: 2, workers: 2 });
    const losses: number[] = [];
    const trainer: Trainer = new Trainer(model, {
      optimizer: sgd({ lr: 0.02, momentum: 0.9 }), output: null, gpuAugment,
      onStep: (s) => {
        losses.push(s.loss);
        if (s.step >= steps) trainer.stop();
      },
    });
    const r = await trainer.fit(loader, { epochs: 1 });
    expect(r.interrupted).toBe(true);
    model.dispose();
    trainer.optimizer.dispose();
    return losses;
  }

  test('Trainer on CUDA: GPU augmentation + prefetched copies train like the CPU transforms; no device memory left behind', async () => {
    const cpuAug = await trainLosses('fp32', false, 12);
    const afterCpu = memoryStats('cuda').inUse; // the backend's workspace and SGD table stay; the same run keeps them
    const gpuAug = await trainLosses('fp32', true, 12);
    expect(memoryStats('cuda').inUse).toBe(afterCpu);
    expect(gpuAug.length).toBe(12);
    // inputs agree within 1e-5, so the runs differ by cuDNN's summation order at most
    cpuAug.forEach((l, i) => expect(Math.abs(gpuAug[i] - l)).toBeLessThanOrEqual(1e-3 * Math.abs(l) + 1e-4));
    const bf = await trainLosses('bf16', true, 12); // bf16 NHWC written by the kernels
    bf.forEach((l) => expect(Number.isFinite(l)).toBe(true));
    cpuAug.forEach((l, i) => expect(Math.abs(bf[i] - l)).toBeLessThanOrEqual(3e-2 * Math.abs(l) + 1e-3));
  });
});
