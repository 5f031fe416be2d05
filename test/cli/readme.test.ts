// Every command in README.md's shell blocks runs as written: the quick ones are run, in README order, in one fresh
// folder (as a newcomer would, so predict and export find the checkpoint the demo wrote), with --epochs cut to 1
// (2 for a --resume); the rest are skipped with the reason printed, and those of train still have their arguments
// parsed, so a renamed flag in the README fails here. Needs dist/ (npm run build:ts).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import sharp from 'sharp';
import { parseTrainArgs } from '../../lib/cli/train';

const repo = path.join(__dirname, '..', '..');
const dist = path.join(repo, 'dist');

/** The shell commands of README.md: ```sh blocks, continuation lines joined, comments dropped, && chains split. */
export function readmeCommands(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const joined = m[1].replace(/\\\n\s*/g, '');
    for (const line of joined.split('\n')) {
      const cmd = line.replace(/\s+#.*$/, '').trim();
      if (!cmd || cmd.startsWith('#')) continue;
      for (const part of cmd.split('&&')) out.push(part.trim());
    }
  }
  return out;
}

/** A command's words (the README's commands need no shell quoting). */
const words = (cmd: string) => cmd.split(/\s+/);

/** Why a command is not run here, or null to run it. */
function skipReason(argv: string[]): string | null {
  const [prog, ...args] = argv;
  if (prog === 'sudo') return 'installs system packages';
  if (prog === '{' && args[0] === 'command') return "installs Debian's Node.js and npm where no npm is installed";
  if (prog === 'npm' && args[0] === 'install') return args.length > 1 ? 'installs from the npm registry (test/package installs the packed package)' : 'the build itself (this suite runs on its result)';
  if (prog === 'npm' && ['approve-scripts', 'rebuild'].includes(args[0])) return 'acts on vggnet installed in a project of your own (test/package covers installing)';
  if (prog === 'node' && args[0] === '-e') return 'needs vggnet installed as a dependency (test/package covers it)';
  if (prog === 'npm' && args[0] === 'test') return 'the test suite itself';
  if (prog === 'npm' && args[0] === 'run' && args[1] === 'bench') return 'a benchmark of minutes';
  if (prog === 'tensorboard') return 'an external program (TensorBoard)';
  if (prog === 'vggnet' && args[0] === 'launch') return 'runs a script of your own (test/dist/training.test.ts runs one under vggnet launch)';
  if (args.includes('--devices')) return 'needs a GPU per worker';
  if (args.includes('--nnodes')) return 'needs two machines (test/dist/training.test.ts simulates them with network namespaces)';
  if (args.includes('--download')) return 'downloads from the network';
  const pre = args.indexOf('--pretrained');
  if (pre >= 0 && !args[pre + 1].includes('/')) return "downloads torchvision's weights from the network";
  if (pre >= 0) return 'needs a torchvision weights file on disk';
  const data = args.indexOf('--data');
  if (data >= 0 && args.includes('folder')) return 'trains full-width on a 6000-image folder: minutes per epoch';
  return null;
}

/** A README command as run here: node on this checkout's dist/, a short --epochs. */
function runnable(argv: string[]): string[] {
  let [prog, ...args] = argv;
  if (prog === 'npx' && args[0] === 'vggnet') {
    prog = 'node';
    args = ['dist/cli/vggnet.js', ...args.slice(1)];
  }
  if (prog !== 'node' || !args[0].startsWith('dist/')) throw new Error(`no rule to run '${argv.join(' ')}' (add one to test/cli/readme.test.ts)`);
  args[0] = path.join(repo, args[0]);
  const trains = /train\.js$/.test(args[0]) && !args.includes('--evaluate') && !args.includes('--help');
  if (trains) {
    const epochs = args.includes('--resume') ? '2' : '1';
    const i = args.indexOf('--epochs');
    if (i >= 0) args[i + 1] = epochs;
    else args.push('--epochs', epochs);
  }
  return [process.execPath, ...args];
}

const have = fs.existsSync(path.join(dist, 'train.js'));
if (!have) console.log(`skipping the README commands: ${dist} is not built (npm run build:ts)`);

(have ? test : test.skip)('every command in README.md runs as written (quick ones run, the rest skipped with the reason)', async () => {
  const commands = readmeCommands(fs.readFileSync(path.join(repo, 'README.md'), 'utf8'));
  expect(commands.length).toBeGreaterThan(8);
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-readme-'));
  try {
    // what the README's predict example names
    for (const f of ['cat.jpg', 'dog.png']) {
      await sharp({ create: { width: 120, height: 90, channels: 3, background: { r: 200, g: 80, b: 40 } } }).toFile(path.join(cwd, f));
    }
    const env = { ...process.env, VGGNET_CACHE: path.join(cwd, '.cache') };
    const ran: string[] = [];
    for (const cmd of commands) {
      const argv = words(cmd);
      const why = skipReason(argv);
      if (why !== null) {
        console.log(`README: not run: ${cmd}\n  (${why})`);
        if (/train\.js$/.test(argv[1] ?? '')) {
          const errs: string[] = [];
          const parsed = parseTrainArgs(argv.slice(2), { stdout: { write: () => true }, stderr: { write: (s: string) => errs.push(s) } });
          expect({ cmd, parsed: typeof parsed === 'number' ? `exit ${parsed}: ${errs.join('')}` : 'ok' }).toEqual({ cmd, parsed: 'ok' });
        }
        continue;
      }
      const run = runnable(argv);
      const r = spawnSync(run[0], run.slice(1), { cwd, env, encoding: 'utf8', timeout: 300_000 });
      expect({ cmd, code: r.status, stderr: r.stderr.slice(-2000) }).toEqual({ cmd, code: 0, stderr: expect.anything() });
      ran.push(cmd);
    }
    // the ones that must have run: the demo, resume, evaluate, predict and export
    for (const re of [/^node dist\/train\.js$/, /--resume auto/, /--evaluate/, /^node dist\/predict\.js/, /export --onnx/]) {
      expect({ re: String(re), ran: ran.some((c) => re.test(c)) }).toEqual({ re: String(re), ran: true });
    }
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
}, 900_000);

test('the README\'s new runs each write to their own --checkpoint-dir (run in order, none refuses for another\'s)', () => {
  const dirs = readmeCommands(fs.readFileSync(path.join(repo, 'README.md'), 'utf8'))
    .map(words)
    .filter((w) => w[0] === 'node' && w[1] === 'dist/train.js' && !w.includes('--resume') && !w.includes('--evaluate'))
    .filter((w) => !/^--node-rank [1-9]/.test(w.slice(w.indexOf('--node-rank')).join(' '))) // another machine's half of a run
    .map((w) => (w.includes('--checkpoint-dir') ? w[w.indexOf('--checkpoint-dir') + 1] : './checkpoint'));
  expect(dirs.length).toBeGreaterThan(2);
  expect(new Set(dirs).size).toBe(dirs.length);
});

test('readmeCommands: blocks, continuations, comments, && chains', () => {
  const md = 'text `node no.js`\n```sh\na --x 1 \\\n  --y 2   # note\n# only a comment\nb && c\n```\n```ts\nnot(a command)\n```\n```sh\nd\n```\n';
  expect(readmeCommands(md)).toEqual(['a --x 1 --y 2', 'b', 'c', 'd']);
});
