// Trainer end to end on the bundled sample data (tiny VGG at 32×32): learns well above chance, writes checkpoints,
// logs and a plot that load; resumes bit-exactly (2 + 2 epochs, and a mid-epoch stop, vs 4 straight); stops cleanly
// on a NaN loss keeping the last good checkpoint.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { VGGNet, sgd, readSafetensors, Tensor } from '../../lib';
import { STL10, DataLoader, transforms as T, generateSampleStl10 } from '../../lib/data';
import { Trainer, TrainingDivergedError, loadCheckpoint, modelFromCheckpoint, readCheckpointMeta } from '../../lib/train/index';
import { cosineAnnealing, linearWarmup, reduceLROnPlateau } from '../../lib/optim/schedulers';

const TINY: (number | 'M')[] = [8, 'M', 16, 'M', 16, 'M', 16, 'M', 16, 'M'];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-trainer-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sampleRoot(name: string, train: number, test: number): string {
  const root = path.join(tmp, name);
  generateSampleStl10(path.join(root, 'stl10_binary'), { train, test, unlabeled: 0, seed: 1 });
  return root;
}
const trainTf = T.compose([T.randomResizedCrop(32, { scale: [0.6, 1] }), T.randomHorizontalFlip(), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
const evalTf = T.compose([T.evalTransform(32), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);

function loaders(root: string, batchSize: number) {
  const train = new STL10({ root, split: 'train', transform: trainTf });
  const test = new STL10({ root, split: 'test', transform: evalTf });
  return {
    train: new DataLoader(train, { batchSize, shuffle: true, seed: 7, workers: 2 }),
    test: new DataLoader(test, { batchSize: 64, workers: 2 }),
  };
}
const tiny = (o: { batchNorm?: boolean; dropout?: number; device?: 'cpu' | 'cuda' } = {}) =>
  new VGGNet(TINY, {
    numClasses: 10, hiddenFeatures: 64, seed: 3, batchNorm: o.batchNorm ?? true, dropout: o.dropout ?? 0.5, device: o.device,
  });

function weightsBytes(model: VGGNet): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(model.stateDict())) {
    out.set(k, v instanceof Tensor ? Buffer.from((v.toArray() as Float32Array).buffer) : Buffer.from(String(v)));
  }
  return out;
}

test('end to end on the sample data: well above chance; checkpoints, logs and plot exist and load', async () => {
  const root = sampleRoot('e2e', 600, 200);
  const { train, test } = loaders(root, 32);
  const model = tiny({ dropout: 0 });
  const ckDir = path.join(tmp, 'e2e-ck');
  const logDir = path.join(tmp, 'e2e-logs');
  const steps: number[] = [];
  const ends: number[] = [];
  let lagMax = 0;
  let last = Date.now();
  const timer = setInterval(() => {
    lagMax = Math.max(lagMax, Date.now() - last);
    last = Date.now();
  }, 20);
  const trainer = new Trainer(model, {
    optimizer: sgd({ lr: 0.1, momentum: 0.9, weightDecay: 5e-4 }),
    scheduler: linearWarmup({ epochs: 1, startFactor: 0.2 }, cosineAnnealing({ tMax: 4, etaMin: 0.01 })),
    checkpointDir: ckDir, saveEvery: 2, logDir, output: null,
    onStep: (s) => void steps.push(s.step), onEpochEnd: (e) => void ends.push(e.epoch),
  });
  const res = await trainer.fit(train, { epochs: 5, validation: test });
  clearInterval(timer);
  expect(res.interrupted).toBe(false);
  expect(ends).toEqual([1, 2, 3, 4, 5]);
  expect(steps.length).toBe(5 * Math.ceil(600 / 32));
  expect(lagMax).toBeLessThan(3000); // no multi-second blocking (sync fsync of checkpoints dominates under load)
  const ev = await trainer.evaluate(test);
  expect(ev.samples).toBe(200); // the last partial batch counted
  expect(ev.confusion.flat().reduce((a, b) => a + b, 0)).toBe(200);
  expect(ev.top1).toBeGreaterThan(0.25); // chance is 0.10
  expect(ev.top5).toBeGreaterThanOrEqual(ev.top1);
  expect(ev.top1).toBeCloseTo(res.history[4]['val.top1'], 10);
  for (const f of ['last', 'best', 'epoch-0002', 'epoch-0004']) expect(fs.existsSync(path.join(ckDir, `${f}.safetensors`))).toBe(true);
  const meta = readCheckpointMeta(path.join(ckDir, 'last.safetensors'));
  expect(meta.epoch).toBe(5);
  expect(meta.classes?.[0]).toBe('disc');
  expect(meta.history.length).toBe(5);
  expect(meta.scheduler?.type).toBe('linearWarmup');
  expect(meta.rng.dropout.length).toBe(2);
  const { tensors } = readSafetensors(path.join(ckDir, 'last.safetensors'));
  expect(Object.keys(tensors)).toContain('features.1.running_mean');
  expect(Object.keys(tensors)).toContain('optimizer.momentum_buffer.classifier.6.weight');
  // the best checkpoint rebuilds the model and gives its recorded accuracy
  // on the device and in the precision it was evaluated in (on CUDA: bf16 by default, against the CPU's fp32)
  const { model: reloaded, meta: bm } = modelFromCheckpoint(path.join(ckDir, 'best.safetensors'), { device: model.device, precision: model.precision });
  const again = await new Trainer(reloaded, { optimizer: sgd({ lr: 0.1 }), output: null }).evaluate(test);
  expect(again.top1).toBeCloseTo(bm.best!.top1, 10);
  // logs and plot
  const jsonl = fs.readFileSync(path.join(logDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  expect(jsonl.map((r) => r.epoch)).toEqual([1, 2, 3, 4, 5]);
  const csv = fs.readFileSync(path.join(logDir, 'metrics.csv'), 'utf8').trim().split('\n');
  expect(csv[0].startsWith('epoch,step,lr,train.loss,train.top1,val.loss,val.top1')).toBe(true);
  expect(csv.length).toBe(6);
  const svg = fs.readFileSync(path.join(logDir, 'metrics.svg'), 'utf8');
  expect(svg).toMatch(/^<\?xml[\s\S]*<svg[\s\S]*<path d="M[\s\S]*<\/svg>\s*$/);
}, 300_000);

test('exact resume: 2 + 2 epochs (and a mid-epoch stop) give bit-identical weights to 4 straight', async () => {
  const root = sampleRoot('resume', 160, 40);
  const mk = (ckDir: string, signalStopAt?: number) => {
    // Bit-identity is promised on the CPU backend: cuDNN's fastest algorithms may sum in a different order per run.
    const model = tiny({ device: 'cpu' });
    const trainer: Trainer = new Trainer(model, {
      optimizer: sgd({ lr: 0.02, momentum: 0.9, weightDecay: 5e-4 }),
      scheduler: reduceLROnPlateau({ monitor: 'val.loss', patience: 0, factor: 0.5 }),
      checkpointDir: ckDir, output: null,
      onStep: (s) => {
        if (s.step === signalStopAt) trainer.stop();
      },
    });
    return { model, trainer };
  };
  // straight
  const a = mk(path.join(tmp, 'ra'));
  let L = loaders(root, 32);
  await a.trainer.fit(L.train, { epochs: 4, validation: L.test });
  // 2 epochs, then a new process-like run resumes from last and stops in the middle of epoch 3 (step 12 of 5/epoch)
  const dir = path.join(tmp, 'rb');
  const b1 = mk(dir);
  L = loaders(root, 32);
  await b1.trainer.fit(L.train, { epochs: 2, validation: L.test });
  const b2 = mk(dir, 12);
  L = loaders(root, 32);
  const r2 = await b2.trainer.fit(L.train, { epochs: 4, validation: L.test, resume: path.join(dir, 'last.safetensors') });
  expect(r2.interrupted).toBe(true);
  const mid = readCheckpointMeta(path.join(dir, 'last.safetensors'));
  expect([mid.epoch, mid.batchInEpoch, mid.step]).toEqual([2, 2, 12]);
  const b3 = mk(dir);
  L = loaders(root, 32);
  const r3 = await b3.trainer.fit(L.train, { epochs: 4, validation: L.test, resume: path.join(dir, 'last.safetensors') });
  expect(r3.interrupted).toBe(false);
  const wa = weightsBytes(a.model), wb = weightsBytes(b3.model);
  expect([...wb.keys()]).toEqual([...wa.keys()]);
  const differ = [...wa.keys()].filter((k) => !wa.get(k)!.equals(wb.get(k)!));
  expect(differ).toEqual([]);
  expect(b3.trainer.optimizer.lr).toBe(a.trainer.optimizer.lr);
  expect(r3.history).toEqual(a.trainer.history.map((h) => ({ ...h, time_s: expect.any(Number), img_per_s: expect.any(Number) })));
  // momentum buffers too
  const ca = loadCheckpoint(path.join(tmp, 'ra', 'last.safetensors'));
  const cb = loadCheckpoint(path.join(dir, 'last.safetensors'));
  for (const k of Object.keys(ca.optimizer)) {
    const x = Buffer.from(((ca.optimizer[k] as Tensor).toArray() as Float32Array).buffer);
    const y = Buffer.from(((cb.optimizer[k] as Tensor).toArray() as Float32Array).buffer);
    expect(x.equals(y)).toBe(true);
  }
  ca.dispose();
  cb.dispose();
}, 300_000);

test('a NaN/Inf loss stops with a clear error and keeps the last good checkpoint', async () => {
  const root = sampleRoot('nan', 96, 32);
  const ckDir = path.join(tmp, 'nan-ck');
  const model = tiny({ batchNorm: false, dropout: 0 });
  const opt = sgd({ lr: 0.01 });
  const trainer = new Trainer(model, { optimizer: opt, checkpointDir: ckDir, output: null });
  let L = loaders(root, 32);
  await trainer.fit(L.train, { epochs: 1, validation: L.test });
  const before = fs.readFileSync(path.join(ckDir, 'last.safetensors'));
  opt.lr = 1e30;
  L = loaders(root, 32);
  const err = await trainer.fit(L.train, { epochs: 3, validation: L.test }).catch((e) => e);
  expect(err).toBeInstanceOf(TrainingDivergedError);
  expect(err.message).toMatch(/training diverged: the loss is (NaN|Infinity|-Infinity) at epoch 2, batch \d+ .*lr 1e\+30.*last good checkpoint is .*last\.safetensors/);
  expect(fs.readFileSync(path.join(ckDir, 'last.safetensors')).equals(before)).toBe(true);
  expect(readCheckpointMeta(path.join(ckDir, 'last.safetensors')).epoch).toBe(1);
});
