// bf16 on the CPU. The CPU backend computes in float32; oneDNN 2.6 has bf16 convolutions only from avx512_core on.
// A bf16 request on the CPU must fail at model construction with an error that says why, and the accuracy check
// (tiny vgg11_bn, bf16 vs fp32 losses over a few steps) runs only where the backend can do bf16 — it is skipped
// with the reason printed elsewhere.
import { VGGNet, cfgs } from '../lib/models/vgg';
import { crossEntropy } from '../lib/nn/loss';
import { sgd } from '../lib/optim/sgd';
import * as ops from '../lib/ops';
import { Tensor } from '../lib/tensor';
import { randomBatch } from './helpers/tiny';

const isa = ops.cpuIsaInfo();
const TINY = cfgs.A.map((v) => (v === 'M' ? v : Math.max(8, (v as number) / 32)));

function build(precision: 'fp32' | 'bf16'): VGGNet {
  return new VGGNet(TINY, { numClasses: 5, batchNorm: true, dropout: 0, seed: 3, hiddenFeatures: 16, device: 'cpu', precision });
}

/** Why the CPU backend cannot train in bf16 here, or null when it can. */
function bf16Unavailable(): string | null {
  try {
    build('bf16').dispose();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

test('cpuIsaInfo reports oneDNN\'s ISA and bf16 support', () => {
  expect(typeof isa.isa).toBe('string');
  expect(isa.isa.length).toBeGreaterThan(0);
  expect(typeof isa.bf16).toBe('boolean');
  // oneDNN 2.6: bf16 convolutions need avx512_core at least
  if (/^(sse41|avx|avx2|avx2_vnni)$/.test(isa.isa)) expect(isa.bf16).toBe(false);
});

test('precision bf16 on the CPU fails at construction with the reason', () => {
  const why = bf16Unavailable();
  if (why === null) return; // a backend that does bf16: nothing to refuse
  expect(why).toMatch(/precision 'bf16' is not supported on the CPU/);
  expect(why).toContain(isa.isa);
  expect(why).toMatch(/use precision 'fp32'/);
});

test('a bf16 activation given to a CPU op names the op and the reason', () => {
  const x = Tensor.zeros([1, 8, 4, 4], { dtype: 'bfloat16' });
  const w = Tensor.zeros([8, 8, 3, 3]);
  try {
    expect(() => ops.conv2dForward(x, w, null, { strideH: 1, strideW: 1, padH: 1, padW: 1 }, false)).toThrow(
      new RegExp(`conv2d_forward: input: bfloat16 activations are not supported by the CPU backend.*${isa.isa}`),
    );
  } finally {
    x.dispose();
    w.dispose();
  }
});

const why = bf16Unavailable();
if (why) {
  // eslint-disable-next-line no-console
  console.log(`skipping the CPU bf16 training check: ${why}`);
}
(why ? test.skip : test)('tiny vgg11_bn: 20 steps in bf16 stay close to fp32 (losses within 5e-2 relative)', () => {
  const losses = (precision: 'fp32' | 'bf16') => {
    const m = build(precision);
    const opt = sgd({ lr: 0.02, momentum: 0.9 });
    const params = m.parameters();
    const out: number[] = [];
    for (let i = 0; i < 20; i++) {
      const b = randomBatch(8, 100 + (i % 4), 5);
      opt.zeroGrad(params);
      const logits = m.forward(b.x);
      const r = crossEntropy(logits, b.y);
      out.push(r.loss);
      m.backward(r.grad);
      opt.step(params);
      logits.dispose();
      r.grad.dispose();
      b.x.dispose();
      b.y.dispose();
    }
    m.dispose();
    opt.dispose();
    return out;
  };
  const f = losses('fp32'), h = losses('bf16');
  for (let i = 0; i < f.length; i++) expect(Math.abs(h[i] - f[i])).toBeLessThanOrEqual(5e-2 * Math.max(1, Math.abs(f[i])));
  expect(h[h.length - 1]).toBeLessThan(h[0]);
});
