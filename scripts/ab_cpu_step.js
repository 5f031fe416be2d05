#!/usr/bin/env node
// Interleaved A/B timing of CPU training steps under different environments, for a shared, noisy machine:
//   node scripts/ab_cpu_step.js vgg16:8:224 'VGGNET_CPU_WINOGRAD=0' '' [--rounds 3] [--steps 3] [--forward]
// Each round runs every variant once, in order, as its own process (the backend reads its switches once per process),
// each a median of --steps steps after two warm-up steps (scripts/profile_cpu_step.js). Prints every round's medians
// with the 1-minute load average before it, then each variant's median over the rounds and its ratio to the first,
// for wall time and for the process's CPU time (all threads; steadier when other processes share the cores, best
// with OMP_WAIT_POLICY=passive so that idle threads do not spin). VGGNET_DIST=path/to/dist in a variant times
// another build (e.g. the main branch's) against this one.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  if (i < 0) return def;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const flag = (name) => {
  const i = args.indexOf(name);
  if (i >= 0) args.splice(i, 1);
  return i >= 0;
};
const rounds = Number(opt('--rounds', 3));
const steps = Number(opt('--steps', 3));
const forward = flag('--forward');
const [spec, ...variants] = args;
if (!spec || variants.length < 2) {
  console.error("usage: ab_cpu_step.js model:batch:size 'ENV=1 ...' 'ENV=0 ...' [--rounds N] [--steps N] [--forward]");
  process.exit(2);
}
const envOf = (v) => Object.fromEntries(v.split(/\s+/).filter(Boolean).map((kv) => kv.split('=')));
const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
const script = path.join(__dirname, 'profile_cpu_step.js');
const times = variants.map(() => []);
const cpus = variants.map(() => []);
for (let r = 0; r < rounds; r++) {
  const row = [];
  variants.forEach((v, i) => {
    const l = load();
    const env = { ...process.env, ...envOf(v), ...(forward ? { VGGNET_PROFILE_FORWARD: '1' } : {}) };
    delete env.VGGNET_PROFILE;
    const res = spawnSync(process.execPath, [script, spec, String(steps)], { env, encoding: 'utf8' });
    const m = /median (?:train step|forward) ([\d.]+) ms.*cpu ([\d.]+) ms/.exec(res.stdout);
    if (!m) throw new Error(`variant '${v}' failed: ${res.stderr || res.stdout}`);
    times[i].push(Number(m[1]));
    cpus[i].push(Number(m[2]));
    row.push(`${(v || '(default)').padEnd(28)} ${m[1].padStart(9)} ms, cpu ${m[2].padStart(9)} ms (load ${l})`);
  });
  console.log(`round ${r + 1}:\n  ${row.join('\n  ')}`);
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = med(times[0]), baseCpu = med(cpus[0]);
console.log(`\n${spec} ${forward ? 'forward' : 'train step'}, median over ${rounds} rounds (speed-up over the first):`);
variants.forEach((v, i) => console.log(`  ${(v || '(default)').padEnd(28)} wall ${med(times[i]).toFixed(1).padStart(9)} ms ${(base / med(times[i])).toFixed(3)}x   cpu ${med(cpus[i]).toFixed(1).padStart(9)} ms ${(baseCpu / med(cpus[i])).toFixed(3)}x`));
