// `npm run bench -- dist`: data-parallel training on the CPU over gloo against one process on the same cores — one
// process with 2 threads against 2 processes (`vggnet launch`'s way) with 1 thread each, the same model and the same
// global batch — with images/s, the scaling efficiency, and the all-reduce time per step (and how much of it backward
// did not hide), both with the classifier's rows gathered (DDP's default on the CPU) and with every gradient
// all-reduced (gatherClassifierRows: false, as PyTorch's DDP). The workers are this file run with --worker (one
// process, or N under the launcher).
import { spawnSync } from 'child_process';
import * as net from 'net';
import * as path from 'path';
import { setNumThreads } from '../backend';
import { cfgs, VGGNet } from '../models/vgg';
import { sgd } from '../optim/sgd';
import { Rng } from '../random';
import { Tensor } from '../tensor';
import { trainStep } from '../train/train_step';
import { initDistributed } from '../dist/process_group';
import { DistributedDataParallel } from '../dist/ddp';

interface Case {
  name: string;
  size: number;
  hidden: number;
  /** The global batch (each of N processes takes batch / N). */
  batch: number;
  steps: number;
}
const CASES: Case[] = [
  { name: 'vgg11', size: 32, hidden: 4096, batch: 16, steps: 6 },
  { name: 'vgg11 (512 hidden)', size: 64, hidden: 512, batch: 16, steps: 6 },
  { name: 'vgg11', size: 224, hidden: 4096, batch: 4, steps: 3 },
];

interface WorkerResult {
  world: number;
  engine: string;
  stepMs: number;
  imgPerS: number;
  commMs?: number;
  exposedMs?: number;
  buckets?: number;
  bucketMB?: number;
  gatheredMB?: number;
}

/** One worker: warm-up, then `steps` timed training steps on random data; rank 0 prints its result as JSON. */
async function worker(c: Case): Promise<void> {
  const pg = process.env.WORLD_SIZE ? await initDistributed({ device: 'cpu' }) : null;
  if (!pg) setNumThreads(Number(process.env.OMP_NUM_THREADS) || 2);
  const world = pg?.worldSize ?? 1;
  const local = c.batch / world;
  const model = new VGGNet(cfgs.A, { numClasses: 10, hiddenFeatures: c.hidden, dropout: 0, seed: 1, device: 'cpu', precision: 'fp32' });
  const gather = process.env.VGGNET_BENCH_GATHER !== '0';
  const ddp = pg ? new DistributedDataParallel(model, { processGroup: pg, gatherClassifierRows: gather }) : null;
  const opt = sgd({ lr: 0.01, momentum: 0.9 });
  const rng = new Rng(7 + (pg?.rank ?? 0));
  const x = Tensor.from(rng.fillNormal(new Float32Array(local * 3 * c.size * c.size), 0, 1), [local, 3, c.size, c.size]);
  const y = Tensor.from(Int32Array.from({ length: local }, () => rng.int(10)), [local]);
  const step = () => (ddp ? ddp.step(opt, x, y) : trainStep(model, opt, x, y));
  for (let i = 0; i < 2; i++) step();
  const s0 = pg?.stats();
  const t0 = performance.now();
  for (let i = 0; i < c.steps; i++) step();
  const ms = (performance.now() - t0) / c.steps;
  const r: WorkerResult = { world, engine: pg ? `${pg.engine} ${pg.engineVersion}` : '-', stepMs: ms, imgPerS: (1000 * c.batch) / ms };
  if (pg && s0 && ddp) {
    const s1 = pg.stats();
    const n = s1.timedSteps - s0.timedSteps || 1;
    r.commMs = (s1.commMs - s0.commMs) / n;
    r.exposedMs = (s1.exposedMs - s0.exposedMs) / n;
    r.buckets = ddp.buckets.length;
    r.bucketMB = (s1.bytes - s0.bytes) / n / 1e6; // as reduced: the first classifier layer's gradient pooled on small maps
    r.gatheredMB = (s1.gatheredBytes - s0.gatheredBytes) / n / 1e6;
  }
  if ((pg?.rank ?? 0) === 0) process.stdout.write(`${JSON.stringify(r)}\n`);
  pg?.destroy();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Runs the case as one process with 2 threads, or as `nproc` workers of 1 thread under `vggnet launch`. */
async function runCase(c: Case, nproc: number, gather = true): Promise<WorkerResult> {
  const script = path.join(__dirname, 'dist.js');
  const args = ['--worker', JSON.stringify(c)];
  const cmd = nproc === 1
    ? [script, ...args]
    : [path.join(__dirname, '..', 'cli', 'vggnet.js'), 'launch', '--nproc-per-node', String(nproc), '--device', 'cpu',
      '--master-port', String(await freePort()), script, ...args];
  const r = spawnSync(process.execPath, cmd, {
    env: { ...process.env, OMP_NUM_THREADS: nproc === 1 ? '2' : '1', VGGNET_BENCH_GATHER: gather ? '1' : '0' }, encoding: 'utf8', timeout: 1800000,
  });
  if (r.status !== 0) throw new Error(`bench dist: the ${nproc}-process run failed (${r.status ?? r.signal}): ${r.stderr}`);
  const json = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!json) throw new Error(`bench dist: no result from the ${nproc}-process run: ${r.stdout}`);
  return JSON.parse(json) as WorkerResult;
}

export async function benchDist(): Promise<void> {
  console.log('distributed data-parallel training on the CPU: 1 process x 2 threads against 2 processes x 1 thread each');
  console.log('(gloo over loopback TCP, `vggnet launch`), the same model and the same global batch, random data:');
  for (const c of CASES) {
    const one = await runCase(c, 1);
    const two = await runCase(c, 2);
    const reduced = await runCase(c, 2, false);
    const row = (what: string, r: WorkerResult) => `    ${what.padEnd(34)}${r.imgPerS.toFixed(1).padStart(8)} img/s${r.stepMs.toFixed(0).padStart(8)} ms/step`;
    const comm = (r: WorkerResult) => `   all-reduce ${r.commMs!.toFixed(1)} ms/step (${r.bucketMB!.toFixed(1)} MB a step` +
      `${r.gatheredMB ? `, ${r.gatheredMB.toFixed(2)} MB gathered` : ''}), ${r.exposedMs!.toFixed(1)} ms of it after backward`;
    console.log(`  ${c.name} ${c.size}x${c.size}, global batch ${c.batch} (${two.engine}, ${two.buckets} buckets)`);
    console.log(row('1 process x 2 threads', one));
    console.log(`${row('2 processes x 1 thread', two)}${comm(two)}`);
    console.log(`${row('  every gradient all-reduced', reduced)}${comm(reduced)}`);
    console.log(`    scaling efficiency ${(100 * two.imgPerS / one.imgPerS).toFixed(0)}% (2 x 1 thread against 1 x 2 threads; ` +
      `${(100 * reduced.imgPerS / one.imgPerS).toFixed(0)}% all-reducing every gradient)`);
  }
}

if (require.main === module && process.argv[2] === '--worker') {
  worker(JSON.parse(process.argv[3]) as Case).catch((e) => {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  });
}
