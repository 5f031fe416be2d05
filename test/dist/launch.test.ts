// The launcher without training: torchrun's environment for each worker (ranks across machines, the cores split on
// the CPU), the launcher's own flags kept from the workers' command line, a failing worker's exit code and rank, and
// clear errors for impossible requests.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { launch, parseDevices, workerArgs, main as launchMain } from '../../lib/cli/launch';
import { main as trainMain } from '../../lib/cli/train';
import { cudaAvailable } from '../../lib/backend';
import { VGGNET_JS, run } from '../helpers/procs';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-launch-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } }, out: () => out.join(''), err: () => err.join('') };
}

test('each worker gets torchrun\'s environment; a second machine\'s ranks follow the first\'s', async () => {
  const script = path.join(tmp, 'env.js');
  fs.writeFileSync(script, `const k = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'OMP_NUM_THREADS', 'VGGNET_DIST_TIMEOUT'];
require('fs').writeFileSync(require('path').join(process.argv[2], 'env' + process.env.RANK + '.json'), JSON.stringify(Object.fromEntries(k.map((n) => [n, process.env[n]]))));
`);
  const r = await run(process.execPath, [VGGNET_JS, 'launch', '--nproc-per-node', '2', '--nnodes', '3', '--node-rank', '1', '--master-addr', '10.1.2.3',
    '--master-port', '4567', '--dist-timeout', '9', '--device', 'cpu', script, tmp], { env: { OMP_NUM_THREADS: '' }, timeoutMs: 60000 });
  expect([r.code, r.stderr]).toEqual([0, expect.stringMatching(/launcher: 2 worker\(s\) on this machine \(ranks 2-3 of 6\), rendezvous at 10\.1\.2\.3:4567/)]);
  const threads = String(Math.max(1, Math.floor((os.availableParallelism?.() ?? os.cpus().length) / 2)));
  for (const [rank, local] of [[2, 0], [3, 1]]) {
    expect(JSON.parse(fs.readFileSync(path.join(tmp, `env${rank}.json`), 'utf8'))).toEqual({
      RANK: String(rank), WORLD_SIZE: '6', LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '10.1.2.3', MASTER_PORT: '4567',
      OMP_NUM_THREADS: threads, VGGNET_DIST_TIMEOUT: '9',
    });
  }
});

test('a worker that fails ends the job: the launcher exits with its code and names its rank', async () => {
  const script = path.join(tmp, 'fail.js');
  fs.writeFileSync(script, `if (process.env.RANK === '1') { process.stderr.write('boom\\n'); process.exit(3); } setTimeout(() => {}, 60000);`);
  const r = await run(process.execPath, [VGGNET_JS, 'launch', '--nproc-per-node', '2', '--device', 'cpu', script], { timeoutMs: 60000 });
  expect(r.code).toBe(3);
  expect(r.stderr).toMatch(/\[rank 1\] boom/);
  expect(r.stderr).toMatch(/launcher: rank 1 \(pid \d+\) exited with code 3; the job is over \(the other 1 worker\(s\) on this machine were stopped\)/);
  expect(r.ms).toBeLessThan(30000); // rank 0 was stopped, not waited for
});

test("the launcher's own flags stay out of the workers' command line", () => {
  expect(workerArgs(['--nproc-per-node', '2', '--lr', '0.1', '--master-port=1234', '--devices', '0,1', '--nnodes', '1', '--node-rank=0',
    '--master-addr', 'h', '--sync-bn', '--dist-timeout', '9'])).toEqual(['--lr', '0.1', '--sync-bn', '--dist-timeout', '9']);
  expect(parseDevices('0, 1')).toEqual([0, 1]);
  expect(() => parseDevices('0,x')).toThrow(/--devices must be GPU indices separated by commas \(e\.g\. 0,1\), got '0,x'/);
});

test('impossible requests are clear errors', async () => {
  const base = { script: 'x.js', args: [] };
  await expect(launch({ ...base, nprocPerNode: 0 })).rejects.toThrow(/--nproc-per-node must be an integer >= 1/);
  await expect(launch({ ...base, nprocPerNode: 1, nnodes: 2, nodeRank: 2 })).rejects.toThrow(/--node-rank must be in \[0, 2\) \(--nnodes 2\), got 2/);
  await expect(launch({ ...base, nprocPerNode: 2, devices: [0, 1], device: 'cpu' })).rejects.toThrow(/--devices picks GPUs, but the workers run on the CPU/);
  if (!cudaAvailable()) await expect(launch({ ...base, nprocPerNode: 1, device: 'cuda' })).rejects.toThrow(/--device cuda: /);
  const saved = process.env.WORLD_SIZE;
  process.env.WORLD_SIZE = '2';
  try {
    await expect(launch({ ...base, nprocPerNode: 1 })).rejects.toThrow(/already a worker of a distributed job/);
  } finally {
    if (saved === undefined) delete process.env.WORLD_SIZE;
    else process.env.WORLD_SIZE = saved;
  }
  const c = io();
  expect(await launchMain(['script.js'], c.io)).toBe(2);
  expect(c.err()).toMatch(/--nproc-per-node is required/);
});

test('train --help lists the distributed flags', async () => {
  const c = io();
  expect(await trainMain(['--help'], c.io)).toBe(0);
  for (const f of ['--nproc-per-node', '--nnodes', '--node-rank', '--master-addr', '--master-port', '--devices', '--dist-backend', '--dist-timeout',
    '--sync-bn', '--grad-compression', '--dropout']) {
    expect(c.out()).toContain(f);
  }
  const d = io();
  expect(await trainMain(['--dropout', '1'], d.io)).toBe(2);
  expect(d.err()).toMatch(/--dropout must be a number >= 0 and < 1, got '1'/);
});
