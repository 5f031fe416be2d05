// How `train` decides its options, as pure functions over option records (tested in test/cli/train_plan.test.ts and
// fuzzed in test/robustness/fuzz.test.ts without training anything). The rule, as PyTorch users expect it:
//
//   1. a flag the user gave wins;
//   2. on --resume, the checkpoint's run fills the rest (its saved options), except the session's own settings
//      (device, workers, quiet, ...), which come from this command line;
//   3. on the sample data (a new run), the sample preset fills what is still unset, and says what it filled;
//   4. then the flags' defaults (what --help shows).
//
// A flag given on --resume that cannot be honoured is refused with the reason (UsageError, exit 2): the architecture
// (a checkpoint is one network), the dataset kind, the LR schedule's kind and warm-up (their state is saved mid-way),
// --pretrained (the checkpoint holds trained weights), a different --seed in the middle of an epoch (the epoch's sample
// order is drawn from it), and an --epochs below what is already done. Everything else is honoured and printed:
// --lr sets the schedule's base and the optimizer's LR, --batch-size continues at the same sample of the epoch,
// --epochs past the end of a cosine schedule re-plans the cosine over the new total, and so on.

export type Options = Record<string, unknown>;

/** A command line that cannot be run as given (exit 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The options that make the network's weights; a resumed run keeps them. */
export const ARCHITECTURE = ['model', 'batchNorm', 'width', 'hiddenFeatures'] as const;
/** What choosing --model (or --pretrained) chooses: the architecture and its classifier's dropout. */
const NETWORK: readonly string[] = [...ARCHITECTURE, 'dropout'];

/**
 * The sample data's preset: the options a new run on the bundled sample data takes when they are not given. A real
 * VGG11-BN with the real augmentations, scaled down (width, hidden layers, image size). Its classifier's dropout is
 * scaled down with the hidden layers, which are 16 times narrower than VGG's: at 0.5 on 256 features the classifier
 * learns so slowly that 10 epochs end near 80-90 % on 1000 images, at 0.2 near 100 % (measured: see README).
 */
export const SAMPLE_PRESET: Readonly<Options> = {
  model: 'vgg11', batchNorm: true, width: 0.25, hiddenFeatures: 256, dropout: 0.2, imageSize: 32, cropScale: 0.35, epochs: 10,
  batchSize: 32, lr: 0.02, scheduler: 'cosine', warmup: 1,
};

/** Options about this process, not the run: never taken from a checkpoint. */
const SESSION = new Set(['resume', 'overwrite', 'evaluate', 'device', 'workers', 'quiet', 'gpuAugment', 'cudaGraph', 'download', 'dashboard']);

/** The flag of an option key with its value as a user would type it: --batch-size 32, --batch-norm, --no-cuda-graph. */
export function showFlag(key: string, value?: unknown): string {
  const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  if (key === 'gpuAugment' || key === 'cudaGraph') return value === false ? flag.replace(/^--/, '--no-') : `(no ${flag.replace(/^--/, '--no-')})`;
  if (value === undefined) return flag;
  if (typeof value === 'boolean') return value ? flag : `(no ${flag})`;
  return `${flag} ${String(value)}`;
}

const same = (a: unknown, b: unknown) => a === b || (typeof a === 'number' && typeof b === 'number' && Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(a)));

/**
 * Fills the sample preset into `o` where the user gave nothing. With --model or --pretrained given, the architecture
 * keys keep their flag defaults (the user chose the network). Returns the flags it filled, as typed.
 */
export function applySamplePreset(o: Options, explicit: ReadonlySet<string>): string[] {
  const chosen = explicit.has('model') || (o.pretrained !== undefined && o.pretrained !== null);
  const filled: string[] = [];
  for (const [k, v] of Object.entries(SAMPLE_PRESET)) {
    if (explicit.has(k)) continue;
    if (chosen && NETWORK.includes(k)) continue;
    o[k] = v;
    filled.push(showFlag(k, v));
  }
  return filled;
}

/** Where a resumed run stands (from the checkpoint's metadata). */
export interface ResumePoint {
  epoch: number;
  batchInEpoch: number;
}

export interface ResumeChange {
  key: string;
  was: unknown;
  now: unknown;
}

/**
 * Merges a checkpoint's saved options into `o` (the parsed command line): the saved value for every option the user
 * did not give (but the session's own), and each given one checked against the rules above. `keys` are the program's
 * option keys (saved keys that are not options, e.g. from other versions, are ignored). Returns the options whose
 * value differs from the checkpoint's run. Throws UsageError for a flag that cannot be honoured.
 */
export function mergeResume(o: Options, explicit: ReadonlySet<string>, saved: Options, at: ResumePoint, keys: readonly string[], source: string): ResumeChange[] {
  const changes: ResumeChange[] = [];
  const refuse = (k: string, why: string): never => {
    throw new UsageError(`${showFlag(k, o[k])}: ${source} was trained with ${saved[k] === undefined ? 'no value for it' : showFlag(k, saved[k])}; ${why}`);
  };
  for (const k of keys) {
    if (SESSION.has(k)) continue;
    if (!explicit.has(k)) {
      if (k in saved && saved[k] !== null) o[k] = saved[k];
      continue;
    }
    const was = saved[k];
    if (k === 'pretrained' && !same(was, o[k])) refuse(k, 'the checkpoint already holds trained weights; --pretrained only starts a new run');
    if (!(k in saved) || same(was, o[k])) continue;
    if ((ARCHITECTURE as readonly string[]).includes(k)) {
      refuse(k, 'a resumed run keeps its network (start a new run, in another --checkpoint-dir, to train another one)');
    }
    switch (k) {
      case 'dataset':
        if (o[k] !== 'auto') refuse(k, 'a resumed run keeps its dataset (--data may point to where the same data now is)');
        o[k] = was; // auto: the dataset the run was on
        continue;
      case 'scheduler':
      case 'warmup':
        refuse(k, "the run's LR schedule is saved part-way and goes on as it was; switching it on resume is not supported (--lr, --epochs, --patience, --factor and --step-size are)");
        break;
      case 'seed':
        if (at.batchInEpoch > 0) {
          refuse(k, `the order of epoch ${at.epoch + 1}, which the checkpoint is in the middle of, is drawn from the seed: resume without --seed (a new seed is accepted at an epoch boundary)`);
        }
        break;
      default:
    }
    changes.push({ key: k, was, now: o[k] });
  }
  if (explicit.has('epochs')) {
    const e = o.epochs as number;
    const need = at.epoch + (at.batchInEpoch > 0 ? 1 : 0);
    if (e < need) {
      throw new UsageError(`--epochs ${e}: ${source} has ${at.epoch} epoch(s) done${at.batchInEpoch > 0 ? ` and is part-way into epoch ${at.epoch + 1}` : ''}; ` +
        `give --epochs ${need} or more to train on, or --evaluate ${source} to test it`);
    }
  }
  return changes;
}

/**
 * A scheduler state (Scheduler.state()) with its base LR replaced: the closed-form schedules' `baseLr`, the plateau
 * scheduler's current `lr`, through a warm-up's inner scheduler. An explicit --lr on resume is the new base: the
 * optimizer's LR becomes the schedule's value at the saved position.
 */
export function rebaseSchedulerState(state: Record<string, unknown>, lr: number): Record<string, unknown> {
  const s: Record<string, unknown> = { ...state };
  if ('baseLr' in s) s.baseLr = lr;
  if (s.type === 'reduceLROnPlateau') s.lr = lr;
  if (s.after && typeof s.after === 'object') s.after = rebaseSchedulerState(s.after as Record<string, unknown>, lr);
  return s;
}

/** A shell word, quoted when it needs to be (the resume hint repeats the user's command). */
export function shellQuote(w: string): string {
  return /^[A-Za-z0-9_\-./=:,+@%]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command that resumes an interrupted run: the user's command and arguments as they gave them, without
 * --resume/--overwrite, then --resume <checkpoint>.
 */
export function resumeCommand(command: string, argv: readonly string[], checkpoint: string): string {
  const kept: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--overwrite') continue;
    if (a === '--resume') {
      i++;
      continue;
    }
    if (a.startsWith('--resume=')) continue;
    kept.push(a);
  }
  return [command, ...kept.map(shellQuote), '--resume', shellQuote(checkpoint)].join(' ');
}
