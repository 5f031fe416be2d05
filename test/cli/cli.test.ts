// The command line: --help, clear errors for bad arguments, a short real run on the sample data (summary line,
// checkpoints, logs, --resume auto), predict on an image, and Ctrl-C (SIGINT) saving `last` and exiting 130.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ops from '../../lib/ops';
import { spawn } from 'child_process';
import sharp from 'sharp';
import { main as trainMain } from '../../lib/cli/train';
import { main as predictMain, predictFiles, checkpointTrainData } from '../../lib/cli/predict';
import { main as cliMain } from '../../lib/cli/vggnet';
import { readCheckpointMeta, modelFromCheckpoint } from '../../lib/train/index';
import { STL10, ensureSampleData, transforms as T } from '../../lib/data';
import { captureIO } from '../helpers/cli_io';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-cli-'));
process.env.VGGNET_CACHE = path.join(tmp, 'cache');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const io = captureIO;

test('--help lists every flag and exits 0', async () => {
  const c = io();
  expect(await trainMain(['--help'], c.io)).toBe(0);
  for (const f of ['--model', '--batch-norm', '--epochs', '--batch-size', '--lr', '--momentum', '--weight-decay', '--image-size', '--data',
    '--dataset', '--download', '--device', '--precision', '--workers', '--seed', '--checkpoint-dir', '--save-every', '--resume',
    '--scheduler', '--patience', '--factor', '--log-dir', '--pretrained']) {
    expect(c.out()).toContain(f);
  }
  expect(c.out()).toMatch(/choices: "vgg11", "vgg13", "vgg16",\s+"vgg19"/);
  const d = io();
  expect(await cliMain(['--help'], d.io)).toBe(0);
  expect(d.out()).toMatch(/train[\s\S]*predict[\s\S]*download/);
});

test('bad arguments are clear errors (exit 2)', async () => {
  const cases: [string[], RegExp][] = [
    [['--epochs', 'abc'], /--epochs must be an integer >= 1, got 'abc'/],
    [['--epochs', '0'], /--epochs must be an integer >= 1, got '0'/],
    [['--lr', '-1'], /--lr must be a number >= 0, got '-1'/],
    [['--factor', '2'], /--factor must be a number >= 0 and < 1, got '2'/],
    [['--model', 'vgg12'], /argument 'vgg12' is invalid. Allowed choices are vgg11, vgg13, vgg16, vgg19/],
    [['--dataset', 'imagenet'], /Allowed choices are auto, stl10, folder, sample/],
    [['--bogus'], /unknown option '--bogus'/],
    [['--device'], /option '--device <d>' argument missing/],
  ];
  for (const [argv, re] of cases) {
    const c = io();
    expect(await trainMain(argv, c.io)).toBe(2);
    expect(c.err()).toMatch(re);
  }
  const c = io();
  expect(await cliMain(['fly'], c.io)).toBe(2);
  expect(c.err()).toMatch(/unknown command 'fly'/);
});

test('missing data is a clear error (exit 1)', async () => {
  let c = io();
  expect(await trainMain(['--dataset', 'stl10', '--data', path.join(tmp, 'nothing')], c.io)).toBe(1);
  expect(c.err()).toMatch(/--dataset stl10: no STL10 under .*nothing.*add --download/);
  c = io();
  expect(await trainMain(['--dataset', 'folder', '--data', path.join(tmp, 'nothing')], c.io)).toBe(1);
  expect(c.err()).toMatch(/ImageFolder: .*nothing.train/);
  c = io();
  expect(await trainMain(['--resume', path.join(tmp, 'none.safetensors')], c.io)).toBe(1);
  expect(c.err()).toMatch(/--resume .*none.safetensors: no such checkpoint/);
});

const small = ['--width', '0.125', '--hidden-features', '32', '--image-size', '32', '--workers', '2', '--quiet'];

test('a short run on the sample data, --resume auto, then predict', async () => {
  const ck = path.join(tmp, 'ck');
  const logs = path.join(tmp, 'logs');
  let c = io();
  const code = await trainMain([...small, '--epochs', '1', '--data', path.join(tmp, 'nodata'), '--checkpoint-dir', ck, '--log-dir', logs], c.io);
  expect(c.err()).toBe('');
  expect(code).toBe(0);
  expect(c.out()).toMatch(/No STL10 under .*nodata.* training on the bundled sample dataset/);
  expect(c.out()).toMatch(/^sample preset \(for the options not given\): --model vgg11 --batch-norm --dropout [\d.]+ --crop-scale [\d.]+ --batch-size \d+ --lr [\d.]+ --scheduler cosine --warmup 1$/m);
  expect(c.out()).toMatch(/^epoch 1\/1 {2}train loss \d\.\d{4} top1 \d+\.\d\d%  test loss/m);
  expect(c.out()).toMatch(/^test top1 \d+\.\d\d%$/m);
  expect(c.out()).toMatch(/confusion matrix/);
  for (const f of ['last.safetensors', 'best.safetensors']) expect(fs.existsSync(path.join(ck, f))).toBe(true);
  for (const f of ['metrics.jsonl', 'metrics.csv', 'metrics.svg']) expect(fs.existsSync(path.join(logs, f))).toBe(true);
  // continue to 2 epochs: the saved options (sample preset, width, ...) come back from the checkpoint
  c = io();
  expect(await trainMain(['--resume', 'auto', '--epochs', '2', '--quiet', '--checkpoint-dir', ck, '--log-dir', logs], c.io)).toBe(0);
  expect(c.out()).toMatch(/resuming .*last.safetensors: 1 epoch\(s\) done/);
  expect(c.out()).toMatch(/^epoch 2\/2 /m);
  const meta = readCheckpointMeta(path.join(ck, 'last.safetensors'));
  expect(meta.epoch).toBe(2);
  expect(meta.history.length).toBe(2);
  expect(meta.config.width).toBe(0.125);
  expect(fs.readFileSync(path.join(logs, 'metrics.jsonl'), 'utf8').trim().split('\n').length).toBe(2);
  // predict on a PNG made from a test image
  const ds = new STL10({ root: ensureSampleData(), split: 'test' });
  const { image } = ds.get(0);
  const chw = image.toArray() as Uint8Array;
  image.dispose();
  const hwc = Buffer.alloc(chw.length);
  for (let i = 0; i < 96 * 96; i++) for (let k = 0; k < 3; k++) hwc[i * 3 + k] = chw[k * 96 * 96 + i];
  const png = path.join(tmp, 'img.png');
  await sharp(hwc, { raw: { width: 96, height: 96, channels: 3 } }).png().toFile(png);
  c = io();
  expect(await predictMain(['--checkpoint', path.join(ck, 'best.safetensors'), png], c.io)).toBe(0);
  const lines = c.out().trim().split('\n');
  expect(lines[0]).toBe(png);
  expect(lines.length).toBe(6);
  const probs = lines.slice(1).map((l) => Number(/([\d.]+)%/.exec(l)![1]));
  expect([...probs].sort((a, b) => b - a)).toEqual(probs);
  for (const l of lines.slice(1)) expect(l).toMatch(/%\s+(disc|square|triangle|ring|cross|hstripes|vstripes|checker|diamond|dots)$/);
  // predict sees the image exactly as the test split does (a lossless PNG of test image 0): same probabilities as
  // the model on the dataset's own eval pipeline (an earlier predict transposed the pixels twice).
  const [viaFile] = await predictFiles(path.join(ck, 'best.safetensors'), [png], { top: 10 });
  const { model, meta: m2 } = modelFromCheckpoint(path.join(ck, 'best.safetensors'));
  const size = Number(m2.config.imageSize);
  const evalDs = new STL10({ root: ensureSampleData(), split: 'test', transform: T.compose([T.evalTransform(size), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]) });
  const x = evalDs.get(0).image;
  const x4 = x.view([1, ...x.shape]);
  const [direct] = model.predict(x4);
  for (const t of [x, x4]) t.dispose();
  model.dispose();
  for (const t of viaFile.top) expect(Math.abs(t.probability - direct[t.index])).toBeLessThan(1e-6);
  // --precision bf16: the same weights with bf16 activations (emulated on a CPU without bf16 instructions): bf16 keeps
  // 8 significant bits, so each probability within 0.03 of float32's
  c = io();
  expect(await predictMain(['--checkpoint', path.join(ck, 'best.safetensors'), '--precision', 'bf16', '--top', '10', '--json', png], c.io)).toBe(0);
  const [bf16] = JSON.parse(c.out()) as { top: { index: number; probability: number }[] }[];
  expect(bf16.top).toHaveLength(10);
  if (!ops.cpuIsaInfo().bf16) expect(c.err()).toMatch(/^note: bf16 on this CPU .* is emulated in float32/);
  for (const t of bf16.top) expect(Math.abs(t.probability - direct[t.index])).toBeLessThan(0.03);
  // --precision int8: calibrated by default on the checkpoint's own training data (here the sample dataset's train
  // split), or on a folder of images (here the one PNG, found at any depth); scales saved and reused. Every
  // probability within 0.05 of float32's (uint8 activations, 7-8-bit weights on a tiny network).
  const ckFile = path.join(ck, 'best.safetensors');
  const int8Top = (out: string) => (JSON.parse(out) as { top: { index: number; probability: number }[] }[])[0].top;
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--precision', 'int8', '--calibration-images', '64', '--top', '10', '--json', png], c.io)).toBe(0);
  expect(c.err()).toMatch(/^note: int8: convolutions and classifier in int8 \(oneDNN\).* scales calibrated on 64 images of STL10's train split in /m);
  for (const t of int8Top(c.out())) expect(Math.abs(t.probability - direct[t.index])).toBeLessThan(0.05);
  const calDir = path.join(tmp, 'cal', 'a');
  fs.mkdirSync(calDir, { recursive: true });
  fs.copyFileSync(png, path.join(calDir, 'x.png'));
  const scalesFile = path.join(tmp, 'scales.json');
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--precision', 'int8', '--calibrate', path.join(tmp, 'cal'), '--save-int8-scales', scalesFile, '--top', '10', '--json', png], c.io)).toBe(0);
  expect(c.err()).toMatch(/scales calibrated on 1 images of .*cal$/m);
  const int8 = int8Top(c.out());
  for (const t of int8) expect(Math.abs(t.probability - direct[t.index])).toBeLessThan(0.05);
  expect(JSON.parse(fs.readFileSync(scalesFile, 'utf8')).format).toBe('vggnet-int8-scales/1');
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--precision', 'int8', '--int8-scales', scalesFile, '--top', '10', '--json', png], c.io)).toBe(0);
  expect(int8Top(c.out())).toEqual(int8);
  expect(c.err()).toMatch(/saved scales$/m);
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--calibrate', tmp, png], c.io)).toBe(2);
  expect(c.err()).toMatch(/--calibrate is for --precision int8/);
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--precision', 'int8', '--int8-scales', scalesFile, '--calibrate', tmp, png], c.io)).toBe(2);
  expect(c.err()).toMatch(/--int8-scales uses saved scales/);
  fs.writeFileSync(path.join(tmp, 'bad.json'), '{"format": 3}');
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--precision', 'int8', '--int8-scales', path.join(tmp, 'bad.json'), png], c.io)).toBe(1);
  expect(c.err()).toMatch(/--int8-scales .*bad.json: expected the JSON that predict --precision int8 --save-int8-scales FILE writes/);
  c = io();
  expect(await predictMain(['--checkpoint', ckFile, '--precision', 'int8', '--calibrate', path.join(tmp, 'nothing-here'), png], c.io)).toBe(1);
  expect(c.err()).toMatch(/--calibrate .*nothing-here: no such folder/);
  expect(() => checkpointTrainData({ dataset: 'folder', data: path.join(tmp, 'gone') }, 'ck.safetensors'))
    .toThrow(/ck.safetensors was trained on folder data in .*gone, which is not here; give --calibrate DIR/);
  c = io();
  expect(await predictMain(['--checkpoint', path.join(ck, 'best.safetensors'), '--precision', 'fp16', png], c.io)).toBe(2);
  expect(c.err()).toMatch(/--precision.*fp16.*(fp32|choices)/);
  c = io();
  expect(await predictMain(['--checkpoint', path.join(ck, 'best.safetensors'), path.join(tmp, 'nope.jpg')], c.io)).toBe(1);
  expect(c.err()).toMatch(/nope.jpg: no such file/);
}, 600_000);

const dist = path.join(__dirname, '..', '..', 'dist', 'train.js');
if (!fs.existsSync(dist)) console.log(`skipping "node dist/train.js: Ctrl-C finishes the step, saves last, prints how to resume, exits 130": ${dist} is not built (npm run build:ts)`);
(fs.existsSync(dist) ? test : test.skip)('node dist/train.js: Ctrl-C finishes the step, saves last, prints how to resume, exits 130', async () => {
  const ck = path.join(tmp, 'ck-int');
  // many epochs: on a fast GPU three would be over before the signal is sent
  const child = spawn(process.execPath, [dist, ...small, '--dataset', 'sample', '--epochs', '500', '--checkpoint-dir', ck, '--log-dir', path.join(tmp, 'logs-int')], {
    env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  // interrupt once training is under way (or stop waiting if the child died first: the asserts then show why)
  let exited = false;
  child.on('exit', () => (exited = true));
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (exited) {
        clearInterval(t);
        resolve();
      } else if (/parameters on/.test(out)) {
        clearInterval(t);
        setTimeout(() => {
          child.kill('SIGINT');
          resolve();
        }, 500);
      }
    }, 100);
  });
  const code = exited ? child.exitCode : await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  expect({ code, err: err.slice(-2000) }).toEqual({ code: 130, err: expect.stringMatching(/SIGINT: finishing the current step/) });
  expect(code).toBe(130);
  // the hint repeats the command as it was run, with --resume added
  expect(err).toContain(`resume with: node dist/train.js ${[...small, '--dataset', 'sample', '--epochs', '500', '--checkpoint-dir', ck, '--log-dir', path.join(tmp, 'logs-int')].join(' ')} --resume ${path.join(ck, 'last.safetensors')}`);
  const meta = readCheckpointMeta(path.join(ck, 'last.safetensors'));
  expect(meta.step).toBeGreaterThan(0);
}, 120_000);
