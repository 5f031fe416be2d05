// Deferred SGD (lib/optim/deferred.ts): a weight whose gradient comes pooled for its fold (VGGNet's first classifier
// layer training on maps up to 3×3) is stepped on small tensors, and worked out when read. Against a float64 SGD on
// the pooled-out gradient; reads, checkpoints and writes in between; refused checkpoint entries; a tiny VGG trained
// with and without it.
import { Tensor } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { VGGNet } from '../../lib/models/vgg';
import { Parameter, PoolGeometry } from '../../lib/nn/module';
import { runStep } from '../../lib/train/train_step';
import { SGD, sgd } from '../../lib/optim/sgd';
import { DeferredUpdate } from '../../lib/optim/deferred';
import { Rng } from '../../lib/random';
import { randomBatch, TINY_CFG } from '../helpers/tiny';
import * as R from '../ref/naive';
import { maxRelErr } from '../helpers/tensors';
import { withEnv } from '../helpers/env';

const device = (process.env.VGGNET_DEVICE as 'cpu' | 'cuda' | undefined) ?? 'cpu';
const cpuOnly = device === 'cpu' ? describe : describe.skip; // a CPU path (VGGNET_DEVICE=cuda)

const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

interface Hyper { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean }

// 37 rows × 67 channels: 2 479 planes, blocks that do not divide them (the native loops go parallel from 32 768
// planes on: Setup's `rows` for that).
const ROWS = 37, C = 67, OH = 7, OW = 7;

/** A weight (rows, C·49) whose pooled gradient `step` sets at random, an SGD, and a float64 twin of both. */
class Setup {
  rng: Rng;
  readonly param: Parameter;
  readonly opt: SGD;
  readonly geometry: PoolGeometry;
  // float64 reference: torch.optim.SGD on the pooled-out gradient
  w: Float64Array;
  b: Float64Array | null = null;

  constructor(readonly h: number, readonly wd: number, readonly hyper: Hyper, seed = 1, readonly rows = ROWS) {
    this.rng = new Rng(seed);
    const w0 = this.rng.fillNormal(new Float32Array(rows * C * OH * OW), 0, 1);
    this.param = new Parameter(Tensor.from(w0, [rows, C * OH * OW]));
    this.opt = sgd(hyper);
    this.geometry = [C, h, wd, OH, OW];
    this.w = Float64Array.from(w0);
  }

  /** One step with a fresh random small gradient; lr as given (a scheduler's change between steps). */
  step(lr = this.hyper.lr, forFold = true): void {
    const g = this.rng.fillNormal(new Float32Array(this.rows * C * this.h * this.wd), 0, 1);
    this.param.zeroGrad();
    const buf = this.param.pooledGradForBackward(this.geometry, forFold)!;
    const t = Tensor.from(g, [this.rows, C * this.h * this.wd]);
    buf.grad.copy_(t);
    t.dispose();
    this.opt.lr = lr;
    this.opt.step([this.param]);
    // the reference
    const G = R.adaptiveAvgForward(Float64Array.from(g), [this.rows, C, this.h, this.wd], OH, OW).y;
    const { momentum: mom, dampening, weightDecay: wdc, nesterov } = this.hyper;
    for (let i = 0; i < this.w.length; i++) {
      let d = G[i] + wdc * this.w[i];
      if (mom !== 0) {
        if (!this.b) this.b = new Float64Array(this.w.length);
        const first = this.opt.stepCount === 1;
        this.b[i] = first ? d : mom * this.b[i] + (1 - dampening) * d;
        d = nesterov ? d + mom * this.b[i] : this.b[i];
      }
      this.w[i] -= lr * d;
    }
  }

  weight(): Float32Array {
    return this.param.value.toArray() as Float32Array;
  }
  momentum(): Float32Array | null {
    const b = this.opt.stateDict([{ name: 'w', param: this.param }])['momentum_buffer.w'];
    return b ? (b.toArray() as Float32Array) : null;
  }
  dispose(): void {
    this.opt.dispose();
    this.param.dispose();
  }
}

// The fold of a (rows, C·49) weight to (rows, C·h·w), float64: each map position gathers the 7×7 outputs whose
// windows cover it, each weighing 1/area (as the pool computes them).
function foldRef(w: Float64Array, [c, h, wd]: number[], rows = ROWS): Float64Array {
  const out = new Float64Array(rows * c * h * wd);
  for (let p = 0; p < rows * c; p++) {
    for (let i = 0; i < OH; i++) {
      const h0 = Math.floor(i * h / OH), h1 = Math.ceil((i + 1) * h / OH);
      for (let j = 0; j < OW; j++) {
        const w0 = Math.floor(j * wd / OW), w1 = Math.ceil((j + 1) * wd / OW);
        const v = w[p * 49 + i * OW + j] / ((h1 - h0) * (w1 - w0));
        for (let y = h0; y < h1; y++) for (let x = w0; x < w1; x++) out[p * h * wd + y * wd + x] += v;
      }
    }
  }
  return out;
}

/** The deferral's fold against the float64 weight's (the forward multiplies by it). */
function foldErr(s: Setup): number {
  const fold = s.param.deferredFold(s.geometry);
  if (!fold) throw new Error('not deferred');
  const e = maxRelErr(foldRef(s.w, [C, s.h, s.wd], s.rows), fold.toArray() as Float32Array);
  fold.dispose();
  return e;
}

const FLAGS: [string, Hyper][] = [
  ['momentum + weight decay', { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 5e-2, nesterov: false }],
  ['nesterov', { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 1e-2, nesterov: true }],
  ['dampening', { lr: 0.05, momentum: 0.5, dampening: 0.3, weightDecay: 1e-2, nesterov: false }],
  ['plain SGD with weight decay', { lr: 0.05, momentum: 0, dampening: 0, weightDecay: 1e-1, nesterov: false }],
];
const LRS = [0.05, 0.05, 0.02, 0.1, 0.03];

cpuOnly('deferred SGD against float64 SGD on the pooled-out gradient', () => {
  // Five steps, the LR changing between them, eager and deferred, against float64. Measured (of each tensor's largest
  // entry): the weight eager ≤ 1.5e-7 (it is rounded every step), deferred ≤ 8e-8 (the anchors' part carried in
  // float64, rounded once); the fold and the momentum ≤ 1.8e-7 both. Checked: 5e-7.
  test.each([[1, 1], [2, 2], [3, 3], [1, 3], [5, 5]])('map %i×%i', (h, w) => {
    for (const [what, hyper] of FLAGS) {
      for (const deferred of [true, false]) {
        withEnv('VGGNET_DEFERRED_SGD', deferred ? '1' : '0', () => {
          const s = new Setup(h, w, hyper);
          for (const lr of LRS) s.step(lr);
          expect(s.param.deferral !== undefined).toBe(deferred);
          // the fold the forward multiplies by, from the small tensors, against the float64 weight's fold
          const fold = s.param.deferredFold(s.geometry) ?? ops.adaptivePoolFold(s.param.value, ...s.geometry);
          const refFold = foldRef(s.w, [C, h, w]);
          const errs = { weight: maxRelErr(s.w, s.weight()), fold: maxRelErr(refFold, fold.toArray() as Float32Array), momentum: s.b ? maxRelErr(s.b, s.momentum()!) : 0 };
          fold.dispose();
          for (const [k, e] of Object.entries(errs)) {
            if (!(e <= 5e-7)) throw new Error(`${what}, ${deferred ? 'deferred' : 'eager'}: ${k} differs from float64 by ${e} of its largest entry`);
          }
          s.dispose();
        });
      }
    }
  });

  test('33 500 planes (the native loops split over threads, blocks of them): 2×2 and 3×3, three steps', () => {
    for (const [h, w] of [[2, 2], [3, 3]]) {
      const s = new Setup(h, w, FLAGS[0][1], 2, 500);
      for (const lr of LRS.slice(0, 3)) s.step(lr);
      expect(s.param.deferral).toBeDefined();
      const fold = s.param.deferredFold(s.geometry)!;
      expect(maxRelErr(foldRef(s.w, [C, h, w], 500), fold.toArray() as Float32Array)).toBeLessThanOrEqual(5e-7);
      expect(maxRelErr(s.w, s.weight())).toBeLessThanOrEqual(5e-7);
      expect(maxRelErr(s.b!, s.momentum()!)).toBeLessThanOrEqual(5e-7);
      fold.dispose();
      s.dispose();
    }
  });

  // The bf16 forward takes the fold prepared as it is made: the same bits as preparing the float32 fold afterwards,
  // whether the CPU has bf16 dot products (a bf16 tensor) or emulates them (bf16-rounded float32).
  test('the fold prepared for bf16 activations is linearWeights(fold, bfloat16), bit for bit (3×3: 33 500 planes)', () => {
    for (const [h, w, rows] of [[2, 2, ROWS], [3, 3, 500], [5, 5, ROWS]]) {
      const s = new Setup(h, w, FLAGS[0][1], 2, rows);
      for (const lr of LRS.slice(0, 2)) s.step(lr);
      const fold = s.param.deferredFold(s.geometry)!;
      const want = ops.linearWeights(fold, 'bfloat16');
      const got = s.param.deferredPreparedFold(s.geometry, 'bfloat16')!;
      expect([got.dtype, got.tensor.dtype, got.tensor.shape]).toEqual(['bfloat16', want.tensor.dtype, want.tensor.shape]);
      expect(same(got.tensor.toFloat32(), want.tensor.toFloat32())).toBe(true); // bf16 widens exactly
      expect(s.param.deferredPreparedFold([C, h + 1, w, OH, OW], 'bfloat16')).toBeUndefined(); // another geometry
      for (const t of [fold, want, got]) t.dispose();
      s.dispose();
    }
  });

});

cpuOnly('deferred SGD: reads, checkpoints, writes', () => {
  const hyper = FLAGS[0][1];

  test('reading the weight or the optimizer state between steps changes nothing that follows, bit for bit', () => {
    const run = (reads: boolean) => {
      const s = new Setup(2, 2, hyper);
      for (const lr of LRS) {
        s.step(lr);
        if (reads) {
          s.weight();
          s.momentum();
        }
      }
      const r = { w: s.weight(), b: s.momentum()! };
      s.dispose();
      return r;
    };
    const a = run(false), b = run(true);
    expect(same(a.w, b.w)).toBe(true);
    expect(same(a.b, b.b)).toBe(true);
  });

  test('a checkpoint taken mid-deferral resumes bit for bit (the state dict carries anchors, z and P)', () => {
    const straight = new Setup(3, 3, hyper);
    straight.step(LRS[0]);
    straight.step(LRS[1]);
    // the checkpoint: the weight as read, and the optimizer's state, copied as a file would hold them
    const weight = straight.param.value.clone();
    const state = Object.fromEntries(Object.entries(straight.opt.stateDict([{ name: 'fc', param: straight.param }])).map(([k, v]) => [k, v.clone()]));
    expect(Object.keys(state).sort()).toEqual(['deferred_sgd.fc.anchor_weight', 'deferred_sgd.fc.coefficients', 'deferred_sgd.fc.geometry',
      'deferred_sgd.fc.z_momentum', 'deferred_sgd.fc.z_weight', 'momentum_buffer.fc']); // started at the first step: no momentum anchor
    // the resumed run: a new parameter and optimizer, the same gradients from here on
    const resumed = new Setup(3, 3, hyper);
    resumed.param.set(weight);
    resumed.opt.loadStateDict([{ name: 'fc', param: resumed.param }], state);
    resumed.opt.stepCount = 2;
    expect(resumed.param.deferral).toBeDefined();
    straight.rng = new Rng(77); // the same gradients from here on (the float64 reference is not compared here)
    resumed.rng = new Rng(77);
    for (const lr of LRS.slice(2)) {
      straight.step(lr);
      resumed.step(lr);
    }
    expect(same(straight.weight(), resumed.weight())).toBe(true);
    expect(same(straight.momentum()!, resumed.momentum()!)).toBe(true);
    for (const t of [weight, ...Object.values(state)]) t.dispose();
    straight.dispose();
    resumed.dispose();
  });

  test('settle works the values out into the tensors and ends the deferral; the next step defers anew', () => {
    const s = new Setup(2, 2, hyper);
    for (const lr of LRS.slice(0, 3)) s.step(lr);
    const before = { w: s.weight(), b: s.momentum()! };
    s.opt.settle();
    expect(s.param.deferral).toBeUndefined();
    expect(same(s.param.storedValue.toArray() as Float32Array, before.w)).toBe(true);
    expect(same(s.momentum()!, before.b)).toBe(true);
    for (const lr of LRS.slice(3)) s.step(lr);
    expect(s.param.deferral).toBeDefined();
    expect(foldErr(s)).toBeLessThanOrEqual(5e-7); // the momentum's anchor counts now
    expect(maxRelErr(s.w, s.weight())).toBeLessThanOrEqual(1e-6);
    expect(maxRelErr(s.b!, s.momentum()!)).toBeLessThanOrEqual(1e-6);
    s.dispose();
  });

  test('Parameter.set replaces the weight and keeps the momentum, as in an eager run; so does a write after a read', () => {
    for (const how of ['set', 'write after read'] as const) {
      const s = new Setup(1, 1, hyper);
      for (const lr of LRS.slice(0, 2)) s.step(lr);
      const v = new Rng(3).fillNormal(new Float32Array(ROWS * C * 49), 0, 1);
      const t = Tensor.from(v, [ROWS, C * 49]);
      if (how === 'set') s.param.set(t);
      else s.param.value.copy_(t); // in place, into the tensor the read returned
      t.dispose();
      s.w = Float64Array.from(v);
      for (const lr of LRS.slice(2)) s.step(lr);
      expect(foldErr(s)).toBeLessThanOrEqual(5e-7);
      expect(maxRelErr(s.w, s.weight())).toBeLessThanOrEqual(1e-6);
      expect(maxRelErr(s.b!, s.momentum()!)).toBeLessThanOrEqual(1e-6);
      s.dispose();
    }
  });

  test('a write through a reference kept from before the steps is refused, naming the way out', () => {
    const s = new Setup(1, 1, hyper);
    const stale = s.param.value;
    s.step();
    ops.fill(stale, 0); // the deferral's anchor: what the next step would compute from
    expect(() => s.step()).toThrow(/a weight was written while its update was deferred.*momentum is reset to zero.*Parameter\.set/);
    expect(s.param.deferral).toBeUndefined(); // ended: the weight holds what was written
    expect((s.param.value.toArray() as Float32Array).every((v) => v === 0)).toBe(true);
    expect(s.momentum()!.every((v) => v === 0)).toBe(true);
    s.dispose();
  });

  test('a gradient for another geometry, or not for the fold, or the switch off: the deferral ends and the step is eager', () => {
    const s = new Setup(2, 2, hyper);
    s.step();
    expect(s.param.deferral).toBeDefined();
    s.step(hyper.lr, false); // this gradient's forward multiplied by the weight itself
    expect(s.param.deferral).toBeUndefined();
    s.step();
    expect(s.param.deferral).toBeDefined();
    withEnv('VGGNET_DEFERRED_SGD', '0', () => s.step());
    expect(s.param.deferral).toBeUndefined();
    expect(maxRelErr(s.w, s.weight())).toBeLessThanOrEqual(1e-6);
    expect(maxRelErr(s.b!, s.momentum()!)).toBeLessThanOrEqual(1e-6);
    s.dispose();
  });

  test('a checkpoint\'s deferral entries are checked before anything is loaded', () => {
    const s = new Setup(2, 2, hyper);
    s.step();
    s.step();
    const good = Object.fromEntries(Object.entries(s.opt.stateDict([{ name: 'fc', param: s.param }])).map(([k, v]) => [k, v.clone()]));
    const target = new Setup(2, 2, hyper, 9);
    target.step(); // its own momentum, to see that nothing changes
    const bufBefore = target.momentum()!;
    const params = [{ name: 'fc', param: target.param }];
    const bad: [string, Record<string, Tensor>, RegExp][] = [
      ['an unknown entry', { ...good, 'deferred_sgd.fc.extra': good['deferred_sgd.fc.z_weight'] }, /deferred_sgd\.fc\.extra: not a deferred update's entry/],
      ['an unknown parameter', { ...good, 'deferred_sgd.nope.z_weight': good['deferred_sgd.fc.z_weight'] }, /deferred_sgd\.nope\.z_weight: not a deferred update's entry/],
      ['a geometry that does not fit', { ...good, 'deferred_sgd.fc.geometry': Tensor.from(BigInt64Array.from([5n, 2n, 2n, 7n, 7n]), [5]) }, /geometry: \[5, 2, 2, 7, 7\] does not fit/],
      ['z of the wrong shape', { ...good, 'deferred_sgd.fc.z_weight': Tensor.zeros([ROWS, 3]) }, /z_weight: expected a float32 tensor \[37, 268\]/],
      ['coefficients as float32', { ...good, 'deferred_sgd.fc.coefficients': Tensor.zeros([4]) }, /coefficients: expected 4 int64/],
      ['non-finite coefficients', { ...good, 'deferred_sgd.fc.coefficients': Tensor.from(new BigInt64Array(new Float64Array([NaN, 0, 0, 1]).buffer), [4]) }, /coefficients: expected finite numbers/],
      ['no z of the momentum', Object.fromEntries(Object.entries(good).filter(([k]) => !k.endsWith('z_momentum'))), /z_momentum: expected a float32 tensor/],
    ];
    for (const [what, state, msg] of bad) {
      expect(() => target.opt.loadStateDict(params, state, 'ck.safetensors')).toThrow(msg);
      expect(same(target.momentum()!, bufBefore)).toBe(true); // nothing loaded
      void what;
    }
    for (const t of Object.values(good)) t.dispose();
    s.dispose();
    target.dispose();
  });
});

cpuOnly('deferred SGD in training', () => {
  // A tiny VGG halves the map five times: 32 -> 1×1, 64 -> 2×2, 96 -> 3×3, 128 -> 4×4, 160 -> 5×5, 192 -> 6×6
  // (fp32): three steps with and without deferring the first classifier layer's update, both folding the pool
  // (VGGNET_TRAIN_FOLD=all: without the deferral training folds up to 3×3 only, and folding or not adds its own
  // rounding, 7e-6 at 160² on AVX-512 and 2.5e-5 on AVX2 through three steps). Both are SGD up to float rounding;
  // through the network's other layers that stays within 1e-5 of each tensor's largest entry (measured on AVX-512 and
  // under ONEDNN_MAX_CPU_ISA=AVX2: ≤ 6e-6 at 160², ≤ 2.2e-6 at the other sizes).
  test.each([32, 64, 96, 128, 160, 192])('%i²: losses and every weight after three steps match the eager step', (size) => {
    const train = (deferred: boolean) => withEnv('VGGNET_TRAIN_FOLD', 'all', () => withEnv('VGGNET_DEFERRED_SGD', deferred ? '1' : '0', () => {
      const m = new VGGNet(TINY_CFG, { numClasses: 5, seed: 4, hiddenFeatures: 12, dropout: 0.5, device: 'cpu' });
      const params = m.parameters();
      const opt = sgd({ lr: 0.1, momentum: 0.9, weightDecay: 1e-3 });
      const losses: number[] = [];
      for (let s = 0; s < 3; s++) {
        const { x, y } = randomBatch(3, 6 + s, 5, size);
        const out = runStep(m, opt, params.map((p) => p.param), x, y);
        losses.push(out.loss.item());
        for (const t of [out.logits, out.loss, x, y]) t.dispose();
      }
      const fc1 = params.find((p) => p.name === 'classifier.0.weight')!.param;
      const r = { losses, deferredAtEnd: fc1.deferral !== undefined, weights: params.map((p) => p.value.toArray() as Float32Array), names: params.map((p) => p.name) };
      opt.dispose();
      m.dispose();
      return r;
    }));
    const eager = train(false), deferred = train(true);
    expect([eager.deferredAtEnd, deferred.deferredAtEnd]).toEqual([false, true]);
    for (let s = 0; s < 3; s++) expect(Math.abs(deferred.losses[s] - eager.losses[s])).toBeLessThan(1e-5 * Math.abs(eager.losses[s]));
    for (let i = 0; i < eager.weights.length; i++) {
      const e = maxRelErr(eager.weights[i], deferred.weights[i]);
      if (!(e <= 1e-5)) throw new Error(`${eager.names[i]}: differs by ${e} of its largest entry`);
    }
  });

  test('the native ops refuse operands that do not fit', () => {
    const g = [4, 2, 2, 7, 7];
    const z = Tensor.zeros([3, 16]), fw = Tensor.zeros([3, 16]), w = Tensor.zeros([3, 196]);
    expect(() => ops.deferredFold(fw, null, Tensor.zeros([3, 15]), 1, 0, g)).toThrow(/deferred_fold: z has 15 columns, expected 4·2·2/);
    expect(() => ops.deferredFold(Tensor.zeros([3, 12]), null, z, 1, 0, g)).toThrow(/deferred_fold: the anchor's fold/);
    expect(() => ops.deferredFold(fw, null, z, 1, 0, g, 'int8' as 'bfloat16')).toThrow(/deferred_fold: activations must be float32 or bfloat16, got int8/);
    expect(() => ops.deferredMaterialise(w, null, Tensor.zeros([3, 195]), null, z, null, [1, 0, 0, 1], g)).toThrow(/the weight's anchor/);
    expect(() => ops.deferredMaterialise(null, w, w, null, z, null, [1, 0, 0, 1], g)).toThrow(/no momentum to work out/);
    expect(() => ops.deferredFold(fw, null, z, 1, 0, [4, 2, 2, 7, 2 ** 31])).toThrow(/deferredFold: geometry: pool width must be in \[1, 2147483647\], got 2147483648/);
    expect(() => ops.deferredFold(fw, null, z, 1, 0, [2 ** 30, 2 ** 30, 2 ** 30, 7, 7])).toThrow(/deferredFold: geometry: channels·height·width or channels·pool height·pool width overflows/);
    expect(() => ops.deferredMaterialise(w, null, w, null, z, null, [1, NaN, 0, 1], g)).toThrow(/coefficient/);
    for (const t of [z, fw, w]) t.dispose();
  });

  test('DeferredUpdate.start refuses a parameter deferred already', () => {
    const s = new Setup(1, 1, FLAGS[0][1]);
    s.step();
    expect(() => DeferredUpdate.start(s.param, undefined, s.geometry, false)).toThrow(/deferred already/);
    s.dispose();
  });
});
