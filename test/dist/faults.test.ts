// A distributed job never hangs silently: a worker killed with kill -9 ends the job (under the launcher, and between
// bare workers through the rendezvous store), a stopped (hung) worker ends it after the timeout, an unreachable master
// is an error after the timeout — each exits non-zero with a message naming the rank or the address.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { generateSampleStl10 } from '../../lib/data';
import { distributedEngines } from '../../lib/dist';
import { Proc, TRAIN_JS, freePort, run } from '../helpers/procs';

jest.setTimeout(300000);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-faults-'));
const data = path.join(tmp, 'data');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => generateSampleStl10(path.join(data, 'stl10_binary'), { train: 64, test: 16, unlabeled: 0 }));

const glooBuilt = distributedEngines().gloo !== null;
const describeGloo = glooBuilt ? describe : describe.skip;
if (!glooBuilt) console.log('skipping the fault tests: this addon has no gloo engine (apt-get install libgloo-dev, rebuild)');

const CLI = ['--dataset', 'stl10', '--data', data, '--model', 'vgg11', '--width', '0.0625', '--hidden-features', '16', '--image-size', '32',
  '--epochs', '500', '--batch-size', '8', '--scheduler', 'none', '--quiet', '--workers', '1'];
const LIMIT = 180000;

/** Two workers started by hand (torchrun's environment, no launcher). */
async function bareWorkers(name: string, timeoutS: number): Promise<Proc[]> {
  const port = String(await freePort());
  return [0, 1].map((rank) => new Proc(process.execPath, [TRAIN_JS, ...CLI, '--checkpoint-dir', path.join(tmp, name, 'ck'),
    '--log-dir', path.join(tmp, name, 'logs')], {
    env: {
      RANK: String(rank), WORLD_SIZE: '2', LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: port,
      VGGNET_DIST_TIMEOUT: String(timeoutS), OMP_NUM_THREADS: '1',
    },
    timeoutMs: LIMIT,
  }));
}

describeGloo('faults', () => {
  test('kill -9 of a worker under the launcher ends the job with the rank named', async () => {
    const p = new Proc(process.execPath, [TRAIN_JS, ...CLI, '--nproc-per-node', '2', '--master-port', String(await freePort()),
      '--dist-timeout', '60', '--checkpoint-dir', path.join(tmp, 'k9', 'ck'), '--log-dir', path.join(tmp, 'k9', 'logs')],
    { env: { OMP_NUM_THREADS: '1' }, timeoutMs: LIMIT });
    const [, pid1] = await p.until(/pids 0:\d+ 1:(\d+)/);
    await p.until(/epoch 1\/500 /);
    const t0 = Date.now();
    process.kill(Number(pid1), 'SIGKILL');
    const r = await p.wait();
    expect(Date.now() - t0).toBeLessThan(60000); // within the timeout (in fact at once: the peer's socket closes)
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`launcher: rank 1 \\(pid ${pid1}\\) was killed by SIGKILL; the job is over`));
    // Rank 0, if it got to say why before the launcher stopped it, names the same rank.
    const said = r.stderr.match(/\[rank 0\] error: (.*)/);
    if (said) expect(said[1]).toMatch(/rank 1 is gone/);
  });

  test('between bare workers, the survivor of a kill -9 fails at once, naming the lost rank', async () => {
    const [w0, w1] = await bareWorkers('bare', 60);
    try {
      await w0.until(/epoch 1\/500 /);
      const t0 = Date.now();
      w1.child.kill('SIGKILL');
      const r = await w0.wait();
      expect(Date.now() - t0).toBeLessThan(60000);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/error: rank 0: .* \(collective #\d+\) failed: rank 1 is gone: its connection to the rendezvous store closed without a goodbye \(the process exited or was killed/);
    } finally {
      w0.killAll('SIGKILL');
      w1.killAll('SIGKILL');
    }
  });

  test('a stopped (hung) worker ends the job after the timeout, named as not heard from', async () => {
    const [w0, w1] = await bareWorkers('hang', 5);
    try {
      await w0.until(/epoch 1\/500 /);
      const t0 = Date.now();
      w1.child.kill('SIGSTOP');
      const r = await w0.wait();
      expect(Date.now() - t0).toBeGreaterThanOrEqual(4000); // it waited for the timeout ...
      expect(Date.now() - t0).toBeLessThan(60000); // ... and not for ever
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/error: rank 0: .* failed: rank 1 (has not been heard from for \d+ s or more \(stopped|never started collective #\d+ \(hung)/);
    } finally {
      w0.killAll('SIGKILL');
      w1.killAll('SIGKILL');
    }
  });

  test('an unreachable master is a clear error after the timeout', async () => {
    const port = await freePort();
    const r = await run(process.execPath, [TRAIN_JS, ...CLI, '--nproc-per-node', '1', '--nnodes', '2', '--node-rank', '1',
      '--master-addr', '127.0.0.1', '--master-port', String(port), '--dist-timeout', '2'], { env: { OMP_NUM_THREADS: '1' }, timeoutMs: LIMIT });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`\\[rank 1\\] error: could not reach the master \\(rank 0's rendezvous store\\) at 127\\.0\\.0\\.1:${port} within 2 s`));
    expect(r.stderr).toMatch(/launcher: rank 1 \(pid \d+\) exited with code 1; the job is over/);
  });
});
