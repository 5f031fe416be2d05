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

export class SGD {
  lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  private buffers = new Map<Parameter, Tensor>();
  stepCount = 0;

  constructor(options: SGDOptions) {
    const { lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false } = options;
    const bad = (name: string, v: number) => {
      if (typeof v !== 'number') throw new TypeError(`sgd: ${name} must be a number, got ${typeof v}`);
      throw new RangeError(`sgd: invalid ${name} ${v} (expected a finite number >= 0)`);
    };
    for (const [k, v] of Object.entries({ lr, momentum, dampening, weightDecay })) if (!(Number.isFinite(v) && v >= 0)) bad(k, v);
    if (nesterov && (momentum <= 0 || dampening !== 0)) throw new RangeError('sgd: nesterov needs momentum > 0 and dampening 0');
    this.lr = lr;
    this.momentum = momentum;
    this.dampening = dampening;
    this.weightDecay = weightDecay;
    this.nesterov = nesterov;
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
    ops.sgdStep(
      ps.map((p) => p.value),
      ps.map((p) => p.grad),
      bufs,
      { lr: this.lr, momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov },
      first,
    );
    this.stepCount++;
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

  loadStateDict(params: { name: string; param: Parameter }[], state: Record<string, Tensor | bigint>, source = 'optimizer state'): void {
    const have = params.filter(({ name }) => `momentum_buffer.${name}` in state);
    if (have.length !== 0 && have.length !== params.length) {
      throw new Error(`${source}: momentum buffers for ${have.length} of ${params.length} parameters`);
    }
    for (const { name, param } of have) {
      const v = state[`momentum_buffer.${name}`];
      if (!(v instanceof Tensor) || v.shape.join() !== param.shape.join()) {
        throw new Error(`${source}: momentum_buffer.${name} does not match the parameter's shape [${param.shape.join(', ')}]`);
      }
      this.bufferFor(param).copy_(v);
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
