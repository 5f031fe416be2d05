// A closed stdout ends the programs quietly, as Unix tools do: `train.js --help | head -1` and `predict.js ... | head -1`
// through real shell pipes (bash, exit status of the node side from PIPESTATUS), and a reader that closes its end
// before the program writes at all. No stack trace, no EPIPE message, exit 0. Needs dist/ (npm run build:ts).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import sharp from 'sharp';
import { main as trainMain } from '../../lib/cli/train';
import { tinyStl10 } from '../helpers/data_fixtures';

const dist = path.join(__dirname, '..', '..', 'dist');
const have = fs.existsSync(path.join(dist, 'train.js'));
if (!have) console.log(`skipping the pipe tests: ${dist} is not built (npm run build:ts)`);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-pipes-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs `left | head -1` in bash; returns what head printed, the left side's exit status and stderr. */
function pipeToHead(left: string) {
  const r = spawnSync('bash', ['-c', `${left} 2>"$ERR" | head -1; echo "status=\${PIPESTATUS[0]}" >&2`], {
    encoding: 'utf8', env: { ...process.env, ERR: path.join(tmp, 'stderr.txt') }, timeout: 120_000,
  });
  return { head: r.stdout, status: /status=(\d+)/.exec(r.stderr)?.[1], stderr: fs.readFileSync(path.join(tmp, 'stderr.txt'), 'utf8') };
}

(have ? test : test.skip)('train.js --help | head -1, and a reader gone before the first write', async () => {
  const q = (s: string) => `'${s}'`;
  for (const script of ['train.js', 'predict.js', path.join('cli', 'vggnet.js')]) {
    const r = pipeToHead(`${q(process.execPath)} ${q(path.join(dist, script))} --help`);
    expect(r.head).toMatch(/^Usage: /);
    expect({ script, stderr: r.stderr, status: r.status }).toEqual({ script, stderr: '', status: '0' });
  }
  // the read end closed before the child writes anything
  const child = spawn(process.execPath, [path.join(dist, 'train.js'), '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  expect({ code, err }).toEqual({ code: 0, err: '' });
});

(have ? test : test.skip)('predict.js with many images | head -1', async () => {
  const data = tinyStl10({ train: 10, test: 10, unlabeled: 1 });
  const ck = path.join(tmp, 'ck');
  const out: string[] = [];
  const code = await trainMain(['--dataset', 'stl10', '--data', data, '--model', 'vgg11', '--width', '0.125', '--hidden-features', '8', '--image-size', '32',
    '--epochs', '1', '--workers', '1', '--quiet', '--checkpoint-dir', ck, '--log-dir', path.join(tmp, 'logs')],
  { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => out.push(s) } });
  expect({ code, out: out.join('').slice(-500) }).toEqual({ code: 0, out: expect.anything() });
  fs.rmSync(data, { recursive: true, force: true });
  const images: string[] = [];
  for (let i = 0; i < 60; i++) {
    const f = path.join(tmp, `img${i}.png`);
    await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 4 * i, g: 90, b: 200 - 3 * i } } }).png().toFile(f);
    images.push(`'${f}'`);
  }
  // 60 images make 360 lines: most are written after head has gone
  const r = pipeToHead(`'${process.execPath}' '${path.join(dist, 'predict.js')}' --checkpoint '${path.join(ck, 'best.safetensors')}' ${images.join(' ')}`);
  expect(r.head).toContain('img0.png');
  expect({ stderr: r.stderr, status: r.status }).toEqual({ stderr: '', status: '0' });
}, 180_000);
