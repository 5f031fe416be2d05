// PyTorch checkpoints without Python: files saved by PyTorch itself (test/fixtures/pth, made by
// scripts/make_pth_fixtures.py, in both the zip and the legacy stream format) read back to the values computed here;
// our writer's files read back by us and, where python3-torch is installed, by torch.load(weights_only=True) with
// every value equal; a tiny VGG saved by PyTorch loads into VGGNet and gives PyTorch's logits; and the real
// torchvision vgg11 file, when it is in the cache, predicts what torchvision predicts.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor } from '../../lib/tensor';
import { noGrad } from '../../lib/nn/module';
import { VGGNet, vgg11 } from '../../lib/models/vgg';
import { readPth, parsePth, serializePth, writePth } from '../../lib/io/pth';
import { readStateDict } from '../../lib/io/state_dict';
import { cachedPretrained } from '../../lib/io/hub';
import { StateRecord } from '../../lib/io/safetensors';
import { tinyVgg, TINY_CFG } from '../helpers/tiny';
import { testWithTorch, runPython, torchPython } from '../helpers/python';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-pth-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const FIX = path.join(__dirname, '..', 'fixtures', 'pth');

function values(v: Tensor | bigint): number[] | bigint {
  return typeof v === 'bigint' ? v : Array.from(v.toArray() as ArrayLike<number | bigint>, Number);
}
function dispose(r: StateRecord): void {
  for (const v of Object.values(r)) if (v instanceof Tensor) v.dispose();
}

describe('files written by PyTorch', () => {
  // The values scripts/make_pth_fixtures.py saved, computed here independently.
  const f32 = (xs: number[]) => Array.from(Float32Array.from(xs));
  const expected: Record<string, { dtype: string; shape: number[]; values: number[] } | bigint> = {
    '0.weight': { dtype: 'float32', shape: [3, 2, 1, 1], values: [0, 0.25, 0.5, 0.75, 1, 1.25] },
    '0.bias': { dtype: 'float32', shape: [3], values: [1, -2, 0.5] },
    '1.weight': { dtype: 'float32', shape: [3], values: [1, 1, 1] },
    '1.bias': { dtype: 'float32', shape: [3], values: [0, 0, 0] },
    '1.running_mean': { dtype: 'float32', shape: [3], values: [0.25, 0.5, 0.75] },
    '1.running_var': { dtype: 'float32', shape: [3], values: [1, 1, 1] },
    '1.num_batches_tracked': 7n,
    f32: { dtype: 'float32', shape: [2, 3, 4], values: f32(Array.from({ length: 24 }, (_, i) => Math.fround(i) / 7)) },
    // (arange(6)/3).reshape(2, 3).t(): row-major order of the transpose, from a float64 storage.
    f64_t: { dtype: 'float32', shape: [3, 2], values: f32([0, 3, 1, 4, 2, 5].map((i) => i / 3)) },
    f16: { dtype: 'float32', shape: [4], values: [0.5, -1.25, 65504, 2 ** -24] },
    bf16: { dtype: 'float32', shape: [4], values: [1, -3.5, 2 ** 100, 0.0078125] },
    i64: { dtype: 'int64', shape: [3], values: [-3, 0, 2 ** 40] },
    i32: { dtype: 'int32', shape: [2, 2], values: [1, -2, 3, 2 ** 30] },
    u8: { dtype: 'uint8', shape: [3], values: [0, 7, 255] },
    base: { dtype: 'float32', shape: [10], values: Array.from({ length: 10 }, (_, i) => i * 0.5) },
    view: { dtype: 'float32', shape: [4], values: [1.5, 2, 2.5, 3] },
    param: { dtype: 'float32', shape: [1, 2], values: [2, 4] },
  };
  test.each(['state_zip.pth', 'state_legacy.pth'])('%s: every tensor, its dtype, shape and values', (name) => {
    const { tensors } = readPth(path.join(FIX, name));
    expect(Object.keys(tensors)).toEqual(Object.keys(expected));
    for (const [k, want] of Object.entries(expected)) {
      const got = tensors[k];
      if (typeof want === 'bigint') {
        expect(got).toBe(want);
      } else {
        expect(got).toBeInstanceOf(Tensor);
        const t = got as Tensor;
        expect([k, t.dtype, t.shape]).toEqual([k, want.dtype, want.shape]);
        expect(values(t)).toEqual(want.values);
      }
    }
    dispose(tensors);
  });

  test('the two formats are told apart by content; a .pth path loads through readStateDict', () => {
    const a = readStateDict(path.join(FIX, 'state_zip.pth'));
    const b = readStateDict(path.join(FIX, 'state_legacy.pth'));
    for (const k of Object.keys(a)) expect([k, values(a[k])]).toEqual([k, values(b[k])]);
    dispose(a);
    dispose(b);
  });
});

describe('our writer', () => {
  test('round trip through our reader: names, dtypes, shapes and bits', () => {
    const m = tinyVgg({ batchNorm: true, seed: 5 });
    const sd = m.stateDict();
    (sd as Record<string, Tensor | bigint>)['features.1.num_batches_tracked'] = 123456789012n;
    sd.labels = Tensor.from(new Int32Array([3, -1, 2 ** 31 - 1]), [3]);
    sd.mask = Tensor.from(new Uint8Array([1, 0, 255]), [3]);
    sd.big = Tensor.from(new BigInt64Array([-(2n ** 62n), 5n]), [2]);
    const back = parsePth(Buffer.concat(serializePth(sd)), 'mem.pth').tensors;
    expect(Object.keys(back)).toEqual(Object.keys(sd));
    for (const [k, v] of Object.entries(sd)) {
      const w = back[k];
      if (typeof v === 'bigint') expect(w).toBe(v);
      else {
        expect([k, (w as Tensor).dtype, (w as Tensor).shape]).toEqual([k, v.dtype, v.shape]);
        expect(Buffer.from((w as Tensor).toArray().buffer).equals(Buffer.from(v.toArray().buffer))).toBe(true);
      }
    }
    dispose(back);
    for (const k of ['labels', 'mask', 'big']) (sd[k] as Tensor).dispose();
    // The same model through saveStateDict/loadStateDict by extension.
    const f = path.join(tmp, 'tiny.pth');
    m.saveStateDict(f);
    const m2 = tinyVgg({ batchNorm: true, seed: 9 });
    m2.loadStateDict(f);
    const s2 = m2.stateDict();
    for (const [k, v] of Object.entries(m.stateDict())) expect([k, values(s2[k])]).toEqual([k, values(v)]);
    expect(() => m.saveStateDict(path.join(tmp, 'x.pth'), { epoch: '3' })).toThrow(/x\.pth: a \.pth file has no place for metadata \(epoch\); use \.safetensors/);
  });

  testWithTorch('torch.load(weights_only=True) reads our file back identically', (py) => {
    const m = tinyVgg({ batchNorm: true, seed: 6 });
    const sd = m.stateDict();
    (sd as Record<string, Tensor | bigint>)['features.1.num_batches_tracked'] = 42n;
    sd.labels = Tensor.from(new Int32Array([3, -1, 7]), [3]);
    sd.mask = Tensor.from(new Uint8Array([1, 0, 255]), [3]);
    const f = path.join(tmp, 'for_torch.pth');
    writePth(f, sd);
    const out = JSON.parse(runPython(py, `
import json, sys, torch
d = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({k: [str(v.dtype), list(v.shape), v.reshape(-1).tolist()] for k, v in d.items()}))`, [f])) as Record<string, [string, number[], number[]]>;
    const dt: Record<string, string> = { float32: 'torch.float32', int32: 'torch.int32', int64: 'torch.int64', uint8: 'torch.uint8' };
    expect(Object.keys(out)).toEqual(Object.keys(sd));
    for (const [k, v] of Object.entries(sd)) {
      if (typeof v === 'bigint') expect(out[k]).toEqual(['torch.int64', [], [Number(v)]]);
      else expect(out[k]).toEqual([dt[v.dtype], v.shape, values(v)]); // JSON doubles hold float32 values exactly
    }
    (sd.labels as Tensor).dispose();
    (sd.mask as Tensor).dispose();
  });
});

// A module with torchvision's VGG layout (features / avgpool / classifier) at tiny widths, in PyTorch.
const TORCH_TINY = `
import json, sys, torch, torch.nn as nn
torch.manual_seed(0)
cfg = json.loads(sys.argv[1]); bn = sys.argv[2] == '1'; out_dir = sys.argv[3]
layers, c = [], 3
for v in cfg:
    if v == 'M': layers.append(nn.MaxPool2d(2, 2)); continue
    layers.append(nn.Conv2d(c, v, 3, padding=1))
    if bn: layers.append(nn.BatchNorm2d(v))
    layers.append(nn.ReLU(True)); c = v
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(c * 49, 12), nn.ReLU(True), nn.Dropout(), nn.Linear(12, 12), nn.ReLU(True), nn.Dropout(), nn.Linear(12, 5))
    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
m = Tiny()
with torch.no_grad():
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5); mod.running_var.uniform_(0.5, 2); mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.2, 0.2)
m.eval()
x = torch.randn(3, 3, 40, 40)
with torch.no_grad(): y = m(x)
sd = m.state_dict()
torch.save(sd, out_dir + '/tiny_zip.pth')
legacy = {k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')}  # as saved before BatchNorm v2
torch.save(legacy, out_dir + '/tiny_legacy.pth', _use_new_zipfile_serialization=False)
print(json.dumps({'x': x.reshape(-1).tolist(), 'y': y.reshape(-1).tolist()}))
`;

describe('a VGG saved by PyTorch', () => {
  for (const bn of [false, true]) {
    testWithTorch(`${bn ? 'with' : 'without'} batch norm: loads into VGGNet (zip and legacy) and gives PyTorch's logits`, (py) => {
      const dir = fs.mkdtempSync(path.join(tmp, 'tiny-'));
      const { x, y } = JSON.parse(runPython(py, TORCH_TINY, [JSON.stringify(TINY_CFG), bn ? '1' : '0', dir])) as { x: number[]; y: number[] };
      for (const f of ['tiny_zip.pth', 'tiny_legacy.pth']) {
        const m = new VGGNet(TINY_CFG, { numClasses: 5, hiddenFeatures: 12, batchNorm: bn, device: 'cpu', precision: 'fp32' });
        m.loadStateDict(path.join(dir, f)); // the legacy file has no num_batches_tracked: they are 0, as in PyTorch
        m.eval();
        const logits = noGrad(() => m.forward(Tensor.from(Float32Array.from(x), [3, 3, 40, 40])));
        const got = logits.toFloat32();
        logits.dispose();
        const scale = Math.max(...y.map(Math.abs));
        const err = Math.max(...y.map((v, i) => Math.abs(v - got[i])));
        expect(err / scale).toBeLessThan(1e-5);
      }
    });
  }
});

describe('torchvision vgg11 (IMAGENET1K_V1)', () => {
  test('predicts what torchvision predicts, where the file and python3-torch are at hand', async () => {
    const file = await cachedPretrained('vgg11');
    if (!file || !torchPython) {
      // eslint-disable-next-line no-console
      console.log(`skipping the real vgg11 comparison: ${!file ? 'vgg11-8a719046.pth is not in the weights cache or torch.hub\'s (no network here; `vggnet train --pretrained vgg11` fetches it)' : 'no Python with torch here'}`);
      return;
    }
    const m = vgg11({ device: 'cpu', precision: 'fp32' });
    m.loadStateDict(file);
    m.eval();
    // Four deterministic "images", normalised like ImageNet inputs.
    const x = Float32Array.from({ length: 4 * 3 * 224 * 224 }, (_, i) => Math.sin(i * 0.001 + (i % 7)) * 1.5);
    const xf = path.join(tmp, 'x.f32');
    fs.writeFileSync(xf, Buffer.from(x.buffer));
    const ref = JSON.parse(runPython(torchPython, `
import json, sys, numpy as np, torch, torchvision
m = torchvision.models.vgg11(); m.load_state_dict(torch.load(sys.argv[1])); m.eval()
x = torch.from_numpy(np.fromfile(sys.argv[2], dtype=np.float32).reshape(4, 3, 224, 224))
with torch.no_grad(): y = m(x)
print(json.dumps(y.reshape(-1).tolist()))`, [file, xf])) as number[];
    const logits = noGrad(() => m.forward(Tensor.from(x, [4, 3, 224, 224])));
    const got = logits.toFloat32();
    logits.dispose();
    for (let i = 0; i < 4; i++) {
      const row = (a: ArrayLike<number>) => Array.from(a).slice(i * 1000, (i + 1) * 1000);
      const top5 = (r: number[]) => r.map((v, j) => [v, j]).sort((p, q) => q[0] - p[0]).slice(0, 5).map((p) => p[1]);
      expect(top5(row(got))).toEqual(top5(row(ref)));
    }
    const scale = Math.max(...ref.map(Math.abs));
    expect(Math.max(...ref.map((v, i) => Math.abs(v - got[i]))) / scale).toBeLessThan(1e-4);
  }, 300000);
});
