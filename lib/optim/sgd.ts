// SGD with momentum, dampening, weight decay and Nesterov, exactly torch.optim.SGD, stepping every parameter in one
// native call; the update of a weight whose gradient comes pooled for its fold is deferred (./deferred.ts).
import { Tensor } from '../tensor';
import * as ops from '../ops';
import { Parameter, PoolGeometry } from '../nn/module';
import { DEFERRED_KEYS, DeferredState, DeferredUpdate } from './deferred';

const DEFERRED_PREFIX = 'deferred_sgd.';

/** torch.optim.SGD's options, camelCased. */
export interface SGDOptions {
  /** Learning rate (a scheduler changes it between epochs). */
  lr: number;
  /** Momentum factor (default 0: plain SGD). */
  momentum?: number;
  /** Dampening of the momentum (default 0). */
  dampening?: number;
  /** L2 penalty added to the gradient (default 0; the VGG paper used 5e-4). */
  weightDecay?: number;
  /** Nesterov momentum (default false; needs momentum > 0 and dampening 0). */
  nesterov?: boolean;
}

/** Anything with a Parameter: model.parameters() entries, namedParameters() entries or Parameters themselves. */
export type ParamLike = Parameter | { param: Parameter; name?: string };

function asParam(p: ParamLike): Parameter {
  return p instanceof Parameter ? p : p.param;
}

/** A hyper-parameter value: a finite number >= 0, or a TypeError/RangeError naming it (as the constructor says). */
function checkRate(name: string, v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`sgd: ${name} must be a number, got ${v === null ? 'null' : typeof v}`);
  if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`sgd: invalid ${name} ${v} (expected a finite number >= 0)`);
  return v;
}
function checkNesterov(nesterov: boolean, momentum: number, dampening: number): void {
  if (nesterov && (momentum <= 0 || dampening !== 0)) throw new RangeError('sgd: nesterov needs momentum > 0 and dampening 0');
}

export class SGD {
  // The hyper-parameters are checked when set, not only at construction: `opt.lr = -5` used to be taken and step
  // would then climb the loss (or, with NaN, write NaN into every weight) without a word.
  private lrValue = 0;
  private momentumValue = 0;
  private dampeningValue = 0;
  private weightDecayValue = 0;
  private nesterovValue = false;
  private stepCountValue = 0;
  private buffers = new Map<Parameter, Tensor>();
  private deferred = new Set<Parameter>(); // parameters whose update this optimizer deferred (param.deferral)
  private exported: Tensor[] = []; // small tensors made for the last stateDict

  constructor(options: SGDOptions) {
    if (typeof options !== 'object' || options === null) throw new TypeError(`sgd: expected options { lr, momentum?, dampening?, weightDecay?, nesterov? }, got ${String(options)}`);
    const { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false } = options;
    this.lrValue = checkRate('lr', lr);
    this.momentumValue = checkRate('momentum', momentum);
    this.dampeningValue = checkRate('dampening', dampening);
    this.weightDecayValue = checkRate('weightDecay', weightDecay);
    if (typeof nesterov !== 'boolean') throw new TypeError(`sgd: nesterov must be a boolean, got ${typeof nesterov}`);
    checkNesterov(nesterov, this.momentumValue, this.dampeningValue);
    this.nesterovValue = nesterov;
  }

  get lr(): number {
    return this.lrValue;
  }
  set lr(v: number) {
    this.lrValue = checkRate('lr', v);
  }
  get momentum(): number {
    return this.momentumValue;
  }
  set momentum(v: number) {
    checkNesterov(this.nesterovValue, checkRate('momentum', v), this.dampeningValue);
    this.momentumValue = v;
  }
  get dampening(): number {
    return this.dampeningValue;
  }
  set dampening(v: number) {
    checkNesterov(this.nesterovValue, this.momentumValue, checkRate('dampening', v));
    this.dampeningValue = v;
  }
  get weightDecay(): number {
    return this.weightDecayValue;
  }
  set weightDecay(v: number) {
    this.weightDecayValue = checkRate('weightDecay', v);
  }
  get nesterov(): boolean {
    return this.nesterovValue;
  }
  set nesterov(v: boolean) {
    if (typeof v !== 'boolean') throw new TypeError(`sgd: nesterov must be a boolean, got ${typeof v}`);
    checkNesterov(v, this.momentumValue, this.dampeningValue);
    this.nesterovValue = v;
  }
  /** Steps taken (restored from checkpoints). */
  get stepCount(): number {
    return this.stepCountValue;
  }
  set stepCount(v: number) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`sgd: invalid stepCount ${v} (expected an integer >= 0)`);
    this.stepCountValue = v;
  }

  /**
   * One update of all parameters from their gradients. A weight whose gradient comes pooled, from forwards that
   * multiplied by its pool fold, has its update deferred (./deferred.ts: the same values up to float rounding, at a
   * fraction of the memory traffic) until something reads it or settle() ends it; VGGNET_DEFERRED_SGD=0 turns it off.
   */
  step(params: ParamLike[]): void {
    const ps = params.map(asParam);
    if (ps.length === 0) return;
    const momentum = this.momentum !== 0;
    const first = momentum && ps.some((p) => !this.buffers.has(p));
    if (first && this.buffers.size > 0) {
      throw new Error('sgd.step: the parameter list changed since the first step (momentum buffers exist for other parameters)');
    }
    const bufs = momentum ? ps.map((p) => this.bufferFor(p)) : [];
    const grads = ps.map((p) => p.gradForStep()); // a pooled gradient as it is: the step pools it (ops.sgdStep)
    const hyper = { lr: this.lr, momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov };
    const defer = ps.map((p, i) => grads[i].pooled !== null && grads[i].forFold && p.storedValue.device === 'cpu' && process.env.VGGNET_DEFERRED_SGD !== '0');
    // A deferral that cannot go on ends first (the eager step reads the weight and its momentum as they are); so
    // does another optimizer's.
    ps.forEach((p, i) => {
      if (p.deferral && !this.deferralOf(p)) {
        p.deferral.materialiseWeight();
        p.deferral.release();
      }
      const d = this.deferralOf(p);
      if (d && !(defer[i] && d.continuesWith(grads[i].pooled!, momentum))) d.settle();
    });
    const eager = ps.map((_, i) => i).filter((i) => !defer[i]);
    if (eager.length > 0) {
      const pooled = eager.map((i) => grads[i].pooled);
      ops.sgdStep(eager.map((i) => ps[i].value), eager.map((i) => grads[i].grad), momentum ? eager.map((i) => bufs[i]) : [], hyper, first,
        pooled.some((g) => g) ? pooled : undefined);
    }
    ps.forEach((p, i) => {
      if (!defer[i]) return;
      let d = this.deferralOf(p);
      if (!d) {
        d = DeferredUpdate.start(p, momentum ? bufs[i] : undefined, grads[i].pooled as PoolGeometry, first);
        this.deferred.add(p);
      }
      d.step(grads[i].grad, hyper, first);
    });
    this.stepCountValue++;
  }

  /**
   * Ends every deferred update: the weights and momentum buffers hold their values, and the next step defers anew
   * from them. The Trainer calls it at each epoch's end (its epoch checkpoints then hold plain state); anything else
   * may too (it costs one pass over the deferred weights).
   */
  settle(): void {
    for (const p of this.deferred) this.deferralOf(p)?.settle();
    this.deferred.clear();
  }

  zeroGrad(params: ParamLike[]): void {
    for (const p of params) asParam(p).zeroGrad();
  }

  /**
   * Momentum buffers by parameter name (names from the list given), for checkpoints; for a weight whose update is
   * deferred also what going on needs (`deferred_sgd.<name>.*`: a resumed run then computes exactly what this one
   * does). The optimizer's own tensors: valid until its next step or stateDict.
   */
  stateDict(params: { name: string; param: Parameter }[]): Record<string, Tensor> {
    for (const t of this.exported) t.dispose();
    this.exported = [];
    const out: Record<string, Tensor> = {};
    for (const { name, param } of params) {
      const d = this.deferralOf(param);
      if (d) {
        const s = d.state(); // works the weight and the momentum out first
        this.exported.push(s.coefficients, s.geometry);
        for (const [k, key] of Object.entries(DEFERRED_KEYS) as [keyof DeferredState, string][]) {
          const v = s[k];
          if (v) out[`${DEFERRED_PREFIX}${name}.${key}`] = v;
        }
      }
      const b = this.buffers.get(param);
      if (b) out[`momentum_buffer.${name}`] = b;
    }
    return out;
  }

  /** Throws what loadStateDict would, changing nothing (the Trainer checks every part of a checkpoint before it loads any). */
  checkStateDict(params: { name: string; param: Parameter }[], state: Record<string, Tensor | bigint>, source = 'optimizer state'): void {
    if (typeof state !== 'object' || state === null || Array.isArray(state)) {
      throw new TypeError(`${source}: expected a record of momentum buffers, got ${state === null ? 'null' : Array.isArray(state) ? 'an array' : typeof state}`);
    }
    const have = params.filter(({ name }) => `momentum_buffer.${name}` in state);
    if (have.length !== 0 && have.length !== params.length) {
      throw new Error(`${source}: momentum buffers for ${have.length} of ${params.length} parameters`);
    }
    for (const { name, param } of have) {
      const v = state[`momentum_buffer.${name}`];
      if (!(v instanceof Tensor) || v.shape.join() !== param.shape.join()) {
        throw new Error(`${source}: momentum_buffer.${name} does not match the parameter's shape [${param.shape.join(', ')}]`);
      }
    }
    for (const { name, param, entries } of this.deferredEntries(params, state, source)) {
      if (param.storedValue.device !== 'cpu') throw new Error(`${source}: ${DEFERRED_PREFIX}${name}: a deferred update is for a CPU model`);
      DeferredUpdate.checkState(`${source}: ${DEFERRED_PREFIX}${name}`, param, have.length > 0, entries);
    }
  }

  loadStateDict(params: { name: string; param: Parameter }[], state: Record<string, Tensor | bigint>, source = 'optimizer state'): void {
    this.checkStateDict(params, state, source); // all checked before any buffer changes
    this.settle(); // the buffers are about to be replaced: what was deferred is worked out into the weights first
    for (const { name, param } of params) {
      const v = state[`momentum_buffer.${name}`];
      if (v instanceof Tensor) this.bufferFor(param).copy_(v);
    }
    for (const { param, entries } of this.deferredEntries(params, state, source)) {
      DeferredUpdate.restore(param, this.buffers.get(param), entries as DeferredState);
      this.deferred.add(param);
    }
  }

  dispose(): void {
    this.settle();
    for (const t of this.exported) t.dispose();
    this.exported = [];
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
  }

  /** This optimizer's deferral of p's update, if it has one. */
  private deferralOf(p: Parameter): DeferredUpdate | undefined {
    return this.deferred.has(p) && p.deferral instanceof DeferredUpdate ? p.deferral : undefined;
  }

  /** A state dict's deferral entries by parameter (an entry naming no parameter, or unknown, is an Error). */
  private deferredEntries(params: { name: string; param: Parameter }[], state: Record<string, Tensor | bigint>, source: string) {
    const byName = new Map(params.map((p) => [p.name, { ...p, entries: {} as Partial<Record<keyof DeferredState, unknown>> }]));
    const field = new Map(Object.entries(DEFERRED_KEYS).map(([k, v]) => [v, k as keyof DeferredState]));
    for (const [k, v] of Object.entries(state)) {
      if (!k.startsWith(DEFERRED_PREFIX)) continue;
      const rest = k.slice(DEFERRED_PREFIX.length), dot = rest.lastIndexOf('.');
      const p = byName.get(rest.slice(0, dot)), f = field.get(rest.slice(dot + 1));
      if (dot < 0 || !p || !f) throw new Error(`${source}: ${k}: not a deferred update's entry of any parameter (expected ${DEFERRED_PREFIX}<parameter>.{${[...field.keys()].join(',')}})`);
      p.entries[f] = v;
    }
    return [...byName.values()].filter((p) => Object.keys(p.entries).length > 0);
  }

  private bufferFor(p: Parameter): Tensor {
    let b = this.buffers.get(p);
    if (!b) {
      b = Tensor.empty(p.shape, { device: p.value.device });
      this.buffers.set(p, b);
    }
    return b;
  }
}

export function sgd(options: SGDOptions): SGD {
  return new SGD(options);
}
