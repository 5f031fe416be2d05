// The CUDA backend against the CPU backend on whole training runs, and device memory over many steps. Runs where a
// GPU is usable (CI has none: the suite is skipped with the reason printed).
import { memoryStats } from '../../lib/backend';
import { describeCuda } from '../ref/device';
import { VGGNet, Precision } from '../../lib/models/vgg';
import { Tensor } from '../../lib/tensor';
import { trainStep } from '../../lib/train/train_step';
import { sgd } from '../../lib/optim/sgd';
import { Rng } from '../../lib/random';


// vgg11_bn at a quarter of the paper's width, 32×32 inputs: every layer kind, a few seconds per run.
const CFG: (number | 'M')[] = [16, 'M', 32, 'M', 64, 64, 'M', 128, 128, 'M', 128, 128, 'M'];

function losses(device: 'cpu' | 'cuda', precision: Precision, steps: number): number[] {
  const m = new VGGNet(CFG, { numClasses: 10, batchNorm: true, dropout: 0, hiddenFeatures: 128, seed: 7, device, precision });
  const rng = new Rng(5);
  const x = Tensor.from(rng.fillNormal(new Float32Array(8 * 3 * 32 * 32), 0, 1), [8, 3, 32, 32], { device });
  const y = Tensor.from(Int32Array.from({ length: 8 }, () => rng.int(10)), [8], { device });
  const opt = sgd({ lr: 0.02, momentum: 0.9, weightDecay: 5e-4 });
  const out: number[] = [];
  for (let s = 0; s < steps; s++) out.push(trainStep(m, opt, x, y));
  m.dispose();
  opt.dispose();
  return out;
}

describeCuda('CUDA backend vs CPU backend', () => {
  // Same weights (counter-based init), same data; the runs differ only by summation order (and bf16 rounding), which
  // grows slowly over the steps: fp32 within 1e-3 relative over 20 steps, bf16 within 3e-2.
  test.each([
    ['fp32', 1e-3],
    ['bf16', 3e-2],
  ] as [Precision, number][])('vgg11_bn-shaped net, 20 SGD steps: %s losses track the CPU\'s', (precision, rel) => {
    const cpu = losses('cpu', 'fp32', 20);
    const gpu = losses('cuda', precision, 20);
    expect(cpu[19]).toBeLessThan(cpu[0]); // it is learning
    cpu.forEach((l, i) => expect(Math.abs(gpu[i] - l)).toBeLessThanOrEqual(rel * Math.abs(l) + 1e-4));
  });

  test('500 training steps keep device memory flat', () => {
    const m = new VGGNet(CFG, { numClasses: 10, batchNorm: true, hiddenFeatures: 128, seed: 1, device: 'cuda' });
    const rng = new Rng(1);
    const x = Tensor.from(rng.fillNormal(new Float32Array(16 * 3 * 32 * 32), 0, 1), [16, 3, 32, 32], { device: 'cuda' });
    const y = Tensor.from(Int32Array.from({ length: 16 }, () => rng.int(10)), [16], { device: 'cuda' });
    const opt = sgd({ lr: 0.01, momentum: 0.9 });
    let after10 = 0;
    for (let s = 0; s < 500; s++) {
      trainStep(m, opt, x, y);
      if (s === 9) after10 = memoryStats('cuda').inUse;
    }
    const end = memoryStats('cuda').inUse;
    // in-use bytes are exact block sizes: a leak of one activation per step would add ≥ 490 blocks
    expect(end).toBe(after10);
    m.dispose();
    opt.dispose();
  });
});
