// Concurrency: two Trainers training at the same time in one process (their steps interleave at the awaits, their
// DataLoaders assemble batches on native threads at once) end with exactly the weights each gets alone; a DataLoader
// abandoned mid-epoch (break) leaves no threads, native memory or growing RSS behind, and its process exits cleanly.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { Tensor } from '../../lib/tensor';
import { getNumThreads, setNumThreads } from '../../lib/backend';
import { VGGNet } from '../../lib/models/vgg';
import { sgd } from '../../lib/optim/sgd';
import { STL10, DataLoader, generateSampleStl10, transforms as T } from '../../lib/data';
import { Trainer } from '../../lib/train/index';
import { asanQuarantineMiB } from '../helpers/asan';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
const child = path.join(__dirname, '..', 'helpers', 'train_child.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-conc-'));
const root = path.join(tmp, 'data');
generateSampleStl10(path.join(root, 'stl10_binary'), { train: 32, test: 8, unlabeled: 1 });
const threads0 = getNumThreads();
// The models are tiny: one compute thread avoids OpenMP barrier costs on a busy 2-core machine (restored after).
beforeAll(() => setNumThreads(1));
afterAll(() => {
  setNumThreads(threads0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function setup(seed: number, tag: string, order: string[]) {
  const tf = T.compose([T.randomResizedCrop(32), T.randomHorizontalFlip(), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
  const train = new DataLoader(new STL10({ root, split: 'train', transform: tf }), { batchSize: 8, shuffle: true, seed, workers: 2 });
  const val = new DataLoader(new STL10({ root, split: 'test', transform: T.evalTransform(32) }), { batchSize: 8, workers: 2 });
  const model = new VGGNet([8, 'M', 8, 'M', 16, 'M', 16, 'M', 16, 'M'], {
    numClasses: 10, hiddenFeatures: 32, dropout: 0.5, batchNorm: seed % 2 === 0, seed, device: 'cpu', precision: 'fp32',
  });
  const trainer = new Trainer(model, {
    optimizer: sgd({ lr: 0.02, momentum: 0.9, weightDecay: 5e-4 }), output: null,
    checkpointDir: path.join(tmp, `ck-${tag}`), onStep: () => void order.push(tag),
  });
  return { model, run: () => trainer.fit(train, { epochs: 3, validation: val }) };
}

function weights(m: VGGNet): Record<string, number[] | string> {
  const out: Record<string, number[] | string> = {};
  for (const [k, v] of Object.entries(m.stateDict())) out[k] = typeof v === 'bigint' ? String(v) : Array.from((v as Tensor).toArray() as Float32Array);
  return out;
}

test('two Trainers at once give bit for bit what each gives alone', async () => {
  const alone: Record<string, ReturnType<typeof weights>> = {};
  const aloneHist: Record<string, unknown> = {};
  for (const [seed, tag] of [[1, 'a'], [2, 'b']] as const) {
    const s = setup(seed, `${tag}-alone`, []);
    const res = await s.run();
    alone[tag] = weights(s.model);
    aloneHist[tag] = res.history.map((h) => [h['train.loss'], h['val.loss'], h['val.top1']]);
    s.model.dispose();
  }
  const order: string[] = [];
  const a = setup(1, 'a', order);
  const b = setup(2, 'b', order);
  const [ra, rb] = await Promise.all([a.run(), b.run()]);
  // They really ran interleaved: the step order switches between the two many times.
  const switches = order.slice(1).filter((t, i) => t !== order[i]).length;
  expect(order.length).toBe(2 * 3 * 4);
  expect(switches).toBeGreaterThan(6);
  expect(weights(a.model)).toEqual(alone.a);
  expect(weights(b.model)).toEqual(alone.b);
  expect(ra.history.map((h) => [h['train.loss'], h['val.loss'], h['val.top1']])).toEqual(aloneHist.a);
  expect(rb.history.map((h) => [h['train.loss'], h['val.loss'], h['val.top1']])).toEqual(aloneHist.b);
  a.model.dispose();
  b.model.dispose();
});

if (!fs.existsSync(dist)) console.log(`skipping "a DataLoader abandoned mid-epoch 200 times: no threads or native memory left, RSS flat, clean exit": ${dist} is not built (npm run build:ts)`);
(fs.existsSync(dist) ? test : test.skip)('a DataLoader abandoned mid-epoch 200 times: no threads or native memory left, RSS flat, clean exit', () => {
  const t0 = Date.now();
  const p = spawnSync(process.execPath, ['--expose-gc', child, 'loader-break', root], { encoding: 'utf8', timeout: 120_000 });
  const seconds = (Date.now() - t0) / 1000;
  expect(p.signal).toBeNull();
  expect(p.stderr).toBe('');
  expect(p.status).toBe(0);
  const r = JSON.parse(p.stdout.trim());
  process.stdout.write(`concurrency: loader abandoned 200 times: threads ${r.warm.threads} -> ${r.end.threads}, RSS ${(r.warm.rss / 2 ** 20).toFixed(1)} -> ` +
    `${(r.end.rss / 2 ** 20).toFixed(1)} MiB, native in use ${r.warm.inUse} -> ${r.end.inUse} bytes; the child exited 0 after ${seconds.toFixed(1)} s\n`);
  expect(r.end.threads).toBe(r.warm.threads);
  expect(r.end.inUse).toBe(0);
  expect(r.end.rss - r.warm.rss).toBeLessThan((50 + asanQuarantineMiB()) * 2 ** 20);
});
