// Data-parallel training against one process, on the CPU over gloo (tiny vgg11 at 1/16 width, 32x32 images, 64
// training and 32 test images): N processes x batch b step exactly like 1 process x batch N*b, within float32
// tolerance — the loss at every step, the epoch metrics (summed over the ranks as counts), the weights after training;
// the first classifier layer's gradient all-reduced pooled (the bytes each step), at 32² and 128² input, and whole
// when the ranks' maps differ (their replicas still equal, bit for bit).
//   - vgg11 without BN and vgg11_bn with SyncBatchNorm, through a user's script under `vggnet launch`; ranks that
//     build their models from different seeds (rank 0's weights are broadcast at the start);
//   - a run stopped mid-epoch with dropout on and resumed equals the uninterrupted one; one process cannot continue
//     its checkpoint; another batch size per process goes on at the same sample of each rank's shard;
//   - the training CLI (--nproc-per-node 2 --sync-bn --dropout 0): only rank 0 prints and writes;
//   - Ctrl-C on the launcher: every worker stops after the same step, rank 0 saves once, and the resumed run ends
//     with the weights of the uninterrupted one;
//   - two machines, simulated by two network namespaces joined by a veth pair, one rank in each (root only).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { generateSampleStl10 } from '../../lib/data';
import { distributedEngines } from '../../lib/dist';
import { readCheckpointMeta } from '../../lib/train/checkpoint';
import { Proc, TRAIN_JS, VGGNET_JS, freePort, maxRelDiff, run, weights } from '../helpers/procs';

jest.setTimeout(600000);

const CHILD = path.join(__dirname, '..', 'helpers', 'dist_child.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-ddp-'));
const data = path.join(tmp, 'data');
const ENV = { OMP_NUM_THREADS: '1' }; // the single-process reference: one thread, as each worker gets here
const LIMIT = 240000;
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => generateSampleStl10(path.join(data, 'stl10_binary'), { train: 64, test: 32, unlabeled: 0 }));

const glooBuilt = distributedEngines().gloo !== null;
const describeGloo = glooBuilt ? describe : describe.skip;
if (!glooBuilt) console.log('skipping the multi-process training tests: this addon has no gloo engine (apt-get install libgloo-dev, rebuild)');

function ok(r: { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }, what: string): void {
  if (r.code !== 0) throw new Error(`${what} exited with ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
}
function close(a: number, b: number, rtol: number): boolean {
  return Math.abs(a - b) <= rtol * Math.max(1, Math.abs(a));
}

interface ChildOut {
  rank: number;
  world: number;
  losses: number[];
  batches: number[];
  interrupted: boolean;
  epochs: Record<string, number>[];
  validation: { loss: number; samples: number; confusion: number[][] };
  buckets: number;
  stats: { steps: number; bytes: number; gatheredBytes: number };
  parameters: number;
  linears: [number, number][];
}

async function library(name: string, cfg: Record<string, unknown>, nproc: number): Promise<{ out: ChildOut[]; dir: string }> {
  const dir = path.join(tmp, name);
  const args = nproc > 1
    ? [VGGNET_JS, 'launch', '--nproc-per-node', String(nproc), '--device', 'cpu', '--master-port', String(await freePort()), CHILD, data, dir, JSON.stringify(cfg)]
    : [CHILD, data, dir, JSON.stringify(cfg)];
  ok(await run(process.execPath, args, { env: ENV, timeoutMs: LIMIT }), name);
  const out = Array.from({ length: nproc }, (_, r) => JSON.parse(fs.readFileSync(path.join(dir, `rank${r}.json`), 'utf8')) as ChildOut);
  return { out, dir };
}

function expectBytes(r: ChildOut, side: number, gather: boolean, headAlike = true): void {
  const perStep = (n: number) => n / r.stats.steps;
  const linear = r.linears.reduce((n, [i, o]) => n + i * o + o, 0);
  if (!gather) {
    expect(perStep(r.stats.bytes)).toBe(4 * (r.parameters - 32 * 32 * 49 + 32 * 32 * side * side));
    expect(r.stats.gatheredBytes).toBe(0);
    return;
  }
  // headAlike false: the ranks' maps differ, so the first layer's gradient is all-reduced whole instead.
  const [i0, o0] = r.linears[0];
  const gathered = r.linears.slice(headAlike ? 0 : 1);
  expect(perStep(r.stats.bytes)).toBe(4 * (r.parameters - linear + (headAlike ? 0 : i0 * o0 + o0)));
  expect(perStep(r.stats.gatheredBytes)).toBe(4 * 2 * 8 * gathered.reduce((n, [i, o], k) => n + (k === 0 && headAlike ? 32 * side * side : i) + o, 0));
}

// One process with batch 16 against two with batch 8, the same start and the same data order.
async function compareLibrary(name: string, cfg: Record<string, unknown>): Promise<void> {
  const one = await library(`${name}-1`, { ...cfg, batchSize: 16 }, 1);
  const two = await library(`${name}-2`, { ...cfg, batchSize: 8 }, 2);
  const ref = one.out[0];
  expect(ref.losses.length).toBe((cfg.epochs as number) * 4); // epochs of 64/16 steps
  // What each step sends: the classifier's layers gather their 8 rows of input and output gradient per rank (the
  // first layer's input the s/32 × s/32 map, vgg11's five max pools on), the convolutions all-reduce their
  // gradients; or (gather: false) every gradient is all-reduced, the first classifier layer's 32 × 32·7·7 pooled to
  // that map.
  const side = ((cfg.imageSize as number | undefined) ?? 32) / 32;
  for (const r of two.out) {
    expectBytes(r, side, cfg.gather !== false);
    expect(r.world).toBe(2);
    expect(r.batches).toEqual(ref.batches); // an epoch is the rank's shard: 32/8 = 64/16 batches
    // Every rank logs the ranks' mean loss: the one process's loss, step by step.
    expect(r.losses.length).toBe(ref.losses.length);
    r.losses.forEach((l, i) => expect([i, l, close(l, ref.losses[i], 1e-5)]).toEqual([i, l, true]));
    // Epoch metrics summed over the ranks: the same counts, the same mean loss.
    r.epochs.forEach((e, k) => {
      const f = ref.epochs[k];
      expect([e['train.top1'], e['train.top5'], e['val.top1'], e['val.top5']]).toEqual([f['train.top1'], f['train.top5'], f['val.top1'], f['val.top5']]);
      expect(close(e['train.loss'], f['train.loss'], 1e-5) && close(e['val.loss'], f['val.loss'], 1e-5)).toBe(true);
    });
    // Evaluation split across the ranks without padding: every test image once.
    expect(r.validation.samples).toBe(32);
    expect(r.validation.confusion).toEqual(ref.validation.confusion);
  }
  const w1 = weights(path.join(one.dir, 'weights.safetensors'));
  const w2 = weights(path.join(two.dir, 'weights.safetensors'));
  const moved = maxRelDiff(weights(path.join(one.dir, 'init.safetensors')), w1);
  const diff = maxRelDiff(w1, w2);
  expect(moved.diff).toBeGreaterThan(1e-3); // training changed the weights far beyond the tolerance below
  expect([diff.name, diff.diff < 2e-5]).toEqual([diff.name, true]);
}

describeGloo('N processes x batch b = 1 process x batch N*b', () => {
  test('vgg11 without batch norm (a script under vggnet launch)', () => compareLibrary('plain', { epochs: 2 }));
  test('vgg11_bn with SyncBatchNorm', () => compareLibrary('syncbn', { epochs: 2, batchNorm: true, syncBn: true }));
  // Each rank builds its model from another seed: DDP's broadcast makes every replica rank 0's before the first step.
  test('ranks that start from different weights train as one (rank 0\'s weights broadcast)', () => compareLibrary('bcast', { epochs: 1, seedPerRank: true }));
  // 128² input: a 4×4 map, which training folds into the first classifier layer while SGD defers that layer's update.
  test('vgg11 at 128² (a 4×4 map: the pool folded, SGD deferred)', () => compareLibrary('map4', { epochs: 1, imageSize: 128 }));
  test('the classifier\'s gradients all-reduced (gatherClassifierRows: false), the first layer\'s pooled, at 32² and 128²', async () => {
    await compareLibrary('allreduce', { epochs: 1, gather: false });
    await compareLibrary('allreduce4', { epochs: 1, gather: false, imageSize: 128 });
  });
  // The first classifier layer's input (pooled gradient) has another size on each rank: the ranks agree to
  // all-reduce that layer's gradient whole (and gather the other layers' rows, or all-reduce theirs too).
  test('ranks whose maps differ (32² and 64² input) reduce the first classifier layer\'s gradient whole and stay replicas, bit for bit', async () => {
    for (const gather of [true, false]) {
      const r = await library(`mixed-${gather}`, { epochs: 1, imageSizePerRank: [32, 64], saveEveryRank: true, gather }, 2);
      for (const x of r.out) {
        if (gather) expectBytes(x, 0, true, false);
        else expect(x.stats.bytes / x.stats.steps).toBe(4 * x.parameters);
        expect(x.losses).toEqual(r.out[0].losses); // the ranks' mean, on each
      }
      const moved = maxRelDiff(weights(path.join(r.dir, 'init.safetensors')), weights(path.join(r.dir, 'weights0.safetensors')));
      expect(moved.diff).toBeGreaterThan(1e-3);
      const d = maxRelDiff(weights(path.join(r.dir, 'weights0.safetensors')), weights(path.join(r.dir, 'weights1.safetensors')));
      expect([d.name, d.diff]).toEqual([d.name, 0]);
    }
  });
});

// A run stopped mid-epoch and resumed, with dropout on (each rank's masks from its own seed, derived from rank 0's):
// the resumed run is the uninterrupted one; the checkpoint refuses another process count; another batch size per
// process goes on at the same sample of each rank's shard.
describeGloo('resuming a data-parallel run (library, dropout 0.5)', () => {
  const cfg = { epochs: 2, dropout: 0.5, batchSize: 8 };
  const ck = () => path.join(tmp, 'drop-stop', 'ck', 'last.safetensors');
  let full: { out: ChildOut[]; dir: string };
  beforeAll(async () => {
    full = await library('drop-full', cfg, 2);
    // Asked in step 5's onStep, the stop vote travels with step 6's collectives: every rank stops after step 6.
    const stopped = await library('drop-stop', { ...cfg, stopAtStep: 5 }, 2);
    expect(stopped.out.map((r) => [r.interrupted, r.losses.length])).toEqual([[true, 6], [true, 6]]);
  });

  test('the checkpoint is mid-epoch, of 2 processes; the resumed run ends with the uninterrupted one\'s weights', async () => {
    expect(readCheckpointMeta(ck())).toMatchObject({ epoch: 1, batchInEpoch: 2, rng: { loader: { worldSize: 2, sample: 16 } } });
    // Dropout really draws masks: the run differs from one without it.
    const nodrop = await library('drop-none', { ...cfg, dropout: 0 }, 2);
    expect(nodrop.out[0].losses).not.toEqual(full.out[0].losses);
    const resumed = await library('drop-res', { ...cfg, resume: ck() }, 2);
    for (const r of resumed.out) {
      r.losses.forEach((l, i) => expect([i, l, close(l, full.out[0].losses[6 + i], 1e-5)]).toEqual([i, l, true]));
      expect(r.losses.length).toBe(2);
    }
    const d = maxRelDiff(weights(path.join(full.dir, 'weights.safetensors')), weights(path.join(resumed.dir, 'weights.safetensors')));
    expect([d.name, d.diff < 2e-5]).toEqual([d.name, true]);
  });

  test('one process cannot continue it mid-epoch: a clear error naming both counts', async () => {
    const r = await run(process.execPath, [CHILD, data, path.join(tmp, 'drop-one'), JSON.stringify({ ...cfg, batchSize: 16, resume: ck() })],
      { env: ENV, timeoutMs: LIMIT });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/taken mid-epoch \(batch 2\) by 2 process\(es\), and this run has 1; resume it with 2/);
  });

  test('batch 4 per process goes on at sample 16 of each rank\'s 32: batch 4 of 8, four steps to the epoch\'s end', async () => {
    const r = await library('drop-b4', { ...cfg, batchSize: 4, resume: ck() }, 2);
    for (const x of r.out) expect([x.losses.length, x.batches]).toEqual([4, [8, 8, 8, 8]]);
  });
});

const CLI = ['--dataset', 'stl10', '--data', data, '--model', 'vgg11', '--batch-norm', '--width', '0.0625', '--hidden-features', '32',
  '--image-size', '32', '--epochs', '3', '--dropout', '0', '--lr', '0.05', '--scheduler', 'none', '--quiet', '--seed', '1', '--workers', '1'];
const dirs = (name: string) => ['--checkpoint-dir', path.join(tmp, name, 'ck'), '--log-dir', path.join(tmp, name, 'logs')];
const metrics = (name: string) => fs.readFileSync(path.join(tmp, name, 'logs', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const last = (name: string) => weights(path.join(tmp, name, 'ck', 'last.safetensors'));

function expectSameRun(name: string, ref: string): void {
  const a = metrics(ref), b = metrics(name);
  expect(b.length).toBe(a.length);
  b.forEach((e, k) => {
    expect([e['train.top1'], e['val.top1'], e['val.top5']]).toEqual([a[k]['train.top1'], a[k]['val.top1'], a[k]['val.top5']]);
    expect(close(e['train.loss'], a[k]['train.loss'], 1e-5) && close(e['val.loss'], a[k]['val.loss'], 1e-5)).toBe(true);
  });
  const d = maxRelDiff(last(ref), last(name)); // weights and momentum buffers
  expect([d.name, d.diff < 2e-5]).toEqual([d.name, true]);
}

describeGloo('the training CLI', () => {
  beforeAll(async () => {
    ok(await run(process.execPath, [TRAIN_JS, ...CLI, '--batch-size', '16', ...dirs('cli-1')], { env: ENV, timeoutMs: LIMIT }), 'one process');
  });

  test('--nproc-per-node 2 --sync-bn: the one-process run; only rank 0 prints and writes', async () => {
    const r = await run(process.execPath, [TRAIN_JS, ...CLI, '--batch-size', '8', '--nproc-per-node', '2', '--sync-bn',
      '--master-port', String(await freePort()), ...dirs('cli-2')], { env: ENV, timeoutMs: LIMIT });
    ok(r, 'two processes');
    expect(r.stderr).toMatch(/launcher: 2 worker\(s\) on this machine \(ranks 0-1 of 2\), rendezvous at 127\.0\.0\.1:\d+, 1 thread\(s\) each, backend auto/);
    expect(r.stdout).toMatch(/distributed: 2 processes over gloo [\d.]+ \(rendezvous 127\.0\.0\.1:\d+\), batch 8 each = 16 per step; gradients in 1 bucket\(s\) \([\d.]+ MB\), the classifier's rows gathered instead of its gradients;/);
    expect(r.stdout).toMatch(/batch norm synchronised \(SyncBatchNorm\)/);
    for (const k of [1, 2, 3]) expect(r.stdout.split(`epoch ${k}/3 `).length - 1).toBe(1);
    expect(fs.readdirSync(path.join(tmp, 'cli-2', 'ck')).sort()).toEqual(['best.safetensors', 'last.safetensors']);
    expect(readCheckpointMeta(path.join(tmp, 'cli-2', 'ck', 'last.safetensors')).rng.loader).toMatchObject({ worldSize: 2, epoch: 3 });
    expectSameRun('cli-2', 'cli-1');
  });

  test('Ctrl-C on the launcher: every worker stops after the same step, rank 0 saves once; the resumed run is the uninterrupted one', async () => {
    const p = new Proc(process.execPath, [TRAIN_JS, ...CLI, '--batch-size', '8', '--nproc-per-node', '2', '--sync-bn',
      '--master-port', String(await freePort()), ...dirs('cli-int')], { env: ENV, timeoutMs: LIMIT });
    await p.until(/epoch 1\/3 /);
    p.child.kill('SIGINT');
    const r = await p.wait();
    expect([r.code, r.stderr]).toEqual([130, expect.stringMatching(/launcher: SIGINT: every worker finishes the step they agree on, rank 0 saves/)]);
    expect(r.stderr.match(/interrupted after \d+ epoch\(s\) \+ \d+ batch\(es\)/g)).toHaveLength(1);
    expect(r.stderr.match(/finishing the step every rank agrees on/g)).toHaveLength(1); // rank 0 only
    // The command repeats the run's own flags (not the launcher's port) with the launcher's worker count.
    const resumeLine = /resume with: (.*)/.exec(r.stderr)?.[1] ?? '';
    expect(resumeLine).toMatch(/^node dist\/train\.js --nproc-per-node 2 .*--sync-bn .*--resume \S*last\.safetensors$/);
    expect(resumeLine).not.toMatch(/--master-port/);
    const meta = readCheckpointMeta(path.join(tmp, 'cli-int', 'ck', 'last.safetensors'));
    expect(meta.epoch * 4 + meta.batchInEpoch).toBeLessThan(12);
    const again = await run(process.execPath, [TRAIN_JS, '--nproc-per-node', '2', '--resume', 'auto', '--master-port', String(await freePort()),
      ...dirs('cli-int')], { env: ENV, timeoutMs: LIMIT });
    ok(again, 'the resumed run');
    expect(again.stdout).toMatch(/resuming .*last\.safetensors/);
    const d = maxRelDiff(last('cli-2'), last('cli-int'));
    expect([d.name, d.diff]).toEqual([d.name, 0]); // same world, same order of sums: the same bits
  });

  // Two machines: network namespaces joined by a veth pair, rank 0 at 10.231.<k>.1, rank 1 at 10.231.<k>.2.
  const k = process.pid % 200;
  const ns = [`vggA${process.pid}`, `vggB${process.pid}`];
  const veth = [`vga${process.pid % 100000}`, `vgb${process.pid % 100000}`];
  const sh = (cmd: string) => spawnSync('bash', ['-c', cmd], { encoding: 'utf8' });
  const canNetns = process.getuid?.() === 0 && sh('command -v ip').status === 0 && sh(`ip netns add ${ns[0]} && ip netns del ${ns[0]}`).status === 0;
  if (!canNetns) console.log('skipping the two-machine test: needs root and ip netns (iproute2), which are not available here');
  (canNetns ? test : test.skip)('two machines (network namespaces joined by veth), one rank each: the one-process run', async () => {
    const setup = [
      `ip netns add ${ns[0]}`, `ip netns add ${ns[1]}`, `ip link add ${veth[0]} type veth peer name ${veth[1]}`,
      `ip link set ${veth[0]} netns ${ns[0]}`, `ip link set ${veth[1]} netns ${ns[1]}`,
      `ip -n ${ns[0]} addr add 10.231.${k}.1/24 dev ${veth[0]}`, `ip -n ${ns[1]} addr add 10.231.${k}.2/24 dev ${veth[1]}`,
      ...ns.flatMap((n, i) => [`ip -n ${n} link set lo up`, `ip -n ${n} link set ${veth[i]} up`]),
    ];
    try {
      const s = sh(setup.join(' && '));
      if (s.status !== 0) throw new Error(`network namespaces: ${s.stderr}`);
      const port = String(await freePort());
      const node = (rank: number) => new Proc('ip', ['netns', 'exec', ns[rank], process.execPath, TRAIN_JS, ...CLI, '--batch-size', '8', '--sync-bn',
        '--nproc-per-node', '1', '--nnodes', '2', '--node-rank', String(rank), '--master-addr', `10.231.${k}.1`, '--master-port', port,
        '--dist-timeout', '120', ...dirs(`netns-${rank}`)], { env: ENV, timeoutMs: LIMIT });
      const machines = [node(0), node(1)];
      const [r0, r1] = await Promise.all(machines.map((m) => m.wait()));
      ok(r0, 'machine 0');
      ok(r1, 'machine 1');
      expect(r0.stderr).toMatch(new RegExp(`launcher: 1 worker\\(s\\) on this machine \\(rank 0 of 2\\), rendezvous at 10\\.231\\.${k}\\.1:${port}`));
      expect(r1.stderr).toMatch(/launcher: 1 worker\(s\) on this machine \(rank 1 of 2\)/);
      expect(fs.existsSync(path.join(tmp, 'netns-1', 'ck'))).toBe(false); // rank 1 writes nothing
      expectSameRun('netns-0', 'cli-1');
    } finally {
      sh(`ip netns del ${ns[0]}; ip netns del ${ns[1]}`);
    }
  });
});
