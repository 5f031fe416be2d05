// ONNX export run by onnxruntime-node (its CPU build): vgg11 and vgg11_bn at reduced widths with trained-looking
// weights and batch-norm statistics give our eval-mode logits within 1e-4 relative, at 32×32 (1×1 feature map:
// the adaptive pool as two MatMuls), 64×64 (2×2) and 224×224 (7×7: no pool), for batches of 1 and 3 (the batch axis
// is symbolic). The file itself is read back with an independent wire decoder: opset 17, IR version 8, the batch
// axis named, the class names in metadata_props.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { VGGNet, cfgs } from '../../lib/models/vgg';
import { Tensor } from '../../lib/tensor';
import { noGrad } from '../../lib/nn/module';
import { Rng } from '../../lib/random';
import { decodeMessage, num, str, sub, varints } from '../helpers/protowire';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-onnx-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** vgg11's table at 1/8 width, with every parameter and BN statistic drawn at random (not the init's near-zero logits). */
function model(batchNorm: boolean, seed: number): VGGNet {
  const cfg = cfgs.A.map((v) => (v === 'M' ? 'M' : v / 8));
  const m = new VGGNet(cfg, { numClasses: 7, batchNorm, hiddenFeatures: 32, seed, device: 'cpu', precision: 'fp32' }, batchNorm ? 'vgg11_bn' : 'vgg11');
  const rng = new Rng(seed);
  const sd = m.stateDict();
  const record: Record<string, Tensor | bigint> = {};
  for (const [k, v] of Object.entries(sd)) {
    if (!(v instanceof Tensor)) { record[k] = v; continue; }
    const a = new Float32Array(v.numel);
    if (k.endsWith('running_var')) for (let i = 0; i < a.length; i++) a[i] = 0.5 + rng.uniform() * 1.5;
    else {
      const fanIn = v.shape.length > 1 ? v.numel / v.shape[0] : 1;
      rng.fillNormal(a, 0, k.endsWith('running_mean') || k.endsWith('bias') ? 0.2 : 1.4 / Math.sqrt(fanIn));
      if (k.includes('features') && k.endsWith('weight') && v.shape.length === 1) for (let i = 0; i < a.length; i++) a[i] += 1;
    }
    record[k] = Tensor.from(a, v.shape);
  }
  m.loadStateDict(record);
  for (const v of Object.values(record)) if (v instanceof Tensor) v.dispose();
  m.eval();
  return m;
}

function compare(m: VGGNet, size: number, batches: number[]): void {
  const file = path.join(tmp, `${m.options.name}-${size}.onnx`);
  m.exportOnnx(file, { imageSize: size, classes: ['a', 'b', 'c', 'd', 'e', 'f', 'g'] });
  for (const n of batches) {
    const rng = new Rng(size * 10 + n);
    const x = rng.fillNormal(new Float32Array(n * 3 * size * size), 0, 1);
    const ours = noGrad(() => m.forward(Tensor.from(x, [n, 3, size, size])));
    const want = ours.toFloat32();
    ours.dispose();
    const xf = path.join(tmp, 'x.f32');
    fs.writeFileSync(xf, Buffer.from(x.buffer));
    const out = JSON.parse(execFileSync(process.execPath, [path.join(__dirname, '..', 'helpers', 'ort_run.js'), file, xf, `${n},3,${size},${size}`], { encoding: 'utf8', maxBuffer: 1 << 26 }));
    const got = out.data as number[];
    expect([out.inputs, out.outputs, out.dims]).toEqual([['input'], ['logits'], [n, 7]]);
    const scale = Math.max(...Array.from(want, Math.abs));
    expect(scale).toBeGreaterThan(0.1); // logits of a real size, so the relative check means something
    const err = Math.max(...Array.from(want, (v, i) => Math.abs(v - got[i])));
    expect(err / scale).toBeLessThan(1e-4);
  }
}

describe.each([false, true])('vgg11 (batch norm: %s)', (bn) => {
  const m = model(bn, bn ? 2 : 1);
  test(`at 32×32 and 64×64, batch 1 and 3: onnxruntime's logits are ours`, () => {
    compare(m, 32, [1, 3]);
    compare(m, 64, [3]);
  });
  test(`at 224×224 (7×7 map, no pool)`, () => {
    compare(m, 224, [1]);
  });
});

test('the file: opset 17, IR 8, symbolic batch axis, class names and preprocessing in metadata_props', () => {
  const m = model(true, 3);
  const file = path.join(tmp, 'meta.onnx');
  m.exportOnnx(file, { imageSize: 48, classes: ['cat', 'dog'] , metadata: { run: 'x' } });
  const model_ = decodeMessage(fs.readFileSync(file));
  expect(num(model_, 1)).toBe(8); // ir_version
  const opset = sub(model_, 8);
  expect(opset.map((o) => [str(o, 1) ?? '', num(o, 2)])).toEqual([['', 17]]);
  expect(str(model_, 2)).toBe('vggnet');
  const meta = Object.fromEntries(sub(model_, 14).map((e) => [str(e, 1), str(e, 2)]));
  expect(JSON.parse(meta.classes!)).toEqual(['cat', 'dog']);
  expect(JSON.parse(meta.mean!)).toEqual([0.485, 0.456, 0.406]);
  expect(meta.architecture).toBe('vgg11_bn');
  expect(meta.run).toBe('x');
  const graph = sub(model_, 7)[0];
  const [input] = sub(graph, 11);
  expect(str(input, 1)).toBe('input');
  const dims = sub(sub(sub(sub(input, 2)[0], 1)[0], 2)[0], 1).map((d) => str(d, 2) ?? num(d, 1));
  expect(dims).toEqual(['batch', 3, 48, 48]);
  const ops = sub(graph, 1).map((n) => str(n, 4));
  expect(ops.filter((o) => o === 'BatchNormalization')).toHaveLength(8);
  expect(ops).not.toContain('Dropout');
  const conv0 = sub(graph, 1)[0];
  const attrs = Object.fromEntries(sub(conv0, 5).map((a) => [str(a, 1), varints(a, 8)]));
  expect(attrs).toEqual({ kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1] });
  const inits = sub(graph, 5).map((t) => str(t, 8));
  expect(inits).toContain('features.0.weight');
  expect(inits).toContain('features.1.running_var');
  expect(inits).toContain('classifier.6.bias');
});
