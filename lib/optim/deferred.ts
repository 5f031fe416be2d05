// SGD deferred on a weight whose gradient comes pooled and whose forward multiplies by its pool fold: VGGNet's first
// classifier layer when training on maps under 7×7 (inputs under 224²; lib/models/vgg.ts, foldsInTraining).
//
// Why it is exact: that weight's gradient is pool(G) per (output, channel) plane, G (out, C·h·w) the small gradient,
// pool the adaptive average pool's linear map of each h×w plane to 7×7. SGD with momentum, dampening, weight decay
// and Nesterov is linear in (weight, momentum, gradient), so after any number of steps from an anchor (W0, b0):
//   (w, b) = P·(W0, b0) + (pool(zW), pool(zB)),
// P a 2×2 matrix (each step's hyper-parameters applied to the anchors' part, in float64), and (zW, zB) what the very
// same SGD step gives on small tensors (out, C·h·w) from zero with the gradients G. The forward needs only w's fold:
// P00·fold(W0) + P01·fold(b0) + fold(pool(zW)), small too. So a step reads and writes tensors h·w/49 the size of the
// weight (VGG16's 4096×25088 at 64²: 2×2, 33 MB instead of 411 MB, and the momentum alike), and the weight itself is
// left as it is until something reads it (Parameter.value works it out: ops.deferredMaterialise, one pass).
//
// The values equal the eager step's up to float rounding, not bit for bit: the anchors' part is carried in float64
// and rounded once, where the eager step rounds every step. Two rules keep runs reproducible all the same: reading
// the weight does not change what later steps compute (the anchor is kept, copied aside when the weight is worked out
// in its place), and the deferral ends only where the caller says (settle: the Trainer at every epoch's end), or when
// the gradient stops coming pooled for the fold. A checkpoint taken mid-deferral carries the anchors, z and P
// (SGD.stateDict), so that a resumed run goes on exactly as the uninterrupted one.
import { Tensor } from '../tensor';
import * as ops from '../ops';
import type { Deferral, Parameter, PoolGeometry } from '../nn/module';

/** P's four float64s from their int64 bit patterns (DeferredState.coefficients). */
const coefficientsOf = (t: Tensor): number[] => Array.from(new Float64Array((t.toArray() as BigInt64Array).buffer.slice(0)));

const sameGeometry = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * P after one more step: the anchors' part of torch.optim.SGD's update (the gradient's part goes to z), with the
 * float32 hyper-parameters the native step computes with (native/cpu/sgd.cc).
 */
export function advanceCoefficients(p: readonly number[], h: ops.SgdStepParams, first: boolean): number[] {
  const f = Math.fround;
  const lr = f(h.lr), mom = f(h.momentum), damp = f(1 - h.dampening), wd = f(h.weightDecay);
  const w = [p[0], p[1]], b = [p[2], p[3]];
  const d = w.map((x) => wd * x);
  let nb = b, upd = d;
  if (mom !== 0) {
    nb = first ? d : b.map((x, i) => mom * x + damp * d[i]);
    upd = h.nesterov ? d.map((x, i) => x + mom * nb[i]) : nb;
  }
  return [...w.map((x, i) => x - lr * upd[i]), ...nb];
}

/** A checkpoint's keys of a deferral's state, after `deferred_sgd.<parameter name>.` (SGD.stateDict). */
export const DEFERRED_KEYS: Record<keyof DeferredState, string> = {
  anchorWeight: 'anchor_weight', anchorMomentum: 'anchor_momentum', zWeight: 'z_weight', zMomentum: 'z_momentum',
  coefficients: 'coefficients', geometry: 'geometry',
};

/** What a checkpoint keeps of a deferral (SGD.stateDict). */
export interface DeferredState {
  anchorWeight: Tensor;
  anchorMomentum: Tensor | null;
  zWeight: Tensor;
  zMomentum: Tensor | null;
  /** P's four float64s as int64 bit patterns (a float32 tensor would round them). */
  coefficients: Tensor;
  /** [C, H, W, oh, ow] as int64. */
  geometry: Tensor;
}

export class DeferredUpdate implements Deferral {
  private p = [1, 0, 0, 1]; // P, row-major: rows w, b; columns W0, b0
  private zW: Tensor;
  private zB: Tensor | undefined;
  private anchorW: Tensor; // the weight's own tensor until a read works the weight out in its place
  private anchorB: Tensor | undefined; // likewise the momentum buffer
  private foldW: Tensor | undefined; // the anchors' folds, made at the first fold()
  private foldB: Tensor | undefined;
  private weightCurrent = true; // whether the weight's tensor holds the current values
  private momentumCurrent = true;
  private weightVersion: number; // the weight's version after our last write: another's write is seen (checkWeight)

  private constructor(
    private readonly param: Parameter,
    private readonly buffer: Tensor | undefined,
    readonly geometry: PoolGeometry,
    private anchoredMomentum: boolean, // whether b0 counts (false: started at the first step, or no momentum)
    z?: { w: Tensor; b: Tensor | undefined },
  ) {
    const w = param.storedValue;
    const [c, h, width] = geometry;
    const small = [w.shape[0], c * h * width];
    this.zW = z?.w ?? Tensor.zeros(small);
    this.zB = buffer ? (z?.b ?? Tensor.zeros(small)) : undefined;
    this.anchorW = w;
    this.anchorB = buffer;
    this.weightVersion = ops.tensorVersion(w);
    param.deferral = this;
  }

  /**
   * Starts deferring param's updates (momentum buffer `buffer`, or none without momentum) from its current values.
   * On the optimizer's first step the buffer is new: it is zeroed (its anchor weighs nothing then, but 0·NaN is NaN).
   */
  static start(param: Parameter, buffer: Tensor | undefined, geometry: PoolGeometry, first: boolean): DeferredUpdate {
    if (param.deferral) throw new Error('DeferredUpdate.start: the parameter is deferred already');
    if (buffer && first) ops.fill(buffer, 0);
    return new DeferredUpdate(param, buffer, [...geometry] as PoolGeometry, buffer !== undefined && !first);
  }

  /** Whether the next step, pooled for this geometry, with or without momentum, can go on deferring. */
  continuesWith(geometry: readonly number[], momentum: boolean): boolean {
    return sameGeometry(geometry, this.geometry) && momentum === (this.buffer !== undefined);
  }

  /** One SGD step with the small gradient G (as the pooled gradient holds it: (out, C·h·w)). */
  step(grad: Tensor, h: ops.SgdStepParams, first: boolean): void {
    this.checkWeight();
    ops.sgdStep([this.zW], [grad], this.zB ? [this.zB] : [], h, first);
    this.p = advanceCoefficients(this.p, h, first);
    this.weightCurrent = this.momentumCurrent = false;
  }

  fold(geometry: PoolGeometry): Tensor | undefined {
    if (!this.anchorsFolded(geometry)) return undefined;
    return ops.deferredFold(this.foldW!, this.foldB ?? null, this.zW, this.p[0], this.p[1], this.geometry);
  }

  preparedFold(geometry: PoolGeometry, activation: 'bfloat16'): ops.PreparedLinearWeights | undefined {
    if (!this.anchorsFolded(geometry)) return undefined;
    return ops.deferredFold(this.foldW!, this.foldB ?? null, this.zW, this.p[0], this.p[1], this.geometry, activation);
  }

  /** Whether the deferral is for this geometry; then the anchors' folds are made (at the first call). */
  private anchorsFolded(geometry: PoolGeometry): boolean {
    if (!sameGeometry(geometry, this.geometry)) return false;
    this.checkWeight();
    if (!this.foldW) {
      this.foldW = ops.adaptivePoolFold(this.anchorW, ...this.geometry);
      if (this.anchoredMomentum) this.foldB = ops.adaptivePoolFold(this.anchorB!, ...this.geometry);
    }
    return true;
  }

  materialiseWeight(): void {
    this.checkWeight();
    if (this.weightCurrent) return;
    const w = this.param.storedValue;
    if (this.anchorW === w) this.anchorW = w.clone(); // kept: later steps compute from it as if nothing was read
    this.combine(w, null);
    this.weightCurrent = true;
    this.weightVersion = ops.tensorVersion(w);
  }

  /** Makes the momentum buffer hold its current values (the deferral goes on). */
  materialiseMomentum(): void {
    this.checkWeight();
    this.materialiseMomentumUnchecked();
  }

  /** Works the weight and its momentum out in their tensors and ends the deferral. */
  settle(): void {
    this.checkWeight();
    const w = this.param.storedValue;
    const wOut = this.weightCurrent ? null : w;
    const bOut = this.momentumCurrent || !this.buffer ? null : this.buffer;
    // One pass; an output that is its own anchor is read before it is written (per element).
    if (wOut || bOut) this.combine(wOut, bOut);
    this.end();
  }

  release(): void {
    this.materialiseMomentum();
    this.end();
  }

  /**
   * For a checkpoint: the weight and the momentum worked out, and what going on from here needs: the deferral's own
   * tensors (valid until the next step, as the momentum buffers) and two new small ones.
   */
  state(): DeferredState {
    this.materialiseWeight();
    this.materialiseMomentum();
    return {
      anchorWeight: this.anchorW,
      anchorMomentum: this.anchoredMomentum ? this.anchorB! : null,
      zWeight: this.zW,
      zMomentum: this.zB ?? null,
      coefficients: Tensor.from(new BigInt64Array(new Float64Array(this.p).buffer), [4]),
      geometry: Tensor.from(BigInt64Array.from(this.geometry.map(BigInt)), [5]),
    };
  }

  /**
   * Goes on with a deferral from a checkpoint (state, checked by checkState): the weight and the buffer hold its
   * worked-out values already (loaded with the model and the momentum buffers).
   */
  static restore(param: Parameter, buffer: Tensor | undefined, s: DeferredState): DeferredUpdate {
    if (param.deferral) throw new Error('DeferredUpdate.restore: the parameter is deferred already');
    const geometry = Array.from(s.geometry.toArray() as BigInt64Array, Number) as PoolGeometry;
    const d = new DeferredUpdate(param, buffer, geometry, s.anchorMomentum !== null, { w: s.zWeight.clone(), b: s.zMomentum?.clone() });
    d.anchorW = s.anchorWeight.clone();
    // Without b0 in the sum its anchor weighs nothing: a zeroed tensor stands for it.
    if (buffer) d.anchorB = s.anchorMomentum ? s.anchorMomentum.clone() : Tensor.zeros(buffer.shape);
    d.p = coefficientsOf(s.coefficients);
    return d;
  }

  /**
   * A checkpoint's deferral entries against the parameter (shape, momentum) before anything is loaded: what they must
   * be, or an Error naming the entry (`name` its key prefix).
   */
  static checkState(name: string, param: Parameter, momentum: boolean, s: Partial<Record<keyof DeferredState, unknown>>): void {
    const shape = param.shape;
    const need = (k: keyof DeferredState, dtype: string, dims: number[] | null, what: string) => {
      const v = s[k];
      if (!(v instanceof Tensor) || v.dtype !== dtype || (dims && v.shape.join() !== dims.join())) {
        throw new Error(`${name}.${DEFERRED_KEYS[k]}: expected ${what}`);
      }
      return v;
    };
    const g = need('geometry', 'int64', [5], 'the pool geometry [C, H, W, oh, ow] as 5 int64');
    const [c, h, w, oh, ow] = Array.from(g.toArray() as BigInt64Array, Number);
    if (![c, h, w, oh, ow].every((v) => Number.isSafeInteger(v) && v >= 1 && v <= 0x7fffffff) || shape.length !== 2 || c * oh * ow !== shape[1]) {
      throw new Error(`${name}.${DEFERRED_KEYS.geometry}: [${[c, h, w, oh, ow].join(', ')}] does not fit the parameter's shape [${shape.join(', ')}]`);
    }
    const small = [shape[0], c * h * w];
    need('anchorWeight', 'float32', shape, `a float32 tensor [${shape.join(', ')}]`);
    need('zWeight', 'float32', small, `a float32 tensor [${small.join(', ')}]`);
    const p = coefficientsOf(need('coefficients', 'int64', [4], '4 int64 (float64 bit patterns)'));
    if (!p.every(Number.isFinite)) throw new Error(`${name}.${DEFERRED_KEYS.coefficients}: expected finite numbers, got [${p.join(', ')}]`);
    if (momentum) need('zMomentum', 'float32', small, `a float32 tensor [${small.join(', ')}] (the optimizer has momentum)`);
    else if (s.zMomentum != null || s.anchorMomentum != null) throw new Error(`${name}: momentum entries, but the optimizer has no momentum`);
    if (s.anchorMomentum != null) need('anchorMomentum', 'float32', shape, `a float32 tensor [${shape.join(', ')}]`);
  }

  /** A write into the weight that is not ours: after a read the write wins, as it would in an eager step. */
  private checkWeight(): void {
    const w = this.param.storedValue;
    const v = ops.tensorVersion(w);
    if (v === this.weightVersion) return;
    if (this.anchorW === w) {
      // The anchor itself was overwritten: the weight keeps what was written, but the momentum cannot be worked out.
      if (this.buffer) ops.fill(this.buffer, 0);
      this.end();
      throw new Error('sgd: a weight was written while its update was deferred, through a reference kept from before a step: ' +
        'it keeps what was written, and its momentum is reset to zero. Read param.value afresh before writing into it, ' +
        'or replace the weight with Parameter.set');
    }
    this.materialiseMomentumUnchecked();
    if (this.anchorW !== w) this.anchorW.dispose();
    if (this.anchorB && this.anchorB !== this.buffer) this.anchorB.dispose();
    this.anchorW = w;
    this.anchorB = this.buffer;
    this.anchoredMomentum = this.buffer !== undefined;
    this.p = [1, 0, 0, 1];
    ops.fill(this.zW, 0);
    if (this.zB) ops.fill(this.zB, 0);
    this.dropFolds();
    this.weightCurrent = this.momentumCurrent = true;
    this.weightVersion = v;
  }

  // materialiseMomentum without the weight check (checkWeight's own use: the anchors are intact there).
  private materialiseMomentumUnchecked(): void {
    if (this.momentumCurrent || !this.buffer) return;
    if (this.anchorB === this.buffer) this.anchorB = this.buffer.clone();
    this.combine(null, this.buffer);
    this.momentumCurrent = true;
  }

  /** (w, b) = P·(anchors) + pool(z) into wOut and/or bOut (ops.deferredMaterialise). */
  private combine(wOut: Tensor | null, bOut: Tensor | null): void {
    ops.deferredMaterialise(wOut, bOut, this.anchorW, this.anchorB ?? null, this.zW, this.zB ?? null, this.p, this.geometry);
  }

  private dropFolds(): void {
    this.foldW?.dispose();
    this.foldB?.dispose();
    this.foldW = this.foldB = undefined;
  }

  private end(): void {
    this.dropFolds();
    this.zW.dispose();
    this.zB?.dispose();
    if (this.anchorW !== this.param.storedValue) this.anchorW.dispose();
    if (this.anchorB && this.anchorB !== this.buffer) this.anchorB.dispose();
    if (this.param.deferral === this) this.param.deferral = undefined;
  }
}
