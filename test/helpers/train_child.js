// A training process for the crash-safety, memory and concurrency tests (run with node; uses the compiled dist/).
//   node train_child.js train <dataRoot> <checkpointDir> <hidden> <epochs>
//       trains a small VGG on the STL10 files under dataRoot, one batch per epoch and a checkpoint (last, best) after
//       every epoch; prints "step <n>" before each write and "saved <epoch>" after each `last` is written
//   node train_child.js loader-break <dataRoot>
//       iterates a DataLoader, breaks out after two batches, repeats 50 times; prints "done <rss MB>"
'use strict';
const path = require('path');
const lib = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));

const [mode, dataRoot, ...rest] = process.argv.slice(2);
const T = lib.transforms;

function dataset() {
  return new lib.STL10({
    root: dataRoot, split: 'train',
    transform: T.compose([T.evalTransform(32), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]),
  });
}

async function train(dir, hidden, epochs) {
  const model = new lib.VGGNet([8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'], {
    numClasses: 10, hiddenFeatures: hidden, dropout: 0.5, seed: 1, device: 'cpu', precision: 'fp32',
  }, `crash-${hidden}`);
  const trainer = new lib.Trainer(model, {
    optimizer: lib.sgd({ lr: 0.01, momentum: 0.9 }), checkpointDir: dir, output: null,
    // One batch per epoch: "step" is printed right before the end-of-epoch checkpoint write starts.
    onStep: (info) => {
      process.stdout.write(`step ${info.step}\n`);
    },
    onCheckpoint: (file, kind) => {
      if (kind === 'last') process.stdout.write(`saved ${trainer.epoch}\n`);
    },
  });
  await trainer.fit(new lib.DataLoader(dataset(), { batchSize: 8, shuffle: true, seed: 3, workers: 1 }), { epochs });
}

async function loaderBreak() {
  const loader = new lib.DataLoader(dataset(), { batchSize: 2, shuffle: true, seed: 1, workers: 2, prefetch: 3 });
  for (let k = 0; k < 50; k++) {
    let n = 0;
    for await (const b of loader.iterate(k)) {
      b.images.dispose();
      b.labels.dispose();
      if (++n === 2) break;
    }
  }
  process.stdout.write(`done ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)}\n`);
}

(async () => {
  if (mode === 'train') await train(rest[0], Number(rest[1]), Number(rest[2]));
  else if (mode === 'loader-break') await loaderBreak();
  else throw new Error(`unknown mode ${mode}`);
})().catch((e) => {
  process.stderr.write(`error: ${e.message}\n`);
  process.exitCode = 1;
});
