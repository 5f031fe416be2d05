#!/usr/bin/env node
// `node dist/train.js` (also `vggnet train`): trains a VGG on STL10, an image folder or the bundled sample data.
// With no STL10 under --data (and no --download) it says so and runs a small preset on the sample dataset that
// finishes in a few minutes on 2 CPU cores.
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { VGGNet, cfgs, VGGConfig } from '../models/vgg';
import { loadPretrained } from '../models/pretrained';
import { isPretrainedName, pretrainedArchitecture, resolvePretrained } from '../io/hub';
import { resolveDevice, getNumThreads } from '../backend';
import { sgd } from '../optim/sgd';
import { Scheduler, reduceLROnPlateau, stepLR, cosineAnnealing, linearWarmup, constantLR } from '../optim/schedulers';
import { STL10, ImageFolder, DataLoader, transforms as T, ensureSampleData, defaultDataRoot, Dataset, stl10Present } from '../data';
import { Trainer, TrainingDivergedError, readCheckpointMeta, modelFromCheckpoint, formatConfusion, packageVersion, DEFAULT_DASHBOARD_PORT } from '../train/index';
import type { CheckpointMeta } from '../train/index';
import { vggMacs } from '../bench/flops';
import { CliIO, EXIT, checkpointFile, configure, intArg as int, numArg as num, parseArgs, processIO, runAsMain } from './support';
import {
  ARCHITECTURE, Options, ResumeChange, SAMPLE_PRESET, UsageError, applySamplePreset, mergeResume, rebaseSchedulerState, resumeCommand, showFlag,
} from './train_plan';
import { addLaunchOptions, launchTrainWorkers, startTrainWorker } from './launch';

export type { CliIO } from './support';

const MODELS = { vgg11: 'A', vgg13: 'B', vgg16: 'D', vgg19: 'E' } as const;

export { SAMPLE_PRESET };

export function buildProgram(io: CliIO): Command {
  const p = new Command('train')
    .description('Train a VGG network (oneDNN on the CPU, cuDNN on NVIDIA GPUs) on STL10, an image folder or the bundled sample data.')
    .addOption(new Option('--model <name>', 'architecture').choices(Object.keys(MODELS)).default('vgg16'))
    .option('--batch-norm', 'use the _bn variant (batch norm after every conv)', false)
    .option('--epochs <n>', 'epochs to train (in total, counting resumed ones)', int('--epochs', 1), 30)
    .option('--batch-size <n>', 'batch size (default 64 on cuda, 32 on cpu)', int('--batch-size', 1))
    .option('--lr <x>', 'initial learning rate', num('--lr'), 0.01)
    .option('--momentum <x>', 'SGD momentum', num('--momentum'), 0.9)
    .option('--weight-decay <x>', 'L2 weight decay', num('--weight-decay'), 5e-4)
    .option('--image-size <n>', 'training crop / evaluation size (>= 32)', int('--image-size', 32), 224)
    .option('--crop-scale <x>', "smallest area fraction of RandomResizedCrop (torchvision's 0.08; larger is gentler on small images)", (v: string) => {
      const n = Number(v);
      if (v.trim() === '' || !(n > 0 && n <= 1)) throw new InvalidArgumentError(`--crop-scale must be a number in (0, 1], got '${v}'.`);
      return n;
    }, 0.08)
    .option('--data <dir>', 'dataset folder: holds stl10_binary/ (stl10) or train/<class>/* and test/<class>/* (folder)', './data')
    .addOption(new Option('--dataset <kind>', 'auto: STL10 if it is under --data, else the sample data').choices(['auto', 'stl10', 'folder', 'sample']).default('auto'))
    .option('--download', 'download STL10 (2.6 GB) into --data if it is missing', false)
    .addOption(new Option('--device <d>', 'where to train').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .addOption(new Option('--precision <p>', 'compute precision (default bf16 on cuda, fp32 on cpu; tf32: float32 tensors on TF32 tensor cores, cuda only)').choices(['fp32', 'tf32', 'bf16']))
    .option('--workers <n>', 'data loader threads (default: all cores)', int('--workers', 1))
    .option('--seed <n>', 'seed of init, shuffling, augmentation and dropout', int('--seed', 0), 1)
    .option('--checkpoint-dir <dir>', 'where last/best/epoch-NNNN.safetensors go', './checkpoint')
    .option('--save-every <n>', 'also keep a checkpoint every n epochs (0: never)', int('--save-every', 0), 0)
    .option('--resume <path|auto>', "continue a run from its checkpoint (a file, or a folder: its last.safetensors; 'auto': <checkpoint-dir>/last.safetensors if there is one). The checkpoint's options apply unless given again; those that cannot change are refused")
    .option('--overwrite', 'let a new run replace the checkpoints of another run in --checkpoint-dir (they are deleted first)', false)
    .option('--evaluate [checkpoint]', 'train nothing: test a checkpoint (default <checkpoint-dir>/best.safetensors) on the test split; prints the metrics and the confusion matrix')
    .addOption(new Option('--scheduler <kind>', 'LR schedule, stepped once per epoch').choices(['plateau', 'step', 'cosine', 'none']).default('plateau'))
    .option('--patience <n>', 'plateau: epochs without improvement of the test loss (val.loss in the logs) before the LR drops', int('--patience', 0), 3)
    .option('--factor <x>', 'plateau/step: LR multiplier at a drop', num('--factor', 0, 1), 0.1)
    .option('--step-size <n>', 'step: epochs between LR drops', int('--step-size', 1), 30)
    .option('--warmup <n>', 'linear LR warm-up epochs before the schedule', int('--warmup', 0), 0)
    .option('--log-dir <dir>', 'where metrics.jsonl, metrics.csv, metrics.svg and a TensorBoard event file go', './logs')
    .option('--pretrained <name|path>', "start from torchvision's ImageNet weights: vgg11 ... vgg19_bn (downloaded once into ~/.cache/vggnet/weights; sets --model and --batch-norm), or a .pth/.pt/.safetensors file; the last layer is replaced when the class count differs")
    .option('--width <x>', 'conv width multiplier (1 = the paper)', num('--width', 0.01), 1)
    .option('--hidden-features <n>', 'width of the two hidden FC layers', int('--hidden-features', 1), 4096)
    .option('--dropout <p>', 'dropout probability after the two hidden FC layers', num('--dropout', 0, 1), 0.5)
    .option('--quiet', 'only the per-epoch summaries and the final result', false)
    .option('--dashboard [port]', `serve a live dashboard at http://127.0.0.1:PORT while training (default ${DEFAULT_DASHBOARD_PORT}; 0: any free port)`, (v: string) => {
      if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new InvalidArgumentError(`--dashboard must be a port number in [0, 65535], got '${v}'.`);
      return Number(v);
    })
    .option('--no-gpu-augment', 'on cuda: run the training transforms on the CPU data workers, not on the GPU')
    .option('--no-cuda-graph', 'on cuda: run every training step eagerly, never as a captured CUDA graph')
    .version(packageVersion(), '--version')
    .showHelpAfterError('(run with --help for the options)');
  addLaunchOptions(p, true); // data-parallel training: --nproc-per-node, --nnodes, ..., --sync-bn (lib/cli/launch.ts)
  configure(p, io);
  p.addHelpText('after', `
The defaults above are the flags' own. A new run on the bundled sample data (no STL10 under --data, or --dataset
sample) fills the options you do not give from a quick preset, and prints what it filled:
${wrap(Object.entries(SAMPLE_PRESET).map(([k, v]) => showFlag(k, v)).join(' '), 2, 116)}
Giving --model (or --pretrained) chooses the network: --batch-norm, --width, --hidden-features and --dropout then
keep the defaults above unless given too. On --resume the checkpoint's options apply unless given again.

Examples:
  node dist/train.js                                   # sample data, quick preset (a few minutes on a laptop CPU)
  node dist/train.js --download --model vgg16 --batch-norm --epochs 100 --data ./data
  node dist/train.js --dataset folder --data ../shared/data/cifar10-mini --model vgg11 --batch-norm --image-size 32
  node dist/train.js --resume auto                     # continue the last run in ./checkpoint
  node dist/train.js --pretrained vgg16_bn --data ./data --lr 0.001 --epochs 10   # fine-tune torchvision's weights
  node dist/train.js --pretrained ./vgg16_bn-6c64b313.pth --model vgg16 --batch-norm   # the same, offline
  node dist/train.js --nproc-per-node 2 --devices 0,1 --batch-size 64   # two GPUs, 64 images each per step
  node dist/train.js --nnodes 2 --node-rank 0 --nproc-per-node 4 --master-addr 10.0.0.1 --master-port 29500   # machine 0 of 2`);
  return p;
}

/** Words wrapped to `cols` columns, indented. */
function wrap(text: string, indent: number, cols: number): string {
  const lines: string[] = [];
  let cur = '';
  for (const w of text.split(' ')) {
    if (cur && indent + cur.length + 1 + w.length > cols) {
      lines.push(cur);
      cur = w;
    } else {
      cur = cur ? `${cur} ${w}` : w;
    }
  }
  if (cur) lines.push(cur);
  return lines.map((l) => ' '.repeat(indent) + l).join('\n');
}

function scaledConfig(model: keyof typeof MODELS, width: number): VGGConfig {
  return cfgs[MODELS[model]].map((v) => (v === 'M' ? 'M' : Math.max(4, Math.round(v * width))));
}

function makeScheduler(o: Options): Scheduler | null {
  let s: Scheduler | null = null;
  const warm = o.warmup as number;
  const after = Math.max(1, (o.epochs as number) - warm);
  switch (o.scheduler) {
    case 'plateau': s = reduceLROnPlateau({ monitor: 'val.loss', patience: o.patience as number, factor: o.factor as number }); break;
    case 'step': s = stepLR({ stepSize: o.stepSize as number, gamma: o.factor as number }); break;
    case 'cosine': s = cosineAnnealing({ tMax: after }); break;
    default: s = null;
  }
  if (warm > 0) return linearWarmup({ epochs: warm }, s ?? constantLR());
  return s;
}

function fmtPct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}
const fmtLr = (x: number) => String(Number(x.toPrecision(3)));

/** Parsed command line: the options, and which of them the user gave. */
export interface ParsedTrainArgs {
  program: Command;
  options: Options;
  explicit: Set<string>;
}

/**
 * Parses train's argv. Returns the options, or the exit code when there is nothing to run: 0 after --help/--version,
 * 2 for bad arguments (commander's message, or ours for a stray positional argument) — written to io.
 */
export function parseTrainArgs(argv: string[], io: CliIO): ParsedTrainArgs | number {
  const program = buildProgram(io);
  const parsed = parseArgs(program, argv);
  if (parsed !== null) return parsed;
  if (program.args.length > 0) {
    const a = program.args[0];
    io.stderr.write(`error: unexpected argument '${a}': train takes options only` +
      `${/safetensors$|\.pth?$/.test(a) ? ` (--resume ${a} continues a checkpoint, --evaluate ${a} tests one)` : fs.existsSync(a) ? ` (--data ${a} names a dataset folder)` : ''}\n(run with --help for the options)\n`);
    return EXIT.usage;
  }
  const explicit = new Set(program.options.map((opt) => opt.attributeName()).filter((k) => program.getOptionValueSource(k) === 'cli'));
  return { program, options: { ...program.opts() }, explicit };
}

/** The option keys of the program (camelCase, as in its opts()). */
function optionKeys(program: Command): string[] {
  return [...new Set(program.options.map((opt) => opt.attributeName()))];
}

const RUN_FILE = /^(last|best|epoch-\d+)\.safetensors$/;

/** The training checkpoints in a folder (last, best, epoch-NNNN). */
function runFiles(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((f) => RUN_FILE.test(f)).sort();
  } catch {
    return [];
  }
}

/** One line about the run whose checkpoints are in `dir`. */
function describeRun(dir: string, files: string[]): string {
  const f = files.includes('last.safetensors') ? 'last.safetensors' : files.includes('best.safetensors') ? 'best.safetensors' : files[0];
  try {
    const m = readCheckpointMeta(path.join(dir, f));
    const epochs = m.config?.epochs;
    return `${f}: ${m.model.name ?? 'a VGG'}, ${m.epoch}${typeof epochs === 'number' ? ` of ${epochs}` : ''} epoch(s)` +
      `${m.best ? `, best test top1 ${fmtPct(m.best.top1)}` : ''}`;
  } catch {
    return files.join(', ');
  }
}

/** Multiply-adds of one image's forward pass (convs, then the classifier with its hidden width). */
function forwardMacs(cfg: VGGConfig, size: number, hidden: number, classes: number): number {
  const m = vggMacs(cfg, size, classes);
  const c = [...cfg].reverse().find((v): v is number => v !== 'M') ?? 3;
  return m.conv + c * 49 * hidden + hidden * hidden + hidden * classes;
}

/**
 * Big networks on a CPU are silent until their first step ends (vgg19 at 224px, batch 32: most of a minute on 2
 * cores): the line that says so, or null for a step estimated under 5 s. The estimate takes ~60 GFLOP/s per thread
 * (README: 131 GFLOP/s on 2 AVX2 cores for vgg16 at 224px).
 */
export function firstStepNote(cfg: VGGConfig, imageSize: number, hidden: number, classes: number, batchSize: number, threads: number): string | null {
  const flops = 2 * 3 * forwardMacs(cfg, imageSize, hidden, classes) * batchSize;
  const seconds = flops / (60e9 * threads);
  if (seconds <= 5) return null;
  return `a training step of ${batchSize} images at ${imageSize}px is ~${(flops / 1e12).toFixed(1)} TFLOP: expect ~${Math.round(seconds)} s per step on ` +
    `${threads} CPU thread(s) before the first progress update`;
}

/** Runs the training CLI in-process; returns the exit code (0 ok, 1 error, 2 bad arguments, 130 interrupted). */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const args = parseTrainArgs(argv, io);
  if (typeof args === 'number') return args;
  const { program, explicit } = args;
  const o = args.options;
  // --nproc-per-node: this process only launches the workers, each of which runs this command (lib/cli/launch.ts).
  if (o.nprocPerNode !== undefined && !process.env.WORLD_SIZE && o.evaluate === undefined) return launchTrainWorkers(argv, o, io);
  const worker = process.env.WORLD_SIZE && o.evaluate === undefined ? startTrainWorker(o) : null; // a distributed worker: only rank 0 prints
  const say = (s: string) => (!worker || worker.isMain) && io.stdout.write(s + '\n');
  const err = (s: string) => io.stderr.write(s + '\n');
  const command = io.command ?? 'node dist/train.js';

  try {
    if (o.evaluate !== undefined) return await evaluateMain(o, explicit, io);

    // --resume: the checkpoint's run, with the flags given now where they can be honoured (lib/cli/train_plan.ts).
    let resumePath: string | null = null;
    let meta: CheckpointMeta | null = null;
    let changes: ResumeChange[] = [];
    if (o.resume !== undefined) {
      const r = o.resume as string;
      if (r === 'auto') {
        const auto = path.join(o.checkpointDir as string, 'last.safetensors');
        if (fs.existsSync(auto)) resumePath = auto;
        else say(`--resume auto: no checkpoint at ${auto}; starting a new run`);
      } else {
        resumePath = checkpointFile('--resume', r, ['last.safetensors']);
      }
    }
    if (resumePath) {
      meta = readCheckpointMeta(resumePath);
      changes = mergeResume(o, explicit, (meta.config ?? {}) as Options, meta, optionKeys(program), resumePath);
      // A resumed run goes on writing beside the checkpoint it came from, unless told otherwise.
      if (!explicit.has('checkpointDir')) o.checkpointDir = path.dirname(resumePath);
      say(`resuming ${resumePath}: ${meta.epoch} epoch(s) done${meta.batchInEpoch ? ` + ${meta.batchInEpoch} batches` : ''}, step ${meta.step}, lr ${fmtLr(meta.lr)}`);
    }

    // Dataset.
    let kind = o.dataset as string;
    const dataDir = o.data as string;
    if (!resumePath && (kind === 'auto' || kind === 'stl10') && !stl10Present(dataDir) && !o.download) {
      if (kind === 'stl10') throw new Error(`--dataset stl10: no STL10 under ${dataDir} (expected ${path.join(dataDir, 'stl10_binary')}/); add --download to fetch it (2.6 GB)`);
      say(`No STL10 under ${path.resolve(dataDir)} (add --download to fetch it, 2.6 GB): training on the bundled sample dataset with a quick preset.`);
      kind = 'sample';
    } else if (kind === 'auto') {
      kind = 'stl10';
    }
    o.dataset = kind;
    // --pretrained NAME fixes the architecture (full width, 4096 hidden features).
    const pretrained = resumePath ? undefined : (o.pretrained as string | undefined);
    if (pretrained !== undefined && isPretrainedName(pretrained)) {
      const arch = pretrainedArchitecture(pretrained);
      const want: Options = { model: arch.model, batchNorm: arch.batchNorm, width: 1, hiddenFeatures: 4096 };
      for (const k of ARCHITECTURE) {
        if (explicit.has(k) && o[k] !== want[k]) {
          throw new UsageError(`--pretrained ${pretrained} is torchvision's ${pretrained} (--model ${arch.model}${arch.batchNorm ? ' --batch-norm' : ''} --width 1 --hidden-features 4096); it does not fit ${showFlag(k, o[k])}`);
        }
        o[k] = want[k];
      }
    }
    if (kind === 'sample' && !resumePath) {
      const filled = applySamplePreset(o, explicit);
      if (filled.length) say(`sample preset (for the options not given): ${filled.join(' ')}`);
    }

    // A new run does not silently replace another run's checkpoints (rank 0's: the other ranks write none).
    const ckDir = o.checkpointDir as string;
    const resumedHere = resumePath !== null && path.resolve(path.dirname(resumePath)) === path.resolve(ckDir);
    const old = resumedHere || (worker && !worker.isMain) ? [] : runFiles(ckDir);
    if (old.length > 0) {
      if (!o.overwrite) {
        throw new UsageError(`${ckDir} already holds the checkpoints of a run (${describeRun(ckDir, old)}). ` +
          `Continue it with --resume auto${ckDir !== './checkpoint' ? ` --checkpoint-dir ${ckDir}` : ''}, replace it with --overwrite, or choose another --checkpoint-dir.`);
      }
      for (const f of old) fs.rmSync(path.join(ckDir, f), { force: true });
      say(`--overwrite: removed the previous run's checkpoints from ${ckDir} (${old.join(', ')})`);
    }

    const device = resolveDevice(o.device as 'auto');
    await worker?.join(device);
    const imageSize = o.imageSize as number;
    const batchSize = (o.batchSize as number | undefined) ?? (device === 'cuda' ? 64 : 32);
    o.batchSize = batchSize;
    const opened = await openData(kind, dataDir, imageSize, o, say);
    const trainSet = opened.trainSet!;
    const testSet = opened.testSet;
    const classes = trainSet.classes;
    if (testSet.classes.join() !== classes.join()) throw new Error(`the train and test splits have different classes (${classes.join(', ')} vs ${testSet.classes.join(', ')})`);
    if (meta?.classes && meta.classes.join() !== classes.join()) {
      throw new Error(`${resumePath}: the run was trained on the classes ${meta.classes.join(', ')}; the ${kind} data under ${dataDir} has ${classes.join(', ')}`);
    }
    const savedSamples = meta?.config?.trainSamples;
    if (meta && meta.batchInEpoch > 0 && typeof savedSamples === 'number' && savedSamples !== trainSet.length) {
      throw new Error(`${resumePath}: the run is part-way into epoch ${meta.epoch + 1} of a ${savedSamples}-image training set; the one under ${dataDir} has ${trainSet.length}, so the position would be meaningless (resume with the same data)`);
    }

    // Model.
    const modelName = o.model as keyof typeof MODELS;
    const width = o.width as number;
    const cfg = scaledConfig(modelName, width);
    const model = new VGGNet(cfg, {
      numClasses: classes.length, batchNorm: Boolean(o.batchNorm), hiddenFeatures: o.hiddenFeatures as number, dropout: o.dropout as number, seed: o.seed as number,
      device, precision: o.precision as 'fp32' | 'tf32' | 'bf16' | undefined,
    }, `${modelName}${o.batchNorm ? '_bn' : ''}${width !== 1 ? `-w${width}` : ''}`);
    if (pretrained !== undefined) loadPretrained(model, await resolvePretrained(pretrained, { quiet: o.quiet as boolean }), say);

    const workers = (o.workers as number | undefined) ?? worker?.threads;
    const trainLoader = new DataLoader(trainSet, { batchSize, shuffle: true, seed: o.seed as number, workers });
    const testLoader = new DataLoader(testSet, { batchSize: Math.max(batchSize, device === 'cuda' ? 256 : 64), workers });
    const config: Options = { ...o, trainSamples: trainSet.length };
    for (const k of ['resume', 'overwrite', 'evaluate', 'dashboard']) delete config[k]; // a resumed run serves a dashboard only when asked again
    const controller = new AbortController();
    io.signal?.addEventListener('abort', () => controller.abort());
    const trainer = new Trainer(model, {
      optimizer: sgd({ lr: o.lr as number, momentum: o.momentum as number, weightDecay: o.weightDecay as number }),
      scheduler: makeScheduler(o),
      checkpointDir: ckDir, saveEvery: o.saveEvery as number, logDir: o.logDir as string,
      classes, config, output: io.stdout, progress: !o.quiet, validationName: 'test',
      signal: controller.signal,
      gpuAugment: o.gpuAugment === false ? false : undefined, // default: on the GPU when the transform allows it
      cudaGraph: o.cudaGraph !== false,
      dashboard: o.dashboard === undefined ? undefined : { port: o.dashboard === true ? DEFAULT_DASHBOARD_PORT : (o.dashboard as number) },
      distributed: worker?.wrap(model),
    });
    if (resumePath && meta) {
      trainer.resume(resumePath);
      // Distributed, the sample position counts in each rank's shard (the padded ceil(n / world size)).
      const shard = trainer.ddp ? Math.ceil(trainSet.length / trainer.ddp.processGroup.worldSize) : trainSet.length;
      for (const line of applyResumeFlags(trainer, meta, changes, explicit, o, shard, batchSize)) say(`  ${line}`);
    }

    say(`${model.options.name}: ${model.numParameters().toLocaleString('en-US')} parameters on ${device} (${model.precision}); ` +
      `${kind} ${trainSet.length} train / ${testSet.length} test images at ${imageSize}px, ${classes.length} classes; ` +
      `batch ${batchSize}, lr ${o.lr}, momentum ${o.momentum}, weight decay ${o.weightDecay}, scheduler ${o.scheduler}${(o.warmup as number) > 0 ? ` + ${o.warmup} warm-up` : ''}; ` +
      `${o.epochs} epochs`);
    if (worker) say(worker.describe(model));
    if (model.precisionNote) say(model.precisionNote);
    if (trainer.epoch >= (o.epochs as number) && trainer.batchInEpoch === 0) {
      say(`the run is complete (${trainer.epoch} of ${o.epochs} epochs); give a larger --epochs to train on. Evaluating it on the test split:`);
    } else if (device === 'cpu') {
      const note = firstStepNote(cfg, imageSize, o.hiddenFeatures as number, classes.length, batchSize, getNumThreads());
      if (note) say(note);
    }

    // Ctrl-C / SIGTERM: finish the step, save `last`, print how to resume, exit 130. A second Ctrl-C quits at once.
    let signals = 0;
    const onSignal = (sig: string) => {
      signals++;
      if (signals > 1) {
        err(`\n${sig} again: quitting without saving`);
        process.exit(130);
      }
      // A worker's stderr comes through the launcher, a line each: no blank line, and only rank 0 (which saves) speaks.
      if (!worker) err(`\n${sig}: finishing the current step and saving ${path.join(ckDir, 'last.safetensors')} (press Ctrl-C again to quit at once)`);
      else if (worker.isMain) err(`${sig}: finishing the step every rank agrees on and saving ${path.join(ckDir, 'last.safetensors')}`);
      controller.abort();
    };
    const sigint = () => onSignal('SIGINT');
    const sigterm = () => onSignal('SIGTERM');
    if (io.handleSignals) {
      process.on('SIGINT', sigint);
      process.on('SIGTERM', sigterm);
    }
    const t0 = Date.now();
    let result;
    try {
      result = await trainer.fit(trainLoader, { epochs: o.epochs as number, validation: testLoader });
    } finally {
      process.off('SIGINT', sigint);
      process.off('SIGTERM', sigterm);
    }
    const minutes = ((Date.now() - t0) / 60000).toFixed(1);
    if (result.interrupted) {
      if (worker && !worker.isMain) return EXIT.interrupted; // rank 0 says where it saved
      const dist = worker ? ` --nproc-per-node ${process.env.LOCAL_WORLD_SIZE}${Number(process.env.WORLD_SIZE) > Number(process.env.LOCAL_WORLD_SIZE) ? ' ...' : ''}` : '';
      err(`interrupted after ${trainer.epoch} epoch(s) + ${trainer.batchInEpoch} batch(es) (step ${trainer.step}); saved ${result.lastCheckpoint}`);
      err(`resume with: ${resumeCommand(`${command}${dist}`, argv, result.lastCheckpoint ?? path.join(ckDir, 'last.safetensors'))}`);
      return EXIT.interrupted;
    }
    const val = result.validation ?? (await trainer.evaluate(testLoader));
    say('');
    say(`per-class accuracy and confusion matrix (test split, ${val.samples} images):`);
    say(formatConfusion(val, classes));
    say('');
    if (result.best) say(`best test top1 ${fmtPct(result.best.top1)} at epoch ${result.best.epoch}`);
    say(`trained ${result.epochs} epoch(s) in ${minutes} min; checkpoints in ${ckDir}, logs and plot in ${path.join(o.logDir as string, 'metrics.svg')} (TensorBoard: tensorboard --logdir ${o.logDir})`);
    say(`test loss ${val.loss.toFixed(4)}  test top5 ${fmtPct(val.top5)}`);
    say(`test top1 ${fmtPct(val.top1)}`);
    return 0;
  } catch (e) {
    err(`error: ${(e as Error).message}`);
    if (e instanceof UsageError) return EXIT.usage;
    if (process.env.VGGNET_DEBUG && !(e instanceof TrainingDivergedError)) err((e as Error).stack ?? '');
    return EXIT.error;
  } finally {
    worker?.leave();
  }
}

/** The train and test sets of a dataset kind, loaded, with the CLI's transforms. */
async function openData(kind: string, dataDir: string, imageSize: number, o: Options, say: (s: string) => void, testOnly = false): Promise<{ trainSet: Dataset | null; testSet: Dataset }> {
  const trainTf = T.compose([
    T.randomResizedCrop(imageSize, { scale: [(o.cropScale as number | undefined) ?? 0.08, 1] }), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD),
  ]);
  const testTf = T.compose([T.evalTransform(imageSize), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
  let trainSet: Dataset | null = null, testSet: Dataset;
  if (kind === 'folder') {
    if (!testOnly) trainSet = new ImageFolder({ root: path.join(dataDir, 'train'), transform: trainTf });
    testSet = new ImageFolder({ root: path.join(dataDir, 'test'), transform: testTf });
  } else {
    const root = kind === 'sample' ? ensureSampleData(defaultDataRoot()) : dataDir;
    const download = kind === 'stl10' && Boolean(o.download);
    if (download && !stl10Present(dataDir)) say(`downloading STL10 into ${path.resolve(dataDir)} ...`);
    if (!testOnly) trainSet = await STL10.create({ root, split: 'train', transform: trainTf, download });
    testSet = await STL10.create({ root, split: 'test', transform: testTf, download });
  }
  await trainSet?.load();
  await testSet.load();
  return { trainSet, testSet };
}

/**
 * After trainer.resume(): applies what the resumed trainer cannot know from its construction (an explicit --lr as the
 * schedule's new base; the sample position of a checkpoint that predates it) and returns the lines that report the
 * changed flags and their effect (LR, sample position, schedule).
 */
function applyResumeFlags(trainer: Trainer, meta: CheckpointMeta, changes: ResumeChange[], explicit: ReadonlySet<string>, o: Options, samples: number, batchSize: number): string[] {
  const saved = (meta.config ?? {}) as Options;
  const lines: string[] = [];
  // An explicit --lr is the schedule's new base; the optimizer's LR is then the schedule's value where the run is.
  if (explicit.has('lr')) {
    const lr = o.lr as number;
    if (trainer.scheduler) {
      trainer.scheduler.loadState(rebaseSchedulerState(trainer.scheduler.state(), lr));
      trainer.optimizer.lr = trainer.scheduler.lr;
    } else {
      trainer.optimizer.lr = lr;
    }
  }
  // A checkpoint from before the sample position was saved: its batches were of the saved batch size.
  if (trainer.sampleInEpoch < 0 && typeof saved.batchSize === 'number') trainer.sampleInEpoch = trainer.batchInEpoch * saved.batchSize;
  const epochNo = meta.epoch + 1;
  for (const c of changes) {
    let line = `${showFlag(c.key, c.now)} (was ${c.was === undefined ? 'unset' : showFlag(c.key, c.was)})`;
    if (c.key === 'batchSize' && meta.batchInEpoch > 0) {
      const s = trainer.sampleInEpoch >= 0 ? trainer.sampleInEpoch : meta.batchInEpoch * (saved.batchSize as number);
      line += `: epoch ${epochNo} goes on at sample ${s} of ${samples} (batch ${Math.floor(s / batchSize)} of ${Math.floor(s / batchSize) + Math.ceil((samples - s) / batchSize)} at the new size)`;
    } else if (c.key === 'epochs' && o.scheduler === 'cosine') {
      line += `: the cosine schedule is re-planned over ${o.epochs} epochs${(o.warmup as number) > 0 ? ` (${(o.epochs as number) - (o.warmup as number)} after the warm-up)` : ''}`;
    } else if (c.key === 'lr') {
      line += ': the base of the LR schedule';
    } else if (c.key === 'seed') {
      line += ': later epochs shuffle and augment with it; the weights and dropout go on from the checkpoint';
    }
    lines.push(line);
  }
  if (explicit.has('lr') && !changes.some((c) => c.key === 'lr')) lines.push(`--lr ${o.lr}: the base of the LR schedule, as given`);
  if (trainer.optimizer.lr !== meta.lr) lines.push(`lr for epoch ${epochNo}: ${fmtLr(meta.lr)} -> ${fmtLr(trainer.optimizer.lr)}`);
  return lines.length ? ['changed on the command line:', ...lines.map((l) => `  ${l}`)] : [];
}

/** --evaluate [checkpoint]: test a checkpoint on the test split; metrics and the confusion matrix. */
async function evaluateMain(o: Options, explicit: ReadonlySet<string>, io: CliIO): Promise<number> {
  const say = (s: string) => io.stdout.write(s + '\n');
  const allowed = new Set(['evaluate', 'data', 'dataset', 'download', 'device', 'precision', 'workers', 'batchSize', 'imageSize', 'checkpointDir', 'quiet', ...ARCHITECTURE]);
  for (const k of explicit) {
    if (!allowed.has(k)) throw new UsageError(`${showFlag(k, o[k])} has no effect with --evaluate, which trains nothing (leave it out)`);
  }
  const file = o.evaluate === true
    ? checkpointFile('--evaluate', o.checkpointDir as string, ['best.safetensors', 'last.safetensors'])
    : checkpointFile('--evaluate', o.evaluate as string, ['best.safetensors', 'last.safetensors']);
  const meta = readCheckpointMeta(file);
  const saved = (meta.config ?? {}) as Options;
  for (const k of ARCHITECTURE) {
    if (explicit.has(k) && k in saved && saved[k] !== o[k]) {
      throw new UsageError(`${showFlag(k, o[k])}: ${file} is a ${meta.model.name ?? 'different network'} (${showFlag(k, saved[k])}); --evaluate tests the checkpoint's network`);
    }
  }
  for (const k of ['data', 'dataset', 'imageSize', 'cropScale']) if (!explicit.has(k) && saved[k] !== undefined) o[k] = saved[k];
  let kind = o.dataset as string;
  if (kind === 'auto') kind = stl10Present(o.data as string) ? 'stl10' : 'sample';
  const device = resolveDevice(o.device as 'auto');
  const { model } = modelFromCheckpoint(file, { device, precision: o.precision as 'fp32' | 'bf16' | 'tf32' | undefined });
  try {
    const { testSet } = await openData(kind, o.data as string, o.imageSize as number, o, say, true);
    const classes = meta.classes ?? testSet.classes;
    if (meta.classes && meta.classes.join() !== testSet.classes.join()) {
      throw new Error(`${file}: the network was trained on the classes ${meta.classes.join(', ')}; the ${kind} data under ${o.data} has ${testSet.classes.join(', ')}`);
    }
    const loader = new DataLoader(testSet, { batchSize: (o.batchSize as number | undefined) ?? (device === 'cuda' ? 256 : 64), workers: o.workers as number | undefined });
    say(`evaluating ${file} (${meta.model.name ?? 'VGG'}, ${meta.epoch} epoch(s) trained) on the ${kind} test split: ${testSet.length} images at ${o.imageSize}px on ${device}`);
    const val = await new Trainer(model, { optimizer: sgd({ lr: 0 }), output: null }).evaluate(loader);
    say('');
    say(`per-class accuracy and confusion matrix (test split, ${val.samples} images):`);
    say(formatConfusion(val, classes));
    say('');
    say(`test loss ${val.loss.toFixed(4)}  test top5 ${fmtPct(val.top5)}`);
    say(`test top1 ${fmtPct(val.top1)}`);
    return EXIT.ok;
  } finally {
    model.dispose();
  }
}

runAsMain(module, (argv) => main(argv));
