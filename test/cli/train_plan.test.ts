// How train decides its options, without training: explicit flags win over the sample preset (which says what it
// filled, and leaves the architecture alone once --model is chosen), the resume rules (the checkpoint's options unless
// given; refused with the reason where a flag cannot be honoured), an explicit --lr rebasing every scheduler kind
// (checked against the schedulers' own closed forms), the resume hint's quoting, and the help text's defaults.
import { cosineAnnealing, linearWarmup, reduceLROnPlateau, stepLR, constantLR, Scheduler } from '../../lib/optim/schedulers';
import { parseTrainArgs } from '../../lib/cli/train';
import {
  SAMPLE_PRESET, UsageError, applySamplePreset, mergeResume, rebaseSchedulerState, resumeCommand, shellQuote, showFlag, Options,
} from '../../lib/cli/train_plan';
import { captureIO } from '../helpers/cli_io';

const io = captureIO;

function parse(argv: string[]) {
  const c = io();
  const r = parseTrainArgs(argv, c.io);
  if (typeof r === 'number') throw new Error(`exit ${r}: ${c.err()}`);
  return { ...r, keys: [...new Set(r.program.options.map((o) => o.attributeName()))] };
}

describe('sample preset', () => {
  test('fills only what was not given, and lists it', () => {
    const { options, explicit } = parse(['--lr', '0.1', '--image-size', '64']);
    const filled = applySamplePreset(options, explicit);
    expect(options.lr).toBe(0.1);
    expect(options.imageSize).toBe(64);
    expect(options.model).toBe(SAMPLE_PRESET.model);
    expect(options.batchNorm).toBe(true);
    expect(options.width).toBe(SAMPLE_PRESET.width);
    expect(options.dropout).toBe(SAMPLE_PRESET.dropout);
    expect(filled).toContain(`--width ${SAMPLE_PRESET.width}`);
    expect(filled).toContain('--batch-norm');
    expect(filled.join(' ')).not.toMatch(/--lr|--image-size/);
  });

  test('--model chooses the network: batch norm, width, hidden size and dropout keep the flag defaults unless given', () => {
    let p = parse(['--model', 'vgg11']);
    applySamplePreset(p.options, p.explicit);
    expect(p.options).toMatchObject({ model: 'vgg11', batchNorm: false, width: 1, hiddenFeatures: 4096, dropout: 0.5 });
    expect(p.options.epochs).toBe(SAMPLE_PRESET.epochs); // the training options still come from the preset
    p = parse(['--model', 'vgg19', '--batch-norm', '--image-size', '224', '--lr', '0.003']);
    const filled = applySamplePreset(p.options, p.explicit);
    expect(p.options).toMatchObject({ model: 'vgg19', batchNorm: true, width: 1, hiddenFeatures: 4096, imageSize: 224, lr: 0.003 });
    expect(filled.join(' ')).not.toMatch(/--model|--batch-norm|--width|--hidden-features|--image-size|--lr/);
    // --width alone does not choose the network: the rest of the preset's architecture is filled
    p = parse(['--width', '0.5']);
    applySamplePreset(p.options, p.explicit);
    expect(p.options).toMatchObject({ model: 'vgg11', batchNorm: true, width: 0.5, hiddenFeatures: SAMPLE_PRESET.hiddenFeatures });
    // --pretrained chooses it too
    p = parse(['--pretrained', './w.pth']);
    applySamplePreset(p.options, p.explicit);
    expect(p.options).toMatchObject({ model: 'vgg16', width: 1, hiddenFeatures: 4096 });
  });

  test('--help shows the flags\' real defaults and the preset that changes them', () => {
    const c = io();
    expect(parseTrainArgs(['--help'], c.io)).toBe(0);
    const text = c.out().replace(/\s+/g, ' ');
    expect(text).toMatch(/--model <name> architecture \(choices: [^)]*, default: "vgg16"\)/);
    expect(text).toMatch(/--epochs <n> [^-]*\(default: 30\) --batch-size/);
    expect(text).toMatch(/--lr <x> [^-]*\(default: 0\.01\) --momentum/);
    expect(text).toMatch(/--width <x> [^-]*\(1 = the paper\) \(default: 1\) --hidden/);
    expect(text).toMatch(/--hidden-features <n> [^-]*\(default: 4096\) --dropout/);
    expect(text).toMatch(/--dropout <p> [^-]*\(default: 0\.5\) --quiet/);
    expect(text).toContain('sample data');
    for (const [k, v] of Object.entries(SAMPLE_PRESET)) expect(text).toContain(showFlag(k, v));
  });
});

describe('resume rules', () => {
  const saved: Options = {
    model: 'vgg11', batchNorm: true, width: 0.25, hiddenFeatures: 256, epochs: 8, batchSize: 32, lr: 0.05, momentum: 0.9,
    weightDecay: 5e-4, imageSize: 32, cropScale: 0.35, data: './data', dataset: 'sample', seed: 1, scheduler: 'cosine', warmup: 1,
    patience: 3, factor: 0.1, stepSize: 30, checkpointDir: './checkpoint', saveEvery: 0, logDir: './logs', quiet: true, workers: 1,
    device: 'cpu', trainSamples: 1000,
  };
  const merge = (argv: string[], at = { epoch: 3, batchInEpoch: 0 }) => {
    const p = parse(['--resume', 'x.safetensors', ...argv]);
    const changes = mergeResume(p.options, p.explicit, saved, at, p.keys, 'x.safetensors');
    return { o: p.options, changes };
  };
  const refused = (argv: string[], re: RegExp, at = { epoch: 3, batchInEpoch: 0 }) => {
    let e: unknown;
    try {
      merge(argv, at);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(UsageError);
    expect((e as Error).message).toMatch(re);
  };

  test('the checkpoint\'s options fill what is not given; the session\'s own are not taken from it', () => {
    const { o, changes } = merge([]);
    expect(o).toMatchObject({ model: 'vgg11', batchNorm: true, width: 0.25, lr: 0.05, epochs: 8, batchSize: 32, scheduler: 'cosine', dataset: 'sample' });
    expect(o.quiet).toBe(false); // --quiet, --workers, --device: this process's, not the run's
    expect(o.workers).toBeUndefined();
    expect(o.device).toBe('auto');
    expect(o.trainSamples).toBeUndefined(); // saved keys that are not options are ignored
    expect(changes).toEqual([]);
  });

  test('given flags that can be honoured are, and are reported', () => {
    const { o, changes } = merge(['--lr', '0.01', '--momentum', '0.5', '--weight-decay', '0', '--batch-size', '16', '--epochs', '20', '--image-size', '48']);
    expect(o).toMatchObject({ lr: 0.01, momentum: 0.5, weightDecay: 0, batchSize: 16, epochs: 20, imageSize: 48 });
    expect(changes.map((c) => c.key).sort()).toEqual(['batchSize', 'epochs', 'imageSize', 'lr', 'momentum', 'weightDecay']);
    expect(changes.find((c) => c.key === 'lr')).toEqual({ key: 'lr', was: 0.05, now: 0.01 });
    // the same value as the checkpoint's is no change
    expect(merge(['--model', 'vgg11', '--batch-norm', '--lr', '0.05']).changes).toEqual([]);
    // a new seed at an epoch boundary
    expect(merge(['--seed', '7']).changes).toEqual([{ key: 'seed', was: 1, now: 7 }]);
    // --dataset auto means the run's own
    expect(merge(['--dataset', 'auto']).o.dataset).toBe('sample');
  });

  test('flags that cannot be honoured are refused with the reason', () => {
    refused(['--model', 'vgg16'], /--model vgg16: x\.safetensors was trained with --model vgg11; a resumed run keeps its network/);
    refused(['--width', '0.5'], /--width 0\.5: .*--width 0\.25; a resumed run keeps its network/);
    refused(['--hidden-features', '4096'], /keeps its network/);
    refused(['--dataset', 'stl10'], /--dataset stl10: .*--dataset sample; a resumed run keeps its dataset/);
    refused(['--scheduler', 'step'], /--scheduler step: .*switching it on resume is not supported/);
    refused(['--warmup', '0'], /--warmup 0: .*not supported/);
    refused(['--pretrained', 'vgg11_bn'], /--pretrained only starts a new run/);
    refused(['--seed', '7'], /--seed 7: .*order of epoch 4.*is drawn from the seed/, { epoch: 3, batchInEpoch: 5 });
    refused(['--epochs', '2'], /--epochs 2: x\.safetensors has 3 epoch\(s\) done; give --epochs 3 or more/);
    refused(['--epochs', '3'], /part-way into epoch 4; give --epochs 4 or more/, { epoch: 3, batchInEpoch: 5 });
    // the run's batch norm is a flag that can only be added: the checkpoint without it refuses --batch-norm
    const p = parse(['--resume', 'x', '--batch-norm']);
    expect(() => mergeResume(p.options, p.explicit, { ...saved, batchNorm: false }, { epoch: 1, batchInEpoch: 0 }, p.keys, 'x')).toThrow(/--batch-norm: x was trained with \(no --batch-norm\)/);
  });
});

describe('an explicit --lr on resume rebases the schedule', () => {
  // Each scheduler stepped 3 epochs from base 0.1, its state rebased to 0.02, loaded into a fresh one: the LR must be
  // what the same scheduler gives at that position when attached to 0.02 from the start (for plateau, which has no
  // base: the new LR itself).
  const kinds: [string, () => Scheduler][] = [
    ['cosine', () => cosineAnnealing({ tMax: 10 })],
    ['step', () => stepLR({ stepSize: 2, gamma: 0.5 })],
    ['constant', () => constantLR()],
    ['warmup+cosine', () => linearWarmup({ epochs: 5 }, cosineAnnealing({ tMax: 5 }))],
    ['warmup+cosine, past the warm-up', () => linearWarmup({ epochs: 2 }, cosineAnnealing({ tMax: 8 }))],
  ];
  test.each(kinds)('%s', (_, make) => {
    const a = make();
    a.attach(0.1);
    for (let i = 0; i < 3; i++) a.step({ 'val.loss': 1 });
    const b = make();
    b.loadState(rebaseSchedulerState(a.state(), 0.02));
    const ref = make();
    ref.attach(0.02);
    for (let i = 0; i < 3; i++) ref.step({ 'val.loss': 1 });
    expect(b.lr).toBeCloseTo(ref.lr, 15);
    expect(b.step({ 'val.loss': 1 })).toBeCloseTo(ref.step({ 'val.loss': 1 }), 15);
  });
  test('plateau: the current LR becomes --lr, its patience count goes on', () => {
    const a = reduceLROnPlateau({ patience: 0, factor: 0.5 });
    a.attach(0.1);
    a.step({ 'val.loss': 1 });
    a.step({ 'val.loss': 2 }); // worse: 0.05
    expect(a.lr).toBeCloseTo(0.05, 15);
    const b = reduceLROnPlateau({ patience: 0, factor: 0.5 });
    b.loadState(rebaseSchedulerState(a.state(), 0.3));
    expect(b.lr).toBe(0.3);
    expect(b.step({ 'val.loss': 3 })).toBeCloseTo(0.15, 15); // still worse than its best (1)
  });
});

test('the resume hint repeats the command as given, quoted for the shell, without --resume/--overwrite', () => {
  expect(resumeCommand('node dist/train.js', ['--lr', '0.1', '--overwrite', '--resume', 'old.safetensors', '--data', 'my data'], 'ck/last.safetensors'))
    .toBe("node dist/train.js --lr 0.1 --data 'my data' --resume ck/last.safetensors");
  expect(resumeCommand('vggnet train', ['--resume=auto', '--checkpoint-dir', "it's"], "it's/last.safetensors"))
    .toBe("vggnet train --checkpoint-dir 'it'\\''s' --resume 'it'\\''s/last.safetensors'");
  expect(shellQuote('')).toBe("''");
  expect(shellQuote('a$b')).toBe("'a$b'");
});
