// Learning-rate schedulers with PyTorch's semantics, stepped once per epoch (after validation):
//   reduceLROnPlateau  torch.optim.lr_scheduler.ReduceLROnPlateau (mode, factor, patience, threshold(+mode),
//                      cooldown, min_lr, eps), on a named validation metric ('val.loss', 'val.top1', ...)
//   stepLR             StepLR:  base · gamma^⌊epoch / stepSize⌋
//   cosineAnnealing    CosineAnnealingLR's closed form: etaMin + (base − etaMin)(1 + cos(π·epoch/tMax))/2
//   linearWarmup       LinearLR(startFactor → 1 over `epochs`) followed by another scheduler, as SequentialLR
//                      does it: after the warm-up the inner scheduler starts at its own epoch 0.
// A scheduler is attached to the optimizer's initial LR (`attach(lr)` → LR of epoch 0); `step(metrics)` after each
// epoch returns the LR of the next one. state()/loadState() are plain JSON, saved in checkpoints.

export type EpochMetrics = Record<string, number>;

/**
 * The metrics of an epoch a plateau scheduler can watch: the Trainer's per-epoch record (lib/train/logs.ts). 'val.*'
 * need a validation loader.
 */
export type MonitorMetric = 'val.loss' | 'val.top1' | 'val.top5' | 'train.loss' | 'train.top1' | 'train.top5';
export const MONITOR_METRICS: readonly MonitorMetric[] = ['val.loss', 'val.top1', 'val.top5', 'train.loss', 'train.top1', 'train.top5'];

export interface Scheduler {
  /** A name saved in checkpoints ('stepLR', 'cosineAnnealing', ...; a scheduler of your own picks its own). */
  readonly type: string;
  /** Records the base LR (the optimizer's initial LR); returns the LR for the first epoch. */
  attach(baseLr: number): number;
  /** After an epoch: returns the LR for the next epoch. Plateau needs its monitored metric in `metrics`. */
  step(metrics?: EpochMetrics): number;
  /** The current LR. */
  readonly lr: number;
  state(): Record<string, unknown>;
  loadState(state: Record<string, unknown>): void;
}

/** Option checks: every violation is a value out of range. */
function check(cond: boolean, msg: string): void {
  if (!cond) throw new RangeError(msg);
}
const finiteNonNeg = (v: number) => Number.isFinite(v) && v >= 0;

/** A saved state's field, checked: `<type>.loadState: '<key>' must be <what>, got <value>` (states come from files). */
function stateField(type: string, s: Record<string, unknown>, key: string, what: 'lr' | 'count' | 'best'): number {
  const v = what === 'best' ? fromJsonNum(s[key]) : s[key];
  const ok = typeof v === 'number' && (what === 'lr' ? finiteNonNeg(v) : what === 'count' ? Number.isSafeInteger(v) && v >= 0 : !Number.isNaN(v));
  if (!ok) {
    const want = what === 'lr' ? 'a finite number >= 0' : what === 'count' ? 'an integer >= 0' : 'a number or "Infinity"/"-Infinity"';
    throw new Error(`${type}.loadState: '${key}' must be ${want}, got ${JSON.stringify(s[key]) ?? 'nothing'}`);
  }
  return v as number;
}
function checkState(type: string, s: unknown): Record<string, unknown> {
  if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new Error(`${type}.loadState: expected a state object, got ${JSON.stringify(s) ?? String(s)}`);
  const r = s as Record<string, unknown>;
  check(r.type === type, `${type}.loadState: the state is of a '${String(r.type)}' scheduler`);
  return r;
}

abstract class ClosedForm implements Scheduler {
  abstract readonly type: string;
  protected baseLr = NaN;
  protected epoch = 0; // PyTorch's last_epoch
  attach(baseLr: number): number {
    check(finiteNonNeg(baseLr), `${this.type}: base lr must be a finite number >= 0, got ${baseLr}`);
    this.baseLr = baseLr;
    this.epoch = 0;
    return this.lr;
  }
  step(): number {
    this.epoch++;
    return this.lr;
  }
  get lr(): number {
    this.requireAttached();
    return this.at(this.epoch);
  }
  protected requireAttached(): void {
    if (Number.isNaN(this.baseLr)) throw new Error(`${this.type}: attach(lr) the scheduler to the optimizer's lr first`);
  }
  abstract at(epoch: number): number;
  state(): Record<string, unknown> {
    return { type: this.type, baseLr: this.baseLr, epoch: this.epoch };
  }
  loadState(state: Record<string, unknown>): void {
    const s = checkState(this.type, state);
    const baseLr = stateField(this.type, s, 'baseLr', 'lr'), epoch = stateField(this.type, s, 'epoch', 'count');
    this.baseLr = baseLr;
    this.epoch = epoch;
  }
}

export interface StepLROptions {
  /** Epochs between drops (an integer >= 1). */
  stepSize: number;
  /** LR multiplier at each drop (default 0.1). */
  gamma?: number;
}
export class StepLR extends ClosedForm {
  readonly type = 'stepLR';
  readonly stepSize: number;
  readonly gamma: number;
  constructor(o: StepLROptions) {
    super();
    this.stepSize = o.stepSize;
    this.gamma = o.gamma ?? 0.1;
    check(Number.isInteger(this.stepSize) && this.stepSize >= 1, `stepLR: stepSize must be an integer >= 1, got ${o.stepSize}`);
    check(finiteNonNeg(this.gamma), `stepLR: gamma must be a finite number >= 0, got ${this.gamma}`);
  }
  at(epoch: number): number {
    return this.baseLr * this.gamma ** Math.floor(epoch / this.stepSize);
  }
}
export const stepLR = (o: StepLROptions): StepLR => new StepLR(o);

export interface CosineAnnealingOptions {
  /** Epochs from the base LR down to etaMin (half a cosine period; an integer >= 1). */
  tMax: number;
  /** The lowest LR (default 0). */
  etaMin?: number;
}
export class CosineAnnealing extends ClosedForm {
  readonly type = 'cosineAnnealing';
  readonly tMax: number;
  readonly etaMin: number;
  constructor(o: CosineAnnealingOptions) {
    super();
    this.tMax = o.tMax;
    this.etaMin = o.etaMin ?? 0;
    check(Number.isInteger(this.tMax) && this.tMax >= 1, `cosineAnnealing: tMax must be an integer >= 1, got ${o.tMax}`);
    check(finiteNonNeg(this.etaMin), `cosineAnnealing: etaMin must be a finite number >= 0, got ${o.etaMin}`);
  }
  at(epoch: number): number {
    return this.etaMin + ((this.baseLr - this.etaMin) * (1 + Math.cos((Math.PI * epoch) / this.tMax))) / 2;
  }
}
export const cosineAnnealing = (o: CosineAnnealingOptions): CosineAnnealing => new CosineAnnealing(o);

/** A constant LR (no scheduling); handy as the inner scheduler of a warm-up. */
export class ConstantLR extends ClosedForm {
  readonly type = 'constant';
  at(): number {
    return this.baseLr;
  }
}
export const constantLR = (): ConstantLR => new ConstantLR();

export interface PlateauOptions {
  /** The metric to watch (default 'val.loss'; with no validation loader, a 'train.*' one). */
  monitor?: MonitorMetric;
  /** 'min' or 'max': whether the metric should fall or rise. Default 'max' for top1/top5, else 'min'. */
  mode?: 'min' | 'max';
  /** LR multiplier at a drop (default 0.1; in [0, 1)). */
  factor?: number;
  /** Epochs without improvement before a drop (default 10). */
  patience?: number;
  /** The least change that counts as an improvement (default 1e-4). */
  threshold?: number;
  /** 'rel': relative to the best value (best · (1 ∓ threshold)); 'abs': best ∓ threshold. Default 'rel'. */
  thresholdMode?: 'rel' | 'abs';
  /** Epochs to wait after a drop before counting bad epochs again (default 0). */
  cooldown?: number;
  /** The LR never drops below this (default 0). */
  minLr?: number;
  /** A drop smaller than this is skipped (default 1e-8). */
  eps?: number;
}
export class ReduceLROnPlateau implements Scheduler {
  readonly type = 'reduceLROnPlateau';
  readonly monitor: MonitorMetric;
  readonly mode: 'min' | 'max';
  readonly factor: number;
  readonly patience: number;
  readonly threshold: number;
  readonly thresholdMode: 'rel' | 'abs';
  readonly cooldown: number;
  readonly minLr: number;
  readonly eps: number;
  private current = NaN;
  private best: number;
  private numBadEpochs = 0;
  private cooldownCounter = 0;
  private lastEpoch = 0;

  constructor(o: PlateauOptions = {}) {
    this.monitor = o.monitor ?? 'val.loss';
    // Checked at run time too: a JavaScript caller's 'val_loss' would otherwise fail only after the first epoch.
    check(MONITOR_METRICS.includes(this.monitor), `reduceLROnPlateau: monitor must be one of ${MONITOR_METRICS.join(', ')}; got '${String(o.monitor)}'`);
    this.mode = o.mode ?? (/top/.test(this.monitor) ? 'max' : 'min');
    this.factor = o.factor ?? 0.1;
    this.patience = o.patience ?? 10;
    this.threshold = o.threshold ?? 1e-4;
    this.thresholdMode = o.thresholdMode ?? 'rel';
    this.cooldown = o.cooldown ?? 0;
    this.minLr = o.minLr ?? 0;
    this.eps = o.eps ?? 1e-8;
    check(this.mode === 'min' || this.mode === 'max', `reduceLROnPlateau: mode must be 'min' or 'max', got '${String(o.mode)}'`);
    check(this.thresholdMode === 'rel' || this.thresholdMode === 'abs', `reduceLROnPlateau: thresholdMode must be 'rel' or 'abs', got '${String(o.thresholdMode)}'`);
    check(this.factor >= 0 && this.factor < 1, `reduceLROnPlateau: factor should be < 1.0 (and >= 0), got ${o.factor}`);
    check(Number.isInteger(this.patience) && this.patience >= 0, `reduceLROnPlateau: patience must be an integer >= 0, got ${o.patience}`);
    check(Number.isInteger(this.cooldown) && this.cooldown >= 0, `reduceLROnPlateau: cooldown must be an integer >= 0, got ${o.cooldown}`);
    check(finiteNonNeg(this.threshold), `reduceLROnPlateau: threshold must be a finite number >= 0, got ${o.threshold}`);
    check(finiteNonNeg(this.minLr), `reduceLROnPlateau: minLr must be a finite number >= 0, got ${o.minLr}`);
    check(finiteNonNeg(this.eps), `reduceLROnPlateau: eps must be a finite number >= 0, got ${o.eps}`);
    this.best = this.mode === 'min' ? Infinity : -Infinity;
  }

  attach(baseLr: number): number {
    check(finiteNonNeg(baseLr), `reduceLROnPlateau: base lr must be a finite number >= 0, got ${baseLr}`);
    this.current = baseLr;
    this.best = this.mode === 'min' ? Infinity : -Infinity;
    this.numBadEpochs = 0;
    this.cooldownCounter = 0;
    this.lastEpoch = 0;
    return baseLr;
  }

  get lr(): number {
    if (Number.isNaN(this.current)) throw new Error('reduceLROnPlateau: attach(lr) the scheduler to the optimizer\'s lr first');
    return this.current;
  }

  private isBetter(a: number, best: number): boolean {
    if (this.mode === 'min' && this.thresholdMode === 'rel') return a < best * (1 - this.threshold);
    if (this.mode === 'min') return a < best - this.threshold;
    if (this.thresholdMode === 'rel') return a > best * (this.threshold + 1);
    return a > best + this.threshold;
  }

  step(metrics?: EpochMetrics | number): number {
    const value = typeof metrics === 'number' ? metrics : metrics?.[this.monitor];
    if (typeof value !== 'number') {
      const have = metrics && typeof metrics === 'object' ? Object.keys(metrics).join(', ') : 'none';
      throw new Error(`reduceLROnPlateau: monitored metric '${this.monitor}' is not among this epoch's metrics (${have}); ` +
        'with no validation set, monitor a training metric such as train.loss');
    }
    const lr = this.lr;
    this.lastEpoch++;
    if (this.isBetter(value, this.best)) {
      this.best = value;
      this.numBadEpochs = 0;
    } else {
      this.numBadEpochs++;
    }
    if (this.cooldownCounter > 0) {
      this.cooldownCounter--;
      this.numBadEpochs = 0; // ignore bad epochs in cooldown
    }
    if (this.numBadEpochs > this.patience) {
      const next = Math.max(lr * this.factor, this.minLr);
      if (lr - next > this.eps) this.current = next;
      this.cooldownCounter = this.cooldown;
      this.numBadEpochs = 0;
    }
    return this.current;
  }

  state(): Record<string, unknown> {
    return {
      type: this.type, lr: this.current, best: jsonNum(this.best), numBadEpochs: this.numBadEpochs,
      cooldownCounter: this.cooldownCounter, lastEpoch: this.lastEpoch, monitor: this.monitor, mode: this.mode,
    };
  }
  loadState(state: Record<string, unknown>): void {
    const s = checkState(this.type, state);
    const f = (k: string, w: 'lr' | 'count' | 'best') => stateField(this.type, s, k, w);
    const v = { lr: f('lr', 'lr'), best: f('best', 'best'), bad: f('numBadEpochs', 'count'), cool: f('cooldownCounter', 'count'), last: f('lastEpoch', 'count') };
    // Checked in full, then set: a bad state leaves the scheduler as it was.
    [this.current, this.best, this.numBadEpochs, this.cooldownCounter, this.lastEpoch] = [v.lr, v.best, v.bad, v.cool, v.last];
  }
}
export const reduceLROnPlateau = (o: PlateauOptions = {}): ReduceLROnPlateau => new ReduceLROnPlateau(o);

export interface WarmupOptions {
  /** Warm-up length in epochs (LinearLR's total_iters). */
  epochs: number;
  /** LR factor of the first epoch (default 0.1); it rises linearly to 1 at `epochs`. */
  startFactor?: number;
}
export class LinearWarmup implements Scheduler {
  readonly type = 'linearWarmup';
  readonly epochs: number;
  readonly startFactor: number;
  readonly after: Scheduler;
  private baseLr = NaN;
  private epoch = 0;
  constructor(o: WarmupOptions, after: Scheduler = new ConstantLR()) {
    this.epochs = o.epochs;
    this.startFactor = o.startFactor ?? 0.1;
    this.after = after;
    check(Number.isInteger(this.epochs) && this.epochs >= 1, `linearWarmup: epochs must be an integer >= 1, got ${o.epochs}`);
    check(this.startFactor > 0 && this.startFactor <= 1, `linearWarmup: startFactor must be in (0, 1], got ${o.startFactor}`);
  }
  attach(baseLr: number): number {
    check(finiteNonNeg(baseLr), `linearWarmup: base lr must be a finite number >= 0, got ${baseLr}`);
    this.baseLr = baseLr;
    this.epoch = 0;
    this.after.attach(baseLr);
    return this.lr;
  }
  get lr(): number {
    if (Number.isNaN(this.baseLr)) throw new Error('linearWarmup: attach(lr) the scheduler to the optimizer\'s lr first');
    if (this.epoch < this.epochs) return this.baseLr * (this.startFactor + ((1 - this.startFactor) * this.epoch) / this.epochs);
    return this.after.lr;
  }
  step(metrics?: EpochMetrics): number {
    // The inner scheduler sees only the epochs after the warm-up (SequentialLR); its epoch 0 is the warm-up's end.
    if (this.epoch >= this.epochs) this.after.step(metrics);
    this.epoch++;
    return this.lr;
  }
  state(): Record<string, unknown> {
    return { type: this.type, baseLr: this.baseLr, epoch: this.epoch, after: this.after.state() };
  }
  loadState(state: Record<string, unknown>): void {
    const s = checkState(this.type, state);
    const baseLr = stateField(this.type, s, 'baseLr', 'lr'), epoch = stateField(this.type, s, 'epoch', 'count');
    this.after.loadState(s.after as Record<string, unknown>); // checks its own state in full first
    this.baseLr = baseLr;
    this.epoch = epoch;
  }
}
export const linearWarmup = (o: WarmupOptions, after?: Scheduler): LinearWarmup => new LinearWarmup(o, after);

// ±Infinity does not survive JSON; keep it as a string.
function jsonNum(v: number): number | string {
  return Number.isFinite(v) ? v : String(v);
}
function fromJsonNum(v: unknown): number {
  return typeof v === 'string' ? Number(v) : (v as number);
}
