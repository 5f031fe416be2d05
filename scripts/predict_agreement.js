#!/usr/bin/env node
// Top-1 agreement of predict in bf16 with predict in fp32, and each one's accuracy, over an ImageFolder split:
// `node scripts/predict_agreement.js CHECKPOINT FOLDER` (FOLDER holds one sub-folder of images per class, named as
// the checkpoint's classes, e.g. ../shared/data/cifar10-mini/test). Prints agreement, accuracies, the largest
// probability difference, and each pass's wall time. Uses dist/ (run `npx tsc -p .` first).
'use strict';
const fs = require('fs');
const path = require('path');
const { predictFiles } = require(path.resolve(__dirname, '..', 'dist', 'cli', 'predict'));
const { ops } = require(path.resolve(__dirname, '..', 'dist'));

async function main() {
  const [checkpoint, folder] = process.argv.slice(2);
  if (!checkpoint || !folder) {
    console.error('usage: node scripts/predict_agreement.js CHECKPOINT FOLDER');
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
  const run = async (precision) => {
    const t = performance.now();
    const r = await predictFiles(checkpoint, files, { top: 1000, precision });
    return { r, ms: performance.now() - t };
  };
  const fp32 = await run('fp32');
  const bf16 = await run('bf16');
  let agree = 0, right32 = 0, right16 = 0, maxDiff = 0;
  for (let i = 0; i < files.length; i++) {
    const a = fp32.r[i].top, b = bf16.r[i].top;
    if (a[0].index === b[0].index) agree++;
    if (a[0].class === labels[i]) right32++;
    if (b[0].class === labels[i]) right16++;
    const pb = new Map(b.map((t) => [t.index, t.probability]));
    for (const t of a) maxDiff = Math.max(maxDiff, Math.abs(t.probability - (pb.get(t.index) ?? 0)));
  }
  const n = files.length;
  const info = ops.cpuIsaInfo();
  console.log(`${n} images of ${folder}; CPU ISA ${info.isa}, bf16 ${info.bf16 ? 'on oneDNN bf16 kernels' : 'emulated in float32'}`);
  console.log(`top-1 agreement bf16 vs fp32: ${agree}/${n} (${((100 * agree) / n).toFixed(2)} %)`);
  console.log(`accuracy fp32 ${((100 * right32) / n).toFixed(2)} %, bf16 ${((100 * right16) / n).toFixed(2)} %; largest probability difference ${maxDiff.toFixed(4)}`);
  console.log(`wall time (decode, transforms, forward) fp32 ${(fp32.ms / 1000).toFixed(2)} s, bf16 ${(bf16.ms / 1000).toFixed(2)} s`);
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
