// train's resume and run-folder rules, end to end on a tiny STL10-format set (20 train / 10 test images): an explicit
// --lr, --momentum and --batch-size are honoured on resume (the LR used is read back from the epoch logs; a changed
// batch size continues at the same sample: the step count shows it), --epochs past a finished cosine re-plans it,
// flags that cannot be honoured are refused (exit 2) with the reason, a new run does not replace another run's
// checkpoints without --overwrite, --resume takes a folder, --evaluate tests a checkpoint, and stray arguments are
// refused. The DataLoader's startSample is checked against the epoch's order.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main as trainMain } from '../../lib/cli/train';
import { readCheckpointMeta } from '../../lib/train/index';
import { DataLoader, STL10 } from '../../lib/data';
import { tinyStl10 } from '../helpers/data_fixtures';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-resume-'));
const data = tinyStl10({ train: 20, test: 10, unlabeled: 1 });
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(data, { recursive: true, force: true });
});

function io(abortOn?: RegExp) {
  const out: string[] = [];
  const err: string[] = [];
  const controller = new AbortController();
  return {
    io: {
      stdout: {
        write: (s: string) => {
          out.push(s);
          if (abortOn && abortOn.test(s)) controller.abort();
        },
      },
      stderr: { write: (s: string) => err.push(s) },
      signal: controller.signal,
      command: 'vggnet train',
    },
    out: () => out.join(''),
    err: () => err.join(''),
  };
}

const tiny = ['--dataset', 'stl10', '--data', data, '--model', 'vgg11', '--width', '0.125', '--hidden-features', '16', '--image-size', '32', '--workers', '2', '--quiet'];
let n = 0;
const dirs = () => {
  n++;
  return { ck: path.join(tmp, `ck${n}`), logs: path.join(tmp, `logs${n}`) };
};
async function train(argv: string[], abortOn?: RegExp) {
  const c = io(abortOn);
  const code = await trainMain(argv, c.io);
  return { code, out: c.out(), err: c.err() };
}
const meta = (dir: string, f = 'last.safetensors') => readCheckpointMeta(path.join(dir, f));

test('an explicit --lr, --momentum and --weight-decay on resume are honoured and reported', async () => {
  const { ck, logs } = dirs();
  let r = await train([...tiny, '--epochs', '1', '--scheduler', 'none', '--lr', '0.01', '--checkpoint-dir', ck, '--log-dir', logs]);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  r = await train(['--resume', 'auto', '--checkpoint-dir', ck, '--epochs', '2', '--lr', '0.004', '--momentum', '0.5', '--weight-decay', '0.001', '--workers', '2', '--quiet']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/changed on the command line:\n/);
  expect(r.out).toMatch(/^ {4}--lr 0\.004 \(was --lr 0\.01\): the base of the LR schedule$/m);
  expect(r.out).toMatch(/--momentum 0\.5 \(was --momentum 0\.9\)/);
  expect(r.out).toMatch(/lr for epoch 2: 0\.01 -> 0\.004/);
  const m = meta(ck);
  expect(m.history.map((h) => h.lr)).toEqual([0.01, 0.004]); // the LR each epoch trained with
  expect(m.hyperParameters).toMatchObject({ momentum: 0.5, weightDecay: 0.001 });
  expect(m.config).toMatchObject({ lr: 0.004, momentum: 0.5, model: 'vgg11', width: 0.125 });
}, 180_000);

test('--epochs past the end of a cosine schedule re-plans it over the new total (not lr 0)', async () => {
  const { ck, logs } = dirs();
  let r = await train([...tiny, '--epochs', '1', '--scheduler', 'cosine', '--lr', '0.02', '--checkpoint-dir', ck, '--log-dir', logs]);
  expect(r.code).toBe(0);
  expect(meta(ck).lr).toBe(0); // the cosine over 1 epoch ends at 0
  r = await train(['--resume', ck, '--epochs', '3', '--workers', '2', '--quiet']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/--epochs 3 \(was --epochs 1\): the cosine schedule is re-planned over 3 epochs/);
  const lrs = meta(ck).history.map((h) => h.lr);
  // CosineAnnealingLR over tMax = 3 from base 0.02: epoch e trains at 0.01 (1 + cos(pi e / 3))
  expect(lrs[0]).toBe(0.02);
  expect(lrs[1]).toBeCloseTo(0.01 * (1 + Math.cos(Math.PI / 3)), 12);
  expect(lrs[2]).toBeCloseTo(0.01 * (1 + Math.cos((2 * Math.PI) / 3)), 12);
}, 180_000);

test('a changed --batch-size on a mid-epoch resume goes on at the same sample', async () => {
  const { ck, logs } = dirs();
  // Aborted before the first step: the trainer finishes that step (8 samples) and saves `last` part-way into epoch 1.
  let r = await train([...tiny, '--epochs', '1', '--batch-size', '8', '--checkpoint-dir', ck, '--log-dir', logs], /parameters on/);
  expect(r.code).toBe(130);
  expect(r.err).toMatch(/interrupted after 0 epoch\(s\) \+ 1 batch\(es\)/);
  // the hint is the user's command (as io.command says it was invoked), their flags, and --resume
  expect(r.err).toContain(`resume with: vggnet train ${tiny.join(' ')} --epochs 1 --batch-size 8 --checkpoint-dir ${ck} --log-dir ${logs} --resume ${path.join(ck, 'last.safetensors')}`);
  let m = meta(ck);
  expect(m.batchInEpoch).toBe(1);
  expect(m.rng.loader).toMatchObject({ sample: 8, batchSize: 8 });
  r = await train(['--resume', 'auto', '--checkpoint-dir', ck, '--batch-size', '4', '--workers', '2', '--quiet']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/--batch-size 4 \(was --batch-size 8\): epoch 1 goes on at sample 8 of 20 \(batch 2 of 5 at the new size\)/);
  m = meta(ck);
  // 1 step of 8, then the 12 samples left in 3 steps of 4 (reusing the batch index would have skipped 4 samples: 1 + 4)
  expect(m.step).toBe(4);
  expect(m.epoch).toBe(1);
  // a different seed in the middle of an epoch is refused; the run is unchanged
  r = await train([...tiny, '--epochs', '1', '--batch-size', '8', '--checkpoint-dir', path.join(ck, 'b'), '--log-dir', logs], /parameters on/);
  expect(r.code).toBe(130);
  r = await train(['--resume', path.join(ck, 'b'), '--seed', '5']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/--seed 5: .* was trained with --seed 1; the order of epoch 1, which the checkpoint is in the middle of, is drawn from the seed/);
}, 180_000);

test('the DataLoader\'s startSample continues the epoch\'s order at that sample, with any batch size', async () => {
  const ds = new STL10({ root: data, split: 'train' });
  for (const [bs, skip, dropLast] of [[4, 8, false], [6, 8, false], [6, 8, true], [3, 19, false], [7, 20, false]] as const) {
    const loader = new DataLoader(ds, { batchSize: bs, shuffle: true, seed: 3, workers: 1, dropLast });
    const order = Array.from(loader.order(2));
    const got: number[] = [];
    const batches: number[] = [];
    for await (const b of loader.iterate(2, { startSample: skip })) {
      got.push(...b.indices);
      batches.push(b.batch);
      b.images.dispose();
      b.labels.dispose();
    }
    const rest = order.slice(skip);
    expect(got).toEqual(dropLast ? rest.slice(0, Math.floor(rest.length / bs) * bs) : rest);
    expect(batches[0] ?? Math.floor(skip / bs)).toBe(Math.floor(skip / bs));
  }
  const loader = new DataLoader(ds, { batchSize: 4 });
  await expect(loader.iterate(0, { startSample: -1 }).next()).rejects.toThrow(/startSample must be a non-negative integer, got -1/);
  await expect(loader.iterate(0, { startSample: 4, startBatch: 1 }).next()).rejects.toThrow(/startBatch or startSample, not both/);
});

test('resume refuses what it cannot honour (exit 2, with the reason)', async () => {
  const { ck, logs } = dirs();
  expect((await train([...tiny, '--epochs', '1', '--checkpoint-dir', ck, '--log-dir', logs])).code).toBe(0);
  const cases: [string[], RegExp][] = [
    [['--model', 'vgg13'], /--model vgg13: .*last\.safetensors was trained with --model vgg11; a resumed run keeps its network/],
    [['--batch-norm'], /--batch-norm: .* was trained with \(no --batch-norm\); a resumed run keeps its network/],
    [['--scheduler', 'cosine'], /--scheduler cosine: .* was trained with --scheduler plateau; .* switching it on resume is not supported/],
    [['--pretrained', 'vgg11'], /--pretrained vgg11: .*--pretrained only starts a new run/],
    [['--dataset', 'sample'], /--dataset sample: .* was trained with --dataset stl10; a resumed run keeps its dataset/],
  ];
  for (const [argv, re] of cases) {
    const r = await train(['--resume', ck, ...argv]);
    expect({ argv, code: r.code }).toEqual({ argv, code: 2 });
    expect(r.err).toMatch(re);
  }
  // the run is complete: said so, evaluated, nothing trained
  const r = await train(['--resume', ck, '--workers', '2', '--quiet']);
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/the run is complete \(1 of 1 epochs\); give a larger --epochs to train on/);
  expect(meta(ck).step).toBe(1); // 20 images in one batch of 32
}, 180_000);

test('a new run does not replace another run\'s checkpoints unless --overwrite', async () => {
  const { ck, logs } = dirs();
  expect((await train([...tiny, '--epochs', '1', '--save-every', '1', '--checkpoint-dir', ck, '--log-dir', logs])).code).toBe(0);
  expect(fs.readdirSync(ck).sort()).toEqual(['best.safetensors', 'epoch-0001.safetensors', 'last.safetensors']);
  const before = fs.readFileSync(path.join(ck, 'last.safetensors'));
  let r = await train([...tiny, '--model', 'vgg13', '--epochs', '1', '--checkpoint-dir', ck, '--log-dir', logs]);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(new RegExp(`${ck.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} already holds the checkpoints of a run \\(last\\.safetensors: vgg11-w0\\.125, 1 of 1 epoch\\(s\\), best test top1 [\\d.]+%\\)\\. ` +
    'Continue it with --resume auto --checkpoint-dir .*, replace it with --overwrite, or choose another --checkpoint-dir'));
  expect(fs.readFileSync(path.join(ck, 'last.safetensors')).equals(before)).toBe(true);
  r = await train([...tiny, '--model', 'vgg13', '--epochs', '1', '--checkpoint-dir', ck, '--log-dir', logs, '--overwrite']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/--overwrite: removed the previous run's checkpoints from .* \(best\.safetensors, epoch-0001\.safetensors, last\.safetensors\)/);
  expect(fs.readdirSync(ck).sort()).toEqual(['best.safetensors', 'last.safetensors']); // no epoch file of the old run left
  expect(meta(ck).model.name).toBe('vgg13-w0.125');
}, 180_000);

test('--resume takes a folder (its last.safetensors) and names the path when there is nothing to resume', async () => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  fs.writeFileSync(path.join(empty, 'other.safetensors'), '');
  let r = await train(['--resume', empty]);
  expect(r.code).toBe(1);
  expect(r.err).toBe(`error: --resume ${empty}: the folder holds no last.safetensors (it has other.safetensors)\n`);
  r = await train(['--resume', path.join(tmp, 'missing')]);
  expect(r.err).toMatch(/--resume .*missing: no such checkpoint/);
  expect(r.err).not.toMatch(/EISDIR|ENOENT/);
});

test('--evaluate tests a checkpoint on the test split and prints the metrics and confusion matrix', async () => {
  const { ck, logs } = dirs();
  expect((await train([...tiny, '--epochs', '1', '--checkpoint-dir', ck, '--log-dir', logs])).code).toBe(0);
  const m = meta(ck, 'best.safetensors');
  let r = await train(['--evaluate', '--checkpoint-dir', ck, '--workers', '2']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/^evaluating .*best\.safetensors \(vgg11-w0\.125, 1 epoch\(s\) trained\) on the stl10 test split: 10 images at 32px/m);
  expect(r.out).toMatch(/per-class accuracy and confusion matrix \(test split, 10 images\)/);
  const top1 = Number(/^test top1 ([\d.]+)%$/m.exec(r.out)![1]);
  expect(top1).toBeCloseTo(100 * m.best!.top1, 2); // the same number the run measured on the same split
  r = await train(['--evaluate', path.join(ck, 'last.safetensors'), '--lr', '0.1']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/--lr 0\.1 has no effect with --evaluate/);
  r = await train(['--evaluate', ck, '--model', 'vgg16']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/--model vgg16: .* is a vgg11-w0\.125 \(--model vgg11\); --evaluate tests the checkpoint's network/);
}, 180_000);

test('stray positional arguments are refused', async () => {
  let r = await train(['--epochs', '3', 'extra']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/^error: unexpected argument 'extra': train takes options only\n/);
  r = await train(['checkpoint/last.safetensors']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/--resume checkpoint\/last\.safetensors continues a checkpoint/);
  r = await train([tmp]);
  expect(r.err).toMatch(/--data .* names a dataset folder/);
});
