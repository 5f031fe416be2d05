// A training script for the distributed tests, run as one process or as N workers by `vggnet launch` (it is also
// what a user's own data-parallel script looks like): a small vgg11 on the STL10 files under <dataRoot>, deterministic
// transforms, SGD; the Trainer with DistributedDataParallel when the launcher's environment is there.
//   node dist_child.js <dataRoot> <outDir> '<json options>'
//     options: { batchSize, epochs, batchNorm, syncBn, lr, compression, dropout, seedPerRank, stopAtStep, resume,
//                imageSize, imageSizePerRank, saveEveryRank, gather }
//       imageSize: the images' side (default 32); imageSizePerRank: rank r's side instead (ranks with different maps);
//       gather: DDP's gatherClassifierRows (default true);
//       seedPerRank: each rank builds its model with another seed (DDP's start must make them rank 0's);
//       stopAtStep: rank 0 asks to stop in that step's onStep (every rank stops after the next step, which carries
//       the vote; checkpoints go to <outDir>/ck); resume: a checkpoint to continue.
// Writes <outDir>/rank<r>.json: { rank, world, losses (per step, the ranks' mean), batches (onStep's per step),
// epochs (metrics), buckets, interrupted, stats (the group's), parameters (their total count), linears ([in, out] of
// the classifier's layers) } and rank 0 also
// <outDir>/init.safetensors and weights.safetensors (before and after training; saveEveryRank: each rank its
// weights<r>.safetensors as well).
'use strict';
const fs = require('fs');
const path = require('path');
const lib = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));

const [dataRoot, outDir, json] = process.argv.slice(2);
const o = {
  batchSize: 8, epochs: 1, batchNorm: false, syncBn: false, lr: 0.05, compression: 'none', dropout: 0, seedPerRank: false,
  stopAtStep: 0, resume: null, imageSize: 32, imageSizePerRank: null, saveEveryRank: false, gather: true, ...JSON.parse(json || '{}'),
};
const T = lib.transforms;

(async () => {
  const pg = process.env.WORLD_SIZE ? await lib.initDistributed({ device: 'cpu' }) : null;
  const rank = pg ? pg.rank : 0;
  // vgg11 at 1/16 width (as the CLI's --width 0.0625), 32 hidden features.
  const cfg = lib.cfgs.A.map((v) => (v === 'M' ? 'M' : Math.max(4, Math.round(v / 16))));
  const seed = o.seedPerRank ? 1 + 17 * rank : 1;
  const model = new lib.VGGNet(cfg, { numClasses: 10, hiddenFeatures: 32, dropout: o.dropout, batchNorm: o.batchNorm, seed, device: 'cpu', precision: 'fp32' });
  const size = o.imageSizePerRank ? o.imageSizePerRank[rank] : o.imageSize;
  const tf = T.compose([T.evalTransform(size), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
  const train = new lib.STL10({ root: dataRoot, split: 'train', transform: tf });
  const test = new lib.STL10({ root: dataRoot, split: 'test', transform: tf });
  const ddp = pg ? new lib.DistributedDataParallel(model, { syncBatchNorm: o.syncBn, gradientCompression: o.compression, gatherClassifierRows: o.gather }) : null;
  fs.mkdirSync(outDir, { recursive: true });
  if (rank === 0) model.saveStateDict(path.join(outDir, 'init.safetensors')); // (after DDP's broadcast: rank 0's)
  const losses = [], batches = [];
  const trainer = new lib.Trainer(model, {
    optimizer: lib.sgd({ lr: o.lr, momentum: 0.9, weightDecay: 5e-4 }), output: null, distributed: ddp ?? undefined,
    checkpointDir: o.stopAtStep || o.resume ? path.join(outDir, 'ck') : undefined,
    onStep: (info) => {
      losses.push(info.loss);
      batches.push(info.batches);
      if (info.step === o.stopAtStep && rank === 0) trainer.stop();
    },
  });
  const r = await trainer.fit(new lib.DataLoader(train, { batchSize: o.batchSize, shuffle: true, seed: 3, workers: 1 }), {
    epochs: o.epochs, validation: new lib.DataLoader(test, { batchSize: 16, workers: 1 }), resume: o.resume ?? undefined,
  });
  fs.mkdirSync(outDir, { recursive: true });
  if (rank === 0) model.saveStateDict(path.join(outDir, 'weights.safetensors'));
  if (o.saveEveryRank) model.saveStateDict(path.join(outDir, `weights${rank}.safetensors`));
  fs.writeFileSync(path.join(outDir, `rank${rank}.json`), JSON.stringify({
    rank, world: pg ? pg.worldSize : 1, losses, batches, interrupted: r.interrupted, epochs: r.history, validation: r.validation && { loss: r.validation.loss, samples: r.validation.samples, confusion: r.validation.confusion },
    buckets: ddp ? ddp.buckets.length : 0, stats: pg ? pg.stats() : null,
    parameters: model.parameters().reduce((n, p) => n + p.param.shape.reduce((a, b) => a * b, 1), 0),
    linears: model.classifier.layers.filter((l) => l instanceof lib.Linear).map((l) => [l.inFeatures, l.outFeatures]),
  }));
  pg?.destroy();
})().catch((e) => {
  process.stderr.write(`error: ${e.message}\n`);
  process.exitCode = 1;
});
