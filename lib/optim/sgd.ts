// SGD with momentum, dampening, weight decay and Nesterov, exactly torch.optim.SGD, stepping every parameter in one
// native call.
import { Tensor } from '../tensor';
import * as ops from '../ops';
import { Parameter } from '../nn/module';

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

  /** One update of all parameters from their gradients. */
  step(params: ParamLike[]): void {
    const ps = params.map(asParam);
    if (ps.length === 0) return;
    const first = this.momentum !== 0 && ps.some((p) => !this.buffers.has(p));
    if (first && this.buffers.size > 0) {
      throw new Error('sgd.step: the parameter list changed since the first step (momentum buffers exist for other parameters)');
    }
    const bufs = this.momentum !== 0 ? ps.map((p) => this.bufferFor(p)) : [];
    const grads = ps.map((p) => p.gradForStep()); // a pooled gradient as it is: the step pools it (ops.sgdStep)
    ops.sgdStep(
      ps.map((p) => p.value),
      grads.map((g) => g.grad),
      bufs,
      { lr: this.lr, momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov },
      first,
      grads.some((g) => g.pooled) ? grads.map((g) => g.pooled) : undefined,
    );
    this.stepCountValue++;
  }

  zeroGrad(params: ParamLike[]): void {
    for (const p of params) asParam(p).zeroGrad();
  }

  /** Momentum buffers by parameter name (names from the list given), for checkpoints. */
  stateDict(params: { name: string; param: Parameter }[]): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const { name, param } of params) {
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
  }

  loadStateDict(params: { name: string; param: Parameter }[], state: Record<string, Tensor | bigint>, source = 'optimizer state'): void {
    this.checkStateDict(params, state, source); // all checked before any buffer changes
    for (const { name, param } of params) {
      const v = state[`momentum_buffer.${name}`];
      if (v instanceof Tensor) this.bufferFor(param).copy_(v);
    }
  }

  dispose(): void {
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
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
