// The package as a newcomer gets it: `npm pack` of this checkout, installed from the tarball into a fresh folder
// outside the repository with install scripts blocked (what npm 11 does to a dependency whose scripts are denied or,
// in a coming release, unreviewed; --ignore-scripts here, which every npm honours). There:
//   - the emitted declarations compile under --strict, skipLibCheck off, with no @types/node anywhere in reach: with
//     the TypeScript this project pins, and with the newest (typescript@latest installed into a folder of its own at
//     test time when the npm registry answers; skipped with the reason otherwise. Not a devDependency alias such as
//     "typescript-next": "npm:typescript@^7": its `tsc` bin would collide with the pinned one in node_modules/.bin,
//     and the lockfile would freeze "newest" at the day it was written);
//   - examples/*.ts compile there under --strict (with Node's types, given explicitly) and run, small;
//   - the prebuilt binary loads in a process that cannot see the system's libdnnl (a mount namespace with the
//     library's files covered by an empty file), computes what the source build computes, and says which binary it
//     is. Needs `npm run build:prebuild` first (.ci/run does it); skipped with the reason where the prebuild, root or
//     unshare is missing, except in CI, where a missing prebuild fails.
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { readCheckpointMeta } from '../../lib/train/index';
import { predictFiles } from '../../lib/cli/predict';
import { VGGNet, Tensor, noGrad } from '../../lib';
import { Rng } from '../../lib/random';

const repo = path.resolve(__dirname, '../..');
const prebuilt = path.join(repo, 'prebuilds', 'linux-x64', 'node.napi.glibc.node');
const underAsan = (process.env.LD_PRELOAD ?? '').includes('libasan');
// The binary this checkout's tests use: the examples run on it (they test the TypeScript, not the prebuild).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const repoAddon: string = process.env.VGGNET_ADDON ?? require('node-gyp-build').path(repo);

/** The environment for npm and tsc: none of the npm_* variables of an enclosing `npm test`, no sanitizer preload. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && !['LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS', 'VGGNET_ADDON', 'VGGNET_DEBUG'].includes(k)) env[k] = v;
  }
  return { ...env, ...extra };
}
function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = cleanEnv(), timeout = 300_000): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
}
function ok(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

// Decided while the file is collected, so that a skip is a skip with its reason printed.
function why(name: string, reason: string | null): string | null {
  // eslint-disable-next-line no-console
  if (reason) console.log(`skipping "${name}": ${reason}`);
  return reason;
}
const skipAll = why('the package tests', underAsan ? 'under AddressSanitizer (npm run test:asan): packaging is checked in the plain run' : null);
let newestTs: string | null = null;
const newestWhyNot = skipAll ?? why('the declarations with the newest TypeScript', (() => {
  const r = sh('npm', ['view', 'typescript@latest', 'version'], repo, cleanEnv(), 60_000);
  if (r.status !== 0) return `the npm registry did not answer (npm view typescript: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()})`;
  newestTs = r.stdout.trim();
  return null;
})());
const prebuildWhyNot = skipAll ?? why('the prebuilt binary without the system libdnnl', (() => {
  if (!fs.existsSync(prebuilt)) {
    if (process.env.CI) throw new Error(`CI: ${prebuilt} is missing; .ci/run must run \`npm run build:prebuild\` before the tests`);
    return `no prebuild in this checkout (npm run build:prebuild makes ${path.relative(repo, prebuilt)})`;
  }
  if (process.getuid?.() !== 0) return 'not root: a mount namespace that hides libdnnl needs root';
  const u = spawnSync('unshare', ['-m', 'true'], { encoding: 'utf8' });
  if (u.status !== 0) return `unshare -m does not work here (${(u.stderr || u.error?.message || '').trim()})`;
  return null;
})());
const testIf = (reason: string | null) => (reason ? test.skip : test);

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-package-'));
const project = path.join(work, 'fresh-project');
let pinnedTs = '';

beforeAll(() => {
  if (skipAll) return;
  // A fresh project sees only what it installs: no node_modules in any folder above it.
  for (let d = path.dirname(project); ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'node_modules'))) throw new Error(`${path.join(d, 'node_modules')} is above the test project: it would not be fresh`);
    if (path.dirname(d) === d) break;
  }
  if (!fs.existsSync(path.join(repo, 'dist', 'index.d.ts'))) throw new Error('dist/ is not built (npm run build:ts)');
  const packed = ok(sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], repo), 'npm pack');
  const tarball = path.join(work, JSON.parse(packed)[0].filename);
  pinnedTs = JSON.parse(fs.readFileSync(path.join(repo, 'node_modules', 'typescript', 'package.json'), 'utf8')).version;
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'fresh-project', version: '1.0.0', private: true }));
  ok(sh('npm', ['install', tarball, `typescript@${pinnedTs}`, '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], project), 'npm install of the tarball');
}, 600_000);
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const installed = () => path.join(project, 'node_modules', 'vggnet');

testIf(skipAll)('installed with its install script blocked: nothing was built, the package carries what it needs', () => {
  expect(fs.existsSync(path.join(installed(), 'dist', 'index.d.ts'))).toBe(true);
  expect(fs.existsSync(path.join(installed(), 'build'))).toBe(false); // the install script did not run
  expect(fs.existsSync(path.join(project, 'node_modules', '@types'))).toBe(false);
  for (const f of ['lib/train/dashboard.html', 'lib/io/onnx.proto', 'examples/train.ts']) expect(fs.existsSync(path.join(installed(), f))).toBe(true);
  if (fs.existsSync(prebuilt)) {
    const dir = path.join(installed(), 'prebuilds', 'linux-x64');
    // oneDNN and what it needs; gloo (distributed training) and what it needs
    expect(fs.readdirSync(dir).sort()).toEqual(['libOpenCL.so.1', 'libdnnl.so.2', 'libgloo.so.0', 'libgomp.so.1', 'libhiredis.so.0.14', 'libibverbs.so.1',
      'libnl-3.so.200', 'libnl-route-3.so.200', 'licenses', 'node.napi.glibc.node', 'prebuild.json']);
  }
});

// ---- the declarations

const CONSUMER = `// Every export of the package is part of this program; a few uses check the types a user meets.
import * as vggnet from 'vggnet';
import { vgg11, Trainer, sgd, reduceLROnPlateau, serializeSafetensors, Dashboard } from 'vggnet';
import type { TrainerOptions, MonitorMetric, BackendsInfo, DataLoaderOptions, VGGOptions } from 'vggnet';

export const everything: typeof vggnet = vggnet;
export function options(): TrainerOptions {
  const monitor: MonitorMetric = 'val.top1';
  return { optimizer: sgd({ lr: 0.01, momentum: 0.9 }), scheduler: reduceLROnPlateau({ monitor }), dashboard: { port: 0 } };
}
export const loader: DataLoaderOptions = { batchSize: 64, shuffle: true, seed: 1 };
export const model: VGGOptions = { numClasses: 10, batchNorm: true };
export const make = () => new Trainer(vgg11(model), options());
export const bytes = (): Uint8Array[] => serializeSafetensors({});
export const where = (b: BackendsInfo): string => b.addon.kind + ' ' + b.addon.path;
export const dash = new Dashboard({ port: 0 });
// @ts-expect-error a typo of a metric name is a compile error
export const typo = reduceLROnPlateau({ monitor: 'val_loss' });
`;
// The strictest reasonable consumer: strict, declarations checked, no ambient types at all, no DOM.
const CONSUMER_TSCONFIG = {
  compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, types: [], lib: ['ES2022'], target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext' },
  files: ['consumer.ts'],
};

function typeCheck(tsc: string): SpawnSyncReturns<string> {
  fs.writeFileSync(path.join(project, 'consumer.ts'), CONSUMER);
  fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify(CONSUMER_TSCONFIG, null, 2));
  return sh(process.execPath, [tsc, '-p', 'tsconfig.json'], project);
}

testIf(skipAll)("the declarations compile under --strict with this project's TypeScript, without @types/node", () => {
  const r = typeCheck(path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'));
  expect(r.stdout + r.stderr).toBe('');
  expect(r.status).toBe(0);
  // and the check has teeth: a use of a Node-only global in the consumer fails it
  fs.writeFileSync(path.join(project, 'consumer.ts'), CONSUMER + 'export const b = Buffer.alloc(1);\n');
  const bad = sh(process.execPath, [path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], project);
  expect(bad.stdout).toMatch(/Cannot find name 'Buffer'/);
}, 180_000);

testIf(newestWhyNot)('the declarations compile under --strict with the newest TypeScript (typescript@latest)', () => {
  const dir = path.join(work, 'typescript-latest');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'ts-latest', version: '1.0.0', private: true }));
  ok(sh('npm', ['install', `typescript@${newestTs}`, '--no-audit', '--no-fund'], dir), `npm install typescript@${newestTs}`);
  const r = typeCheck(path.join(dir, 'node_modules', 'typescript', 'bin', 'tsc'));
  expect(r.stdout + r.stderr).toBe('');
  expect(r.status).toBe(0);
}, 300_000);

// ---- the examples

testIf(skipAll)('examples/*.ts compile under --strict in the fresh project and run (small)', async () => {
  const ex = path.join(project, 'examples');
  fs.mkdirSync(ex, { recursive: true });
  for (const f of fs.readdirSync(path.join(repo, 'examples')).filter((n) => n.endsWith('.ts'))) fs.copyFileSync(path.join(repo, 'examples', f), path.join(ex, f));
  // Node's types for the examples' own use of process and console, named explicitly (this checkout's @types/node);
  // the fresh project itself has none.
  fs.writeFileSync(path.join(project, 'tsconfig.examples.json'), JSON.stringify({
    compilerOptions: {
      strict: true, skipLibCheck: true, target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', lib: ['ES2022'],
      types: ['node'], typeRoots: [path.join(repo, 'node_modules', '@types')], rootDir: 'examples', outDir: 'out',
    },
    include: ['examples/*.ts'],
  }));
  ok(sh(process.execPath, [path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.examples.json'], project), 'tsc of the examples');

  const out = path.join(work, 'example-output');
  const env = cleanEnv({
    VGGNET_ADDON: repoAddon, VGGNET_CACHE: path.join(work, 'cache'), EXAMPLE_OUT: out, EXAMPLE_EPOCHS: '1', EXAMPLE_SAMPLES: '32',
    EXAMPLE_IMAGE_SIZE: '32', EXAMPLE_BATCH: '16', EXAMPLE_HIDDEN: '32',
  });
  const node = (script: string, args: string[] = [], extra: Record<string, string> = {}) =>
    ok(sh(process.execPath, [path.join(project, 'out', script), ...args], project, { ...env, ...extra }), script);

  const train = node('train.js');
  const ck = path.join(out, 'checkpoint', 'last.safetensors');
  const meta = readCheckpointMeta(ck);
  expect(meta.epoch).toBe(1);
  expect(train).toContain(`test top1 ${(100 * meta.history[0]['val.top1']).toFixed(2)}%`);
  const weights = path.join(out, 'vgg11_bn-sample.safetensors');
  expect(fs.existsSync(weights)).toBe(true);

  const fine = node('finetune.js', [], { WEIGHTS: weights });
  expect(fine).toContain(`loaded pretrained weights from ${weights}`);
  const best = path.join(out, 'finetune', 'best.safetensors');
  expect(fs.existsSync(best)).toBe(true);

  // predict.js on two images agrees with the library's predictFiles (the CLI's code path) on the same checkpoint
  const images = [path.join(work, 'red.png'), path.join(work, 'stripes.png')];
  await sharp({ create: { width: 50, height: 40, channels: 3, background: { r: 200, g: 20, b: 20 } } }).png().toFile(images[0]);
  const stripes = Buffer.alloc(64 * 64 * 3);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) stripes.fill(y % 16 < 8 ? 230 : 20, (y * 64 + x) * 3, (y * 64 + x) * 3 + 3);
  await sharp(stripes, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(images[1]);
  const printed = node('predict.js', [best, ...images]).trim().split('\n');
  const want = await predictFiles(best, images, { top: 3, imageSize: 32 });
  expect(printed).toEqual(want.map((p) => `${p.file}: ${p.top.map((t) => `${t.class} ${(100 * t.probability).toFixed(1)}%`).join(', ')}`));
}, 600_000);

// ---- the prebuilt binary

testIf(prebuildWhyNot)('the prebuilt binary loads where no libdnnl is installed, and computes what the source build does', () => {
  // A tiny seeded network and input; the logits computed here (this checkout's binary) are the reference.
  const cfg = [8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'];
  const x = new Rng(5).fillNormal(new Float32Array(2 * 3 * 32 * 32), 0, 1);
  const model = new VGGNet(cfg as (number | 'M')[], { numClasses: 4, hiddenFeatures: 8, batchNorm: true, seed: 7, device: 'cpu', dropout: 0 });
  model.eval();
  const xt = Tensor.from(x, [2, 3, 32, 32]);
  const logits = noGrad(() => model.forward(xt));
  const want = Array.from(logits.toArray() as Float32Array);
  for (const t of [xt, logits]) t.dispose();
  model.dispose();

  fs.writeFileSync(path.join(work, 'input.json'), JSON.stringify(Array.from(x)));
  const probe = `
    const fs = require('fs');
    let sourceBuild;
    try { process.dlopen({ exports: {} }, ${JSON.stringify(repoAddon)}); sourceBuild = 'loaded'; } catch (e) { sourceBuild = e.message; }
    const v = require('vggnet');
    const m = new v.VGGNet(${JSON.stringify(cfg)}, { numClasses: 4, hiddenFeatures: 8, batchNorm: true, seed: 7, device: 'cpu', dropout: 0 });
    m.eval();
    const x = v.Tensor.from(Float32Array.from(JSON.parse(fs.readFileSync(${JSON.stringify(path.join(work, 'input.json'))}, 'utf8'))), [2, 3, 32, 32]);
    const logits = Array.from(v.noGrad(() => m.forward(x)).toArray());
    const dnnl = [...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => /libdnnl/.test(l)).map((l) => l.trim().split(/\\s+/).pop()))];
    console.log(JSON.stringify({ sourceBuild, addon: v.backends().addon, dnnl, logits }));`;
  fs.writeFileSync(path.join(project, 'probe.js'), probe); // in the project: require('vggnet') finds the installed package
  // In a private mount namespace: every libdnnl file the system has (ldconfig's list and the files its links point
  // to) is covered by an empty file, so the dynamic loader finds none there.
  const empty = path.join(work, 'empty');
  fs.writeFileSync(empty, '');
  const script = `set -e
    for f in $(ldconfig -p | awk '/libdnnl/ {print $NF}'); do for g in "$f" "$(readlink -f "$f")"; do mount --bind ${empty} "$g"; done; done
    cd ${project} && VGGNET_DEBUG=1 node probe.js`;
  const r = spawnSync('unshare', ['-m', 'sh', '-c', script], { env: cleanEnv(), encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`the probe failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!);
  // the hiding works: this checkout's own build, linked to the system's libdnnl, cannot load in there
  expect(got.sourceBuild).toMatch(/libdnnl/);
  expect(got.addon).toEqual({ kind: 'prebuilt', path: path.join(installed(), 'prebuilds', 'linux-x64', 'node.napi.glibc.node') });
  expect(got.dnnl).toEqual([path.join(installed(), 'prebuilds', 'linux-x64', 'libdnnl.so.2')]);
  expect(r.stderr).toContain(`vggnet: loaded the prebuilt addon ${got.addon.path} (CPU; oneDNN bundled beside it)`);
  expect(got.logits.length).toBe(want.length);
  got.logits.forEach((v: number, i: number) => expect(Math.abs(v - want[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[i]))));
}, 180_000);
