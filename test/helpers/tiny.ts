// A small VGG for tests: same code path as vgg11..19, a few channels wide, 32×32 inputs.
import { VGGNet, VGGConfig } from '../../lib/models/vgg';
import { Tensor } from '../../lib/tensor';
import { Rng } from '../../lib/random';

export const TINY_CFG: VGGConfig = [4, 'M', 6, 'M', 8, 8, 'M', 8, 'M', 8, 'M'];

export function tinyVgg(opts: { batchNorm?: boolean; dropout?: number; seed?: number; numClasses?: number; initWeights?: boolean; precision?: 'fp32' | 'bf16' } = {}): VGGNet {
  return new VGGNet(TINY_CFG, {
    numClasses: opts.numClasses ?? 5,
    batchNorm: opts.batchNorm ?? false,
    dropout: opts.dropout ?? 0,
    seed: opts.seed ?? 1,
    hiddenFeatures: 12,
    initWeights: opts.initWeights ?? true,
    precision: opts.precision ?? 'fp32',
    device: (process.env.VGGNET_DEVICE as 'cpu' | 'cuda' | undefined) ?? 'cpu',
  });
}

export function randomBatch(n: number, seed: number, classes = 5, size = 32): { x: Tensor; y: Tensor; data: Float32Array; labels: Int32Array } {
  const rng = new Rng(seed);
  const data = rng.fillNormal(new Float32Array(n * 3 * size * size), 0, 1);
  const labels = Int32Array.from({ length: n }, () => rng.int(classes));
  const device = (process.env.VGGNET_DEVICE as 'cpu' | 'cuda' | undefined) ?? 'cpu';
  return { x: Tensor.from(data, [n, 3, size, size], { device }), y: Tensor.from(labels, [n], { device }), data, labels };
}
