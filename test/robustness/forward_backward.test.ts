// A backward goes through the activations of the forward it belongs to, or is refused with an error saying why —
// never a gradient mixed from one forward's activations and another's output gradient. Modules keep only their latest
// forward's activations; `a = m.forward(x1); m.forward(x2); m.backward(dA)` used to return x2's activations combined
// with a's gradient without a word. Reference: the same model run once forward and backward on the batch alone.
import { Tensor } from '../../lib/tensor';
import { VGGNet } from '../../lib/models/vgg';
import { Linear, ReLU, Sequential } from '../../lib/nn/layers';
import { noGrad } from '../../lib/nn/module';
import { crossEntropy } from '../../lib/nn/loss';
import { device, describeOnDevice } from '../ref/device';
import { disposeKeptAfterEach, keep } from '../helpers/tensors';
import { uniformSource } from '../ref/random';

disposeKeptAfterEach();
const uniform = uniformSource(99);
const input = (n: number) => keep(Tensor.from(Float32Array.from(uniform(n * 3 * 32 * 32, -1, 1)), [n, 3, 32, 32], { device }));
const labels = (ls: number[]) => keep(Tensor.from(Int32Array.from(ls), [ls.length], { device }));
const tiny = () => new VGGNet([8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'], { numClasses: 4, hiddenFeatures: 8, dropout: 0, device, seed: 5, precision: 'fp32' });
/** Every parameter's gradient, by name (the stale ones read as zeros). */
const grads = (m: VGGNet) => Object.fromEntries(m.parameters().map((p) => [p.name, Array.from(p.grad.toArray() as Float32Array)]));

describeOnDevice(`forward/backward pairing on ${device}`, () => {
  test('the gradient of an earlier forward\'s output is refused, naming both forwards; no gradient is written', () => {
    const m = tiny();
    try {
      const x1 = input(2), x2 = input(2);
      const a = keep(m.forward(x1));
      keep(m.forward(x2));
      const dA = keep(crossEntropy(a, labels([1, 3])).grad);
      m.zeroGrad();
      expect(() => m.backward(dA)).toThrow(/VGGNet\.backward: the gradient is of forward #1's output, but the activations kept are forward #2's \(a later forward replaced them\)/);
      for (const [name, g] of Object.entries(grads(m))) expect([name, g.every((v) => v === 0)]).toEqual([name, true]);
    } finally {
      m.dispose();
    }
  });

  test('a hand-made gradient after two forwards is refused (which forward it belongs to cannot be known)', () => {
    const m = tiny();
    try {
      keep(m.forward(input(2)));
      keep(m.forward(input(2)));
      const dA = keep(Tensor.from(new Float32Array(8).fill(0.25), [2, 4], { device }));
      expect(() => m.backward(dA)).toThrow(/VGGNet\.backward: 2 forwards with gradients enabled ran since the last backward and only the last one's activations are kept/);
    } finally {
      m.dispose();
    }
  });

  test('the gradient of the latest forward goes through, equal to a lone forward and backward of that batch', () => {
    const ref = tiny(), m = tiny();
    try {
      const x1 = input(2), x2 = input(3), y2 = labels([0, 2, 3]);
      const b0 = keep(ref.forward(x2));
      ref.zeroGrad();
      ref.backward(keep(crossEntropy(b0, y2).grad));
      const want = grads(ref);

      keep(m.forward(x1)); // an earlier forward whose output gets no backward
      const b = keep(m.forward(x2));
      m.zeroGrad();
      m.backward(keep(crossEntropy(b, y2).grad));
      expect(grads(m)).toEqual(want);

      // After releaseSaved (or a forward under noGrad) the earlier forward is settled: an untagged gradient is fine.
      keep(m.forward(x1));
      m.releaseSaved();
      const c = keep(m.forward(x2));
      const dC = keep(crossEntropy(c, y2).grad.clone());
      m.zeroGrad();
      m.backward(dC);
      expect(grads(m)).toEqual(want);
    } finally {
      ref.dispose();
      m.dispose();
    }
  });

  test('a second backward of the same forward is refused', () => {
    const m = tiny();
    try {
      const a = keep(m.forward(input(2)));
      const dA = keep(crossEntropy(a, labels([0, 1])).grad);
      m.backward(dA);
      expect(() => m.backward(dA)).toThrow(/backward: no forward \(with gradients enabled\) to go back through/);
    } finally {
      m.dispose();
    }
  });

  test('the same holds for single layers and containers used on their own', () => {
    const lin = new Linear(3, 2, { device });
    const seq = new Sequential([new Linear(3, 4, { device }), new ReLU(), new Linear(4, 2, { device })]);
    try {
      for (const [name, m] of [['Linear', lin], ['Sequential', seq]] as const) {
        const x1 = keep(Tensor.from(new Float32Array([1, 2, 3]), [1, 3], { device }));
        const x2 = keep(Tensor.from(new Float32Array([-1, 5, 0.5]), [1, 3], { device }));
        const a = keep(m.forward(x1));
        keep(m.forward(x2));
        const dA = keep(crossEntropy(a, labels([1])).grad);
        expect(() => m.backward(dA)).toThrow(new RegExp(`${name}\\.backward: the gradient is of forward #1's output, but the activations kept are forward #2's`));
        const hand = keep(Tensor.from(new Float32Array([1, -1]), [1, 2], { device }));
        expect(() => m.backward(hand)).toThrow(new RegExp(`${name}\\.backward: 2 forwards with gradients enabled ran since the last backward`));
        // A forward under noGrad keeps nothing: the backward after it says there is nothing to go back through.
        noGrad(() => keep(m.forward(x1)));
        expect(() => m.backward(hand)).toThrow(/backward: no forward \(with gradients enabled\) to go back through/);
        const b = keep(m.forward(x2));
        const dx = m.backward(keep(crossEntropy(b, labels([0])).grad));
        expect(dx?.shape).toEqual([1, 3]);
        dx?.dispose();
      }
    } finally {
      lin.dispose();
      seq.dispose();
    }
  });

  test('calling a child of a model between the model\'s forward and backward is refused, not mixed in', () => {
    const m = tiny();
    try {
      const a = keep(m.forward(input(2)));
      keep(m.classifier.forward(keep(Tensor.zeros([2, 8 * 7 * 7], { device }))));
      expect(() => m.backward(keep(crossEntropy(a, labels([0, 1])).grad))).toThrow(/Sequential\.backward: the gradient is of forward #1's output, but the activations kept are forward #2's/);
    } finally {
      m.dispose();
    }
  });
});
