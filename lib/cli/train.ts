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
import { resolveDevice } from '../backend';
import { sgd } from '../optim/sgd';
import { Scheduler, reduceLROnPlateau, stepLR, cosineAnnealing, linearWarmup, constantLR } from '../optim/schedulers';
import { STL10, ImageFolder, DataLoader, transforms as T, ensureSampleData, defaultDataRoot, Dataset } from '../data';
import { Trainer, TrainingDivergedError, readCheckpointMeta, formatConfusion, packageVersion, DEFAULT_DASHBOARD_PORT } from '../train/index';
import { CliIO, EXIT, configure, intArg as int, numArg as num, parseArgs, processIO, runAsMain } from './support';

export type { CliIO } from './support';

const MODELS = { vgg11: 'A', vgg13: 'B', vgg16: 'D', vgg19: 'E' } as const;

/** The small preset used on the sample dataset (options the user did not set). Measured: see README. */
export const SAMPLE_PRESET = {
  model: 'vgg11', batchNorm: true, width: 0.25, hiddenFeatures: 256, imageSize: 32, epochs: 8, batchSize: 32, lr: 0.05,
  scheduler: 'cosine', warmup: 1,
} as const;

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
    .option('--resume <path|auto>', "continue from a checkpoint ('auto': <checkpoint-dir>/last.safetensors if there is one)")
    .addOption(new Option('--scheduler <kind>', 'LR schedule, stepped once per epoch').choices(['plateau', 'step', 'cosine', 'none']).default('plateau'))
    .option('--patience <n>', 'plateau: epochs without val.loss improvement before the LR drops', int('--patience', 0), 3)
    .option('--factor <x>', 'plateau/step: LR multiplier at a drop', num('--factor', 0, 1), 0.1)
    .option('--step-size <n>', 'step: epochs between LR drops', int('--step-size', 1), 30)
    .option('--warmup <n>', 'linear LR warm-up epochs before the schedule', int('--warmup', 0), 0)
    .option('--log-dir <dir>', 'where metrics.jsonl, metrics.csv, metrics.svg and a TensorBoard event file go', './logs')
    .option('--pretrained <name|path>', "start from torchvision's ImageNet weights: vgg11 ... vgg19_bn (downloaded once into ~/.cache/vggnet/weights; sets --model and --batch-norm), or a .pth/.pt/.safetensors file; the last layer is replaced when the class count differs")
    .option('--width <x>', 'conv width multiplier (1 = the paper)', num('--width', 0.01), 1)
    .option('--hidden-features <n>', 'width of the two hidden FC layers', int('--hidden-features', 1), 4096)
    .option('--quiet', 'only the per-epoch summaries and the final result', false)
    .option('--dashboard [port]', `serve a live dashboard at http://127.0.0.1:PORT while training (default ${DEFAULT_DASHBOARD_PORT}; 0: any free port)`, (v: string) => {
      if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new InvalidArgumentError(`--dashboard must be a port number in [0, 65535], got '${v}'.`);
      return Number(v);
    })
    .option('--no-gpu-augment', 'on cuda: run the training transforms on the CPU data workers, not on the GPU')
    .option('--no-cuda-graph', 'on cuda: run every training step eagerly, never as a captured CUDA graph')
    .version(packageVersion(), '--version')
    .showHelpAfterError('(run with --help for the options)');
  configure(p, io);
  p.addHelpText('after', `
Examples:
  node dist/train.js                                   # sample data, quick preset (a few minutes on a laptop CPU)
  node dist/train.js --download --model vgg16 --batch-norm --epochs 100 --data ./data
  node dist/train.js --dataset folder --data ../shared/data/cifar10-mini --model vgg11 --batch-norm --image-size 32
  node dist/train.js --resume auto                     # continue the last run in ./checkpoint
  node dist/train.js --pretrained vgg16_bn --data ./data --lr 0.001 --epochs 10   # fine-tune torchvision's weights
  node dist/train.js --pretrained ./vgg16_bn-6c64b313.pth --model vgg16 --batch-norm   # the same, offline`);
  return p;
}

function scaledConfig(model: keyof typeof MODELS, width: number): VGGConfig {
  return cfgs[MODELS[model]].map((v) => (v === 'M' ? 'M' : Math.max(4, Math.round(v * width))));
}

function makeScheduler(o: Record<string, unknown>): Scheduler | null {
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

function stl10Present(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'stl10_binary', 'train_X.bin')) && fs.existsSync(path.join(dir, 'stl10_binary', 'test_X.bin'));
}

function fmtPct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

/** Runs the training CLI in-process; returns the exit code (0 ok, 1 error, 2 bad arguments, 130 interrupted). */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const program = buildProgram(io);
  const parsed = parseArgs(program, argv);
  if (parsed !== null) return parsed;
  const say = (s: string) => io.stdout.write(s + '\n');
  const err = (s: string) => io.stderr.write(s + '\n');
  const explicit = (k: string) => program.getOptionValueSource(k) === 'cli';
  const o: Record<string, unknown> = { ...program.opts() };

  try {
    // --resume: the saved run's options, overridden by the ones given now.
    let resumePath: string | null = null;
    if (o.resume !== undefined) {
      const r = o.resume as string;
      resumePath = r === 'auto' ? path.join(o.checkpointDir as string, 'last.safetensors') : r;
      if (!fs.existsSync(resumePath)) {
        if (r !== 'auto') throw new Error(`--resume ${r}: no such checkpoint`);
        say(`--resume auto: no checkpoint at ${resumePath}; starting a new run`);
        resumePath = null;
      }
    }
    if (resumePath) {
      const meta = readCheckpointMeta(resumePath);
      const saved = (meta.config ?? {}) as Record<string, unknown>;
      for (const [k, v] of Object.entries(saved)) if (!explicit(k) && k !== 'resume') o[k] = v;
      say(`resuming ${resumePath}: ${meta.epoch} epoch(s) done${meta.batchInEpoch ? ` + ${meta.batchInEpoch} batches` : ''}, step ${meta.step}, lr ${meta.lr}`);
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
    // --pretrained NAME fixes the architecture (full width, 4096 hidden features); with any --pretrained the sample
    // preset leaves the architecture alone, so the weights fit.
    const pretrained = resumePath ? undefined : (o.pretrained as string | undefined);
    const architecture = ['model', 'batchNorm', 'width', 'hiddenFeatures'];
    if (pretrained !== undefined && isPretrainedName(pretrained)) {
      const arch = pretrainedArchitecture(pretrained);
      const want: Record<string, unknown> = { model: arch.model, batchNorm: arch.batchNorm, width: 1, hiddenFeatures: 4096 };
      for (const k of architecture) {
        if (explicit(k) && o[k] !== want[k]) {
          const flag = `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
          throw new Error(`--pretrained ${pretrained} is torchvision's ${pretrained} (--model ${arch.model}${arch.batchNorm ? ' --batch-norm' : ''} --width 1 --hidden-features 4096); it does not fit ${flag} ${String(o[k])}`);
        }
        o[k] = want[k];
      }
    }
    if (kind === 'sample' && !resumePath) {
      for (const [k, v] of Object.entries(SAMPLE_PRESET)) if (!explicit(k) && !(pretrained !== undefined && architecture.includes(k))) o[k] = v;
    }
    const device = resolveDevice(o.device as 'auto');
    const imageSize = o.imageSize as number;
    const batchSize = (o.batchSize as number | undefined) ?? (device === 'cuda' ? 64 : 32);
    o.batchSize = batchSize;
    const trainTf = T.compose([
      T.randomResizedCrop(imageSize, { scale: [(o.cropScale as number | undefined) ?? 0.08, 1] }), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD),
    ]);
    const testTf = T.compose([T.evalTransform(imageSize), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
    let trainSet: Dataset, testSet: Dataset;
    if (kind === 'folder') {
      trainSet = new ImageFolder({ root: path.join(dataDir, 'train'), transform: trainTf });
      testSet = new ImageFolder({ root: path.join(dataDir, 'test'), transform: testTf });
    } else {
      const root = kind === 'sample' ? ensureSampleData(defaultDataRoot()) : dataDir;
      if (kind === 'stl10' && !stl10Present(dataDir)) say(`downloading STL10 into ${path.resolve(dataDir)} ...`);
      trainSet = await STL10.create({ root, split: 'train', transform: trainTf, download: kind === 'stl10' && Boolean(o.download) });
      testSet = await STL10.create({ root, split: 'test', transform: testTf });
    }
    await trainSet.load();
    await testSet.load();
    const classes = trainSet.classes;
    if (testSet.classes.join() !== classes.join()) throw new Error(`the train and test splits have different classes (${classes.join(', ')} vs ${testSet.classes.join(', ')})`);

    // Model.
    const modelName = o.model as keyof typeof MODELS;
    const width = o.width as number;
    const model = new VGGNet(scaledConfig(modelName, width), {
      numClasses: classes.length, batchNorm: Boolean(o.batchNorm), hiddenFeatures: o.hiddenFeatures as number, seed: o.seed as number,
      device, precision: o.precision as 'fp32' | 'tf32' | 'bf16' | undefined,
    }, `${modelName}${o.batchNorm ? '_bn' : ''}${width !== 1 ? `-w${width}` : ''}`);
    if (pretrained !== undefined) loadPretrained(model, await resolvePretrained(pretrained, { quiet: o.quiet as boolean }), say);

    const workers = o.workers as number | undefined;
    const trainLoader = new DataLoader(trainSet, { batchSize, shuffle: true, seed: o.seed as number, workers });
    const testLoader = new DataLoader(testSet, { batchSize: Math.max(batchSize, device === 'cuda' ? 256 : 64), workers });
    const config = { ...o };
    delete config.resume;
    delete config.dashboard; // a resumed run serves one only when asked again
    const controller = new AbortController();
    io.signal?.addEventListener('abort', () => controller.abort());
    const trainer = new Trainer(model, {
      optimizer: sgd({ lr: o.lr as number, momentum: o.momentum as number, weightDecay: o.weightDecay as number }),
      scheduler: makeScheduler(o),
      checkpointDir: o.checkpointDir as string, saveEvery: o.saveEvery as number, logDir: o.logDir as string,
      classes, config, output: io.stdout, progress: !o.quiet,
      signal: controller.signal,
      gpuAugment: o.gpuAugment === false ? false : undefined, // default: on the GPU when the transform allows it
      cudaGraph: o.cudaGraph !== false,
      dashboard: o.dashboard === undefined ? undefined : { port: o.dashboard === true ? DEFAULT_DASHBOARD_PORT : (o.dashboard as number) },
    });
    if (resumePath) trainer.resume(resumePath);

    say(`${model.options.name}: ${model.numParameters().toLocaleString('en-US')} parameters on ${device} (${model.precision}); ` +
      `${kind} ${trainSet.length} train / ${testSet.length} test images at ${imageSize}px, ${classes.length} classes; ` +
      `batch ${batchSize}, lr ${o.lr}, momentum ${o.momentum}, weight decay ${o.weightDecay}, scheduler ${o.scheduler}${(o.warmup as number) > 0 ? ` + ${o.warmup} warm-up` : ''}; ` +
      `${o.epochs} epochs`);
    if (model.precisionNote) say(model.precisionNote);

    // Ctrl-C / SIGTERM: finish the step, save `last`, print how to resume, exit 130. A second Ctrl-C quits at once.
    let signals = 0;
    const onSignal = (sig: string) => {
      signals++;
      if (signals > 1) {
        err(`\n${sig} again: quitting without saving`);
        process.exit(130);
      }
      err(`\n${sig}: finishing the current step and saving ${path.join(o.checkpointDir as string, 'last.safetensors')} (press Ctrl-C again to quit at once)`);
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
      err(`interrupted after ${trainer.epoch} epoch(s) + ${trainer.batchInEpoch} batch(es) (step ${trainer.step}); saved ${result.lastCheckpoint}`);
      err(`resume with: node dist/train.js --resume ${result.lastCheckpoint}${o.checkpointDir !== './checkpoint' ? ` --checkpoint-dir ${o.checkpointDir}` : ''}`);
      return EXIT.interrupted;
    }
    const val = result.validation ?? (await trainer.evaluate(testLoader));
    say('');
    say(`per-class accuracy and confusion matrix (test split, ${val.samples} images):`);
    say(formatConfusion(val, classes));
    say('');
    if (result.best) say(`best test top1 ${fmtPct(result.best.top1)} at epoch ${result.best.epoch}`);
    say(`trained ${result.epochs} epoch(s) in ${minutes} min; checkpoints in ${o.checkpointDir}, logs and plot in ${path.join(o.logDir as string, 'metrics.svg')} (TensorBoard: tensorboard --logdir ${o.logDir})`);
    say(`test loss ${val.loss.toFixed(4)}  test top5 ${fmtPct(val.top5)}`);
    say(`test top1 ${fmtPct(val.top1)}`);
    return 0;
  } catch (e) {
    if (e instanceof TrainingDivergedError) {
      err(`error: ${e.message}`);
      return 1;
    }
    err(`error: ${(e as Error).message}`);
    if (process.env.VGGNET_DEBUG) err((e as Error).stack ?? '');
    return 1;
  }
}

runAsMain(module, (argv) => main(argv));
