// A training process for the crash-safety, memory and concurrency tests (run with node; uses the compiled dist/).
//   node train_child.js train <dataRoot> <checkpointDir> <hidden> <epochs>
//       trains a small VGG on the STL10 files under dataRoot, one batch per epoch and a checkpoint (last, best) after
//       every epoch; prints "step <n>" before each write and "saved <epoch>" after each `last` is written
//   node --expose-gc train_child.js steps <dataRoot> <steps>
//       trains a small VGG for <steps> steps (Trainer.fit over a 64-image set, batch 8); prints one JSON line with
//       RSS and native in-use bytes after warm-up (step 200) and at the end, each after a full GC
//   node --expose-gc train_child.js finaliser
//       makes 4 MiB tensors 3000 times (12 GiB in all) and drops them without dispose(); prints one JSON line
//   node --expose-gc train_child.js external
//       counts V8's full collections while 96 MiB tensors are made and freed, outside and inside a
//       deferringMemoryReports scope; prints one JSON line
//   node --expose-gc train_child.js loader-break <dataRoot>
//       iterates a DataLoader and breaks out after two batches, 200 times; prints one JSON line (RSS, native bytes in
//       use and the thread count after the first pass and at the end), then returns: the process must exit by itself
'use strict';
const path = require('path');
const lib = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));

const [mode, dataRoot, ...rest] = process.argv.slice(2);
// One compute thread: these models are tiny, and OpenMP barriers on a busy 2-core machine cost more than the work.
lib.setNumThreads(1);
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

// After full collections and a turn of the event loop (where Node-API runs the finalisers they queued).
async function sample() {
  for (let k = 0; k < 3; k++) {
    global.gc();
    await new Promise((r) => setImmediate(r));
  }
  return { rss: process.memoryUsage().rss, inUse: lib.memoryStats('cpu').inUse };
}

async function steps(total) {
  const model = new lib.VGGNet([8, 'M', 16, 'M', 16, 16, 'M', 16, 'M', 16, 'M'], {
    numClasses: 10, hiddenFeatures: 64, dropout: 0.5, batchNorm: true, seed: 1, device: 'cpu', precision: 'fp32',
  });
  const loader = new lib.DataLoader(dataset(), { batchSize: 8, shuffle: true, seed: 3, workers: 2 });
  const out = { steps: total, warm: null, end: null, samples: [] };
  const trainer = new lib.Trainer(model, {
    optimizer: lib.sgd({ lr: 0.01, momentum: 0.9, weightDecay: 5e-4 }), output: null,
    onStep: async (info) => {
      if (info.step % 100 === 0) out.samples.push((await sample()).rss);
      if (info.step === 200) out.warm = await sample();
      // At the same point of an epoch as the warm sample (SGD's deferred update of the first classifier layer lives
      // from an epoch's first step to its end: lib/optim/deferred.ts).
      if (info.step === total) out.end = await sample();
      if (info.step >= total) trainer.stop();
    },
  });
  await trainer.fit(loader, { epochs: Math.ceil(total / loader.length) + 1 });
  out.done = trainer.step;
  process.stdout.write(JSON.stringify(out) + '\n');
}

// Node-API runs finalisers from the event loop (node 20 defers them out of the GC), so the loop yields every 16
// tensors, as any real loop does (the Trainer yields every step); a loop that never yields holds them all.
async function finaliser() {
  const base = await sample();
  let peak = 0;
  for (let i = 0; i < 3000; i++) {
    if (i % 16 === 0) await new Promise((r) => setImmediate(r));
    const t = lib.Tensor.zeros([1 << 20]); // 4 MiB, never disposed
    if (t.shape[0] !== 1 << 20) throw new Error('bad tensor');
    const rss = process.memoryUsage().rss;
    peak = Math.max(peak, rss);
    if (rss > 3 * 2 ** 30) throw new Error(`RSS reached ${(rss / 2 ** 20).toFixed(0)} MiB after ${i + 1} undisposed tensors: the finaliser does not keep up`);
  }
  const end = await sample();
  process.stdout.write(JSON.stringify({ base, peak, end }) + '\n');
}

// The full collections V8 runs while 96 MiB tensors are made and freed 40 times, told to V8 as each comes and goes,
// then inside a deferringMemoryReports scope (told once, at its end: nothing, the churn nets out).
async function external() {
  const { PerformanceObserver, constants } = require('perf_hooks');
  const n = 24 * 2 ** 20; // floats: 96 MiB, past the 64 MiB step at which V8 collects
  await sample();
  let majors = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.detail && e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
  });
  obs.observe({ entryTypes: ['gc'] });
  const churn = async (deferred) => {
    await new Promise((r) => setTimeout(r, 20));
    majors = 0;
    const run = () => {
      for (let i = 0; i < 40; i++) lib.Tensor.empty([n]).dispose();
    };
    if (deferred) lib.deferringMemoryReports(run);
    else run();
    await new Promise((r) => setTimeout(r, 50)); // the observer hears of collections asynchronously
    return majors;
  };
  const plain = await churn(false);
  const deferred = await churn(true);
  obs.disconnect();
  process.stdout.write(JSON.stringify({ plain, deferred }) + '\n');
}

function threads() {
  return require('fs').readdirSync('/proc/self/task').length;
}

async function loaderBreak() {
  const loader = new lib.DataLoader(dataset(), { batchSize: 2, shuffle: true, seed: 1, workers: 2, prefetch: 3 });
  const pass = async (k) => {
    let n = 0;
    for await (const b of loader.iterate(k)) {
      b.images.dispose();
      b.labels.dispose();
      if (++n === 2) break; // abandoned with up to 3 batches still being assembled
    }
  };
  await pass(0);
  const warm = { ...(await sample()), threads: threads() };
  for (let k = 1; k < 200; k++) await pass(k);
  await new Promise((r) => setTimeout(r, 100)); // let the batches in flight finish and be freed
  const end = { ...(await sample()), threads: threads() };
  process.stdout.write(JSON.stringify({ warm, end }) + '\n');
}

(async () => {
  if (mode === 'train') await train(rest[0], Number(rest[1]), Number(rest[2]));
  else if (mode === 'loader-break') await loaderBreak();
  else if (mode === 'steps') await steps(Number(rest[0]));
  else if (mode === 'finaliser') await finaliser();
  else if (mode === 'external') await external();
  else throw new Error(`unknown mode ${mode}`);
})().catch((e) => {
  process.stderr.write(`error: ${e.message}\n`);
  process.exitCode = 1;
});
