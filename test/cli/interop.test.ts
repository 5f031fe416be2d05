// The command line's interop: `train --pretrained PATH.pth` (PyTorch's format) fine-tunes with the last layer
// replaced, --log-dir gets a TensorBoard event file, `vggnet export --onnx` writes a model that onnxruntime runs to
// the checkpoint's own logits; `--pretrained NAME` fixes the architecture and downloads from VGGNET_WEIGHTS_URL
// (a local server here: its errors name the URL); bad combinations are clear errors.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import { main as trainMain } from '../../lib/cli/train';
import { main as cliMain } from '../../lib/cli/vggnet';
import { modelFromCheckpoint } from '../../lib/train/index';
import { VGGNet, cfgs } from '../../lib/models/vgg';
import { Tensor } from '../../lib/tensor';
import { noGrad } from '../../lib/nn/module';
import { Rng } from '../../lib/random';
import { captureIO } from '../helpers/cli_io';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-cli-interop-'));
process.env.VGGNET_CACHE = path.join(tmp, 'cache');
process.env.TORCH_HOME = path.join(tmp, 'torch');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const io = captureIO;

test('--help names the new options and the export command', async () => {
  const c = io();
  expect(await trainMain(['--help'], c.io)).toBe(0);
  expect(c.out()).toMatch(/--pretrained <name\|path>[\s\S]*vgg11\s+\.\.\.\s+vgg19_bn/);
  expect(c.out()).toMatch(/TensorBoard/);
  const d = io();
  expect(await cliMain(['--help'], d.io)).toBe(0);
  expect(d.out()).toMatch(/export +a checkpoint as ONNX/);
  const e = io();
  expect(await cliMain(['export', '--checkpoint', 'x.safetensors'], e.io)).toBe(2);
  expect(e.err()).toMatch(/required option '--onnx <file>' not specified/);
});

test('fine-tune from a .pth, TensorBoard in --log-dir, export to ONNX and run it in onnxruntime', async () => {
  // "Pretrained" weights for 7 classes in PyTorch's format, the CLI's vgg11_bn at width 1/8 and 32 hidden features.
  const cfg = cfgs.A.map((v) => (v === 'M' ? 'M' : Math.max(4, Math.round(v * 0.125))));
  const src = new VGGNet(cfg, { numClasses: 7, batchNorm: true, hiddenFeatures: 32, seed: 5, device: 'cpu' });
  const pth = path.join(tmp, 'src.pth');
  src.saveStateDict(pth);
  const ck = path.join(tmp, 'ck');
  const logs = path.join(tmp, 'logs');
  const c = io();
  const code = await trainMain(['--pretrained', pth, '--model', 'vgg11', '--batch-norm', '--width', '0.125', '--hidden-features', '32',
    '--image-size', '32', '--epochs', '1', '--lr', '0', '--workers', '2', '--quiet', '--data', path.join(tmp, 'nodata'),
    '--checkpoint-dir', ck, '--log-dir', logs], c.io);
  expect(c.err()).toBe('');
  expect(code).toBe(0);
  expect(c.out()).toMatch(/loaded pretrained weights from .*src\.pth; replaced the last layer for 10 classes \(classifier\.6\.weight \[7, 32\] -> \[10, 32\], classifier\.6\.bias \[7\] -> \[10\]\)/);
  expect(c.out()).toMatch(/TensorBoard: tensorboard --logdir /);
  expect(fs.readdirSync(logs).filter((f) => f.startsWith('events.out.tfevents.'))).toHaveLength(1);
  // lr 0: the convolutions are still the file's (momentum and weight decay move nothing at lr 0).
  const best = path.join(ck, 'best.safetensors');
  const { model } = modelFromCheckpoint(best, { device: 'cpu', precision: 'fp32' });
  expect((model.stateDict()['features.0.weight'] as Tensor).toFloat32()).toEqual((src.stateDict()['features.0.weight'] as Tensor).toFloat32());

  const onnx = path.join(tmp, 'model.onnx');
  const d = io();
  expect(await cliMain(['export', '--onnx', onnx, '--checkpoint', best], d.io)).toBe(0);
  expect(d.out()).toMatch(/wrote .*model\.onnx: vgg11_bn-w0\.125, input \(batch, 3, 32, 32\), 10 classes, opset 17/);
  const x = new Rng(3).fillNormal(new Float32Array(2 * 3 * 32 * 32), 0, 1);
  const xf = path.join(tmp, 'x.f32');
  fs.writeFileSync(xf, Buffer.from(x.buffer));
  const out = JSON.parse(execFileSync(process.execPath, [path.join(__dirname, '..', 'helpers', 'ort_run.js'), onnx, xf, '2,3,32,32'], { encoding: 'utf8' }));
  model.eval();
  const ours = noGrad(() => model.forward(Tensor.from(x, [2, 3, 32, 32])));
  const want = ours.toFloat32();
  ours.dispose();
  const scale = Math.max(...Array.from(want, Math.abs));
  expect(Math.max(...Array.from(want, (v, i) => Math.abs(v - out.data[i]))) / scale).toBeLessThan(1e-4);
  const e = io();
  expect(await cliMain(['export', '--onnx', onnx, '--checkpoint', path.join(tmp, 'none.safetensors')], e.io)).toBe(1);
  expect(e.err()).toMatch(/error: .*none\.safetensors/);
});

test('--pretrained NAME: the architecture follows the name; a conflicting flag and a failed download are clear errors', async () => {
  const srv = http.createServer((req, res) => { res.writeHead(404); res.end(); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  process.env.VGGNET_WEIGHTS_URL = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/mirror/`;
  try {
    let c = io();
    expect(await trainMain(['--pretrained', 'vgg16_bn', '--model', 'vgg11', '--data', path.join(tmp, 'nodata'), '--quiet'], c.io)).toBe(2); // a flag conflict: bad arguments
    expect(c.err()).toMatch(/--pretrained vgg16_bn is torchvision's vgg16_bn \(--model vgg16 --batch-norm --width 1 --hidden-features 4096\); it does not fit --model vgg11/);
    c = io();
    expect(await trainMain(['--pretrained', 'vgg11', '--width', '0.5', '--data', path.join(tmp, 'nodata'), '--quiet'], c.io)).toBe(2);
    expect(c.err()).toMatch(/it does not fit --width 0\.5/);
    c = io();
    expect(await trainMain(['--pretrained', 'vgg11', '--epochs', '1', '--data', path.join(tmp, 'nodata'), '--quiet'], c.io)).toBe(1);
    expect(c.err()).toMatch(/error: download: http:\/\/127\.0\.0\.1:\d+\/mirror\/vgg11-8a719046\.pth: expected HTTP 200 or 206, got 404/);
    c = io();
    expect(await trainMain(['--pretrained', path.join(tmp, 'missing.pth'), '--data', path.join(tmp, 'nodata'), '--quiet'], c.io)).toBe(1);
    expect(c.err()).toMatch(/missing\.pth': no such file, and not a torchvision name/);
  } finally {
    delete process.env.VGGNET_WEIGHTS_URL;
    await new Promise<void>((r) => srv.close(() => r()));
  }
});
