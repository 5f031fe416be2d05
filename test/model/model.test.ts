// VGGNet structure against torchvision: parameter counts, names, initialisation statistics, input checks.
import { vgg11, vgg13, vgg16, vgg19, VGGNet } from '../../lib/models/vgg';
import { Tensor } from '../../lib/tensor';
import { tinyVgg, randomBatch, TINY_CFG } from '../helpers/tiny';

// torchvision.models.vggXX(num_classes=1000) parameter counts (sum of p.numel()).
const COUNTS: [string, () => VGGNet, number][] = [
  ['vgg11', () => vgg11(), 132_863_336],
  ['vgg11_bn', () => vgg11({ batchNorm: true }), 132_868_840],
  ['vgg13', () => vgg13(), 133_047_848],
  ['vgg16', () => vgg16(), 138_357_544],
  ['vgg19', () => vgg19(), 143_667_240],
  ['vgg19_bn', () => vgg19({ batchNorm: true }), 143_678_248],
];

describe('VGG family', () => {
  test.each(COUNTS)('%s has torchvision\'s parameter count', (_name, make, count) => {
    const m = make();
    try {
      expect(m.numParameters()).toBe(count);
    } finally {
      m.dispose();
    }
  });

  test('vgg11_bn names and shapes are torchvision\'s', () => {
    const m = vgg11({ batchNorm: true, numClasses: 10 });
    try {
      const sd = m.stateDict();
      const names = Object.keys(sd);
      // torchvision: features.0 conv, .1 bn, .2 relu, .3 maxpool, .4 conv, .5 bn, ...
      expect(names.slice(0, 7)).toEqual([
        'features.0.weight', 'features.0.bias', 'features.1.weight', 'features.1.bias',
        'features.4.weight', 'features.4.bias', 'features.5.weight',
      ]);
      expect(names).toContain('features.1.running_mean');
      expect(names).toContain('features.1.running_var');
      expect(names).toContain('features.1.num_batches_tracked');
      expect(names).toContain('features.26.weight'); // last BN of vgg11_bn
      expect(names).toContain('classifier.6.bias');
      expect((sd['classifier.0.weight'] as Tensor).shape).toEqual([4096, 25088]);
      expect((sd['classifier.6.weight'] as Tensor).shape).toEqual([10, 4096]);
      expect((sd['features.0.weight'] as Tensor).shape).toEqual([64, 3, 3, 3]);
      expect(sd['features.1.num_batches_tracked']).toBe(0n);
      // 8 convs × (w, b) + 8 BNs × (w, b, mean, var, count) + 3 linears × (w, b)
      expect(names.length).toBe(8 * 2 + 8 * 5 + 3 * 2);
    } finally {
      m.dispose();
    }
  });
});

function stats(a: Float32Array): { mean: number; std: number } {
  let s = 0;
  for (const v of a) s += v;
  const mean = s / a.length;
  let q = 0;
  for (const v of a) q += (v - mean) ** 2;
  return { mean, std: Math.sqrt(q / a.length) };
}

describe('initialisation (torchvision init_weights)', () => {
  const m = new VGGNet([64, 'M', 128, 'M'], { numClasses: 10, batchNorm: true, hiddenFeatures: 512, seed: 3 });
  const sd = m.stateDict();
  afterAll(() => m.dispose());

  test('conv weights ~ N(0, sqrt(2 / (Cout·9))), biases 0', () => {
    for (const [name, cout] of [['features.0', 64], ['features.4', 128]] as const) {
      const w = (sd[`${name}.weight`] as Tensor).toFloat32();
      const { mean, std } = stats(w);
      const want = Math.sqrt(2 / (cout * 9));
      // n = 1 728 and 73 728 samples: the sample std is within a few percent of the true one.
      expect(Math.abs(std / want - 1)).toBeLessThan(0.05);
      expect(Math.abs(mean)).toBeLessThan(4 * want / Math.sqrt(w.length));
      expect((sd[`${name}.bias`] as Tensor).toNumbers()).toEqual(new Array(cout).fill(0));
    }
  });

  test('linear weights ~ N(0, 0.01), biases 0; BN weight 1, bias 0, running stats 0/1', () => {
    const w = (sd['classifier.0.weight'] as Tensor).toFloat32();
    const { mean, std } = stats(w);
    expect(Math.abs(std / 0.01 - 1)).toBeLessThan(0.01);
    expect(Math.abs(mean)).toBeLessThan(0.001);
    expect(Math.max(...Array.from((sd['classifier.6.bias'] as Tensor).toFloat32()).map(Math.abs))).toBe(0);
    expect((sd['features.1.weight'] as Tensor).toNumbers()).toEqual(new Array(64).fill(1));
    expect((sd['features.1.bias'] as Tensor).toNumbers()).toEqual(new Array(64).fill(0));
    expect((sd['features.1.running_mean'] as Tensor).toNumbers()).toEqual(new Array(64).fill(0));
    expect((sd['features.1.running_var'] as Tensor).toNumbers()).toEqual(new Array(64).fill(1));
  });

  test('same seed gives the same weights; another seed other weights', () => {
    const a = tinyVgg({ seed: 7 });
    const b = tinyVgg({ seed: 7 });
    const c = tinyVgg({ seed: 8 });
    const wa = (a.stateDict()['features.0.weight'] as Tensor).toArray();
    expect((b.stateDict()['features.0.weight'] as Tensor).toArray()).toEqual(wa);
    expect((c.stateDict()['features.0.weight'] as Tensor).toArray()).not.toEqual(wa);
    [a, b, c].forEach((m2) => m2.dispose());
  });

  test('initWeights: false gives PyTorch\'s default U(±1/sqrt(fan_in)) for weights and biases', () => {
    const d = new VGGNet([16, 'M'], { numClasses: 3, hiddenFeatures: 8, initWeights: false, seed: 1 });
    const w = (d.stateDict()['features.0.weight'] as Tensor).toFloat32();
    const bound = 1 / Math.sqrt(27);
    expect(Math.max(...Array.from(w).map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.abs(stats(w).std - bound / Math.sqrt(3))).toBeLessThan(0.15 * bound / Math.sqrt(3));
    const b = (d.stateDict()['features.0.bias'] as Tensor).toFloat32();
    expect(b.some((v) => v !== 0)).toBe(true);
    d.dispose();
  });
});

describe('forward shapes and input checks', () => {
  test.each([32, 48, 64, 96])('input %i² gives (N, numClasses) logits', (size) => {
    const m = tinyVgg();
    m.eval();
    const { x } = randomBatch(2, size, 5, size);
    const y = m.forward(x);
    expect(y.shape).toEqual([2, 5]);
    expect(y.dtype).toBe('float32');
    expect(y.toNumbers().every(Number.isFinite)).toBe(true);
    m.dispose();
  });

  test('wrong channel count, too small input and wrong device are clear errors', () => {
    const m = tinyVgg();
    expect(() => m.forward(Tensor.zeros([1, 1, 32, 32]))).toThrow(/expected input \(N, 3, H, W\), got \[1, 1, 32, 32\]/);
    expect(() => m.forward(Tensor.zeros([1, 3, 16, 16]))).toThrow(/at least 32×32/);
    expect(() => new VGGNet(TINY_CFG, { numClasses: 0 })).toThrow(/numClasses/);
    m.dispose();
  });

  test('eval mode is deterministic; dropout in train mode changes outputs', () => {
    const m = tinyVgg({ dropout: 0.5 });
    const { x } = randomBatch(4, 3);
    m.eval();
    const a = m.forward(x).toArray();
    const b = m.forward(x).toArray();
    expect(a).toEqual(b);
    m.train();
    const c = m.forward(x).toArray();
    m.releaseSaved();
    expect(c).not.toEqual(a);
    m.dispose();
  });
});
