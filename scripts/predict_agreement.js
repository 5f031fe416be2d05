#!/usr/bin/env node
// Top-1 agreement of predict in bf16 or int8 with predict in fp32, and each one's accuracy, over an ImageFolder
// split: `node scripts/predict_agreement.js CHECKPOINT FOLDER [--precision bf16|int8] [--calibrate DIR]
// [--calibration-images N]` (FOLDER holds one sub-folder of images per class, named as the checkpoint's classes, e.g.
// ../shared/data/cifar10-mini/test; int8 calibrates on N images (default 256) of DIR, by default the checkpoint's
// training data, as predict does). Prints
// agreement, accuracies, the largest probability difference, and each pass's wall time (int8's includes its
// calibration, also timed alone). Uses dist/ (run `npx tsc -p .` first).
'use strict';
const fs = require('fs');
const path = require('path');
const { predictFiles } = require(path.resolve(__dirname, '..', 'dist', 'cli', 'predict'));
const { ops } = require(path.resolve(__dirname, '..', 'dist'));

function options(argv) {
  const o = { positional: [], precision: 'bf16', calibrate: undefined, count: 256 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--precision') o.precision = argv[++i];
    else if (argv[i] === '--calibrate') o.calibrate = argv[++i];
    else if (argv[i] === '--calibration-images') o.count = Number(argv[++i]);
    else o.positional.push(argv[i]);
  }
  return o;
}

async function main() {
  const o = options(process.argv.slice(2));
  const [checkpoint, folder] = o.positional;
  if (!checkpoint || !folder || !['bf16', 'int8'].includes(o.precision)) {
    console.error('usage: node scripts/predict_agreement.js CHECKPOINT FOLDER [--precision bf16|int8] [--calibrate DIR] [--calibration-images N]');
    process.exit(2);
  }
  const files = [];
  const labels = [];
  for (const cls of fs.readdirSync(folder).sort()) {
    const dir = path.join(folder, cls);
    if (!fs.statSync(dir).isDirectory()) continue;
    for (const f of fs.readdirSync(dir).sort()) {
      files.push(path.join(dir, f));
      labels.push(cls);
    }
  }
  const run = async (precision, extra = {}) => {
    const t = performance.now();
    const r = await predictFiles(checkpoint, files, { top: 1000, precision, ...extra });
    return { r, ms: performance.now() - t };
  };
  const fp32 = await run('fp32');
  let calibrated = '';
  const int8 = { calibrate: o.calibrate, calibrationImages: o.count, note: (l) => { calibrated = /scales (calibrated on .*)$/.exec(l)?.[1] ?? calibrated; } };
  const other = await run(o.precision, o.precision === 'int8' ? int8 : {});
  let calMs;
  if (o.precision === 'int8') {
    const t = performance.now();
    await predictFiles(checkpoint, files.slice(0, 1), { precision: 'int8', ...int8 });
    calMs = performance.now() - t;
  }
  let agree = 0, right32 = 0, rightO = 0, maxDiff = 0;
  for (let i = 0; i < files.length; i++) {
    const a = fp32.r[i].top, b = other.r[i].top;
    if (a[0].index === b[0].index) agree++;
    if (a[0].class === labels[i]) right32++;
    if (b[0].class === labels[i]) rightO++;
    const pb = new Map(b.map((t) => [t.index, t.probability]));
    for (const t of a) maxDiff = Math.max(maxDiff, Math.abs(t.probability - (pb.get(t.index) ?? 0)));
  }
  const n = files.length;
  const p = o.precision;
  const info = ops.cpuIsaInfo();
  const how = p === 'bf16' ? (info.bf16 ? 'bf16 on oneDNN bf16 kernels' : 'bf16 emulated in float32')
    : `int8 weights in ±${ops.int8WeightMax()}, ${calibrated}`;
  console.log(`${n} images of ${folder}; CPU ISA ${info.isa}, ${how}`);
  console.log(`top-1 agreement ${p} vs fp32: ${agree}/${n} (${((100 * agree) / n).toFixed(2)} %)`);
  console.log(`accuracy fp32 ${((100 * right32) / n).toFixed(2)} %, ${p} ${((100 * rightO) / n).toFixed(2)} %; largest probability difference ${maxDiff.toFixed(4)}`);
  console.log(`wall time (decode, transforms, forward) fp32 ${(fp32.ms / 1000).toFixed(2)} s, ${p} ${(other.ms / 1000).toFixed(2)} s${calMs ? ` (of which calibration and setup ~${(calMs / 1000).toFixed(2)} s: one image predicted after them)` : ''}`);
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
