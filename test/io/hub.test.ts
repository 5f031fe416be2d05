// torchvision weights by name, against a local HTTP server on 127.0.0.1 (no network here): the 8 file names match
// torchvision's source where python3-torchvision is installed; a fixture .pth named with its sha256 prefix downloads
// into the cache and loads; an interrupted download resumes with a Range request; a wrong hash, a 404 and a bad name
// are errors that say what was expected; torch.hub's cache is reused; the cache folder follows VGGNET_CACHE and
// XDG_CACHE_HOME; loadPretrained replaces the last layer for another class count.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import {
  TORCHVISION_VGG_FILES, TORCHVISION_BASE_URL, fetchWeights, hashPrefix, resolvePretrained, weightsCacheDir, pretrainedArchitecture,
  cachedPretrained,
} from '../../lib/io/hub';
import { serializePth } from '../../lib/io/pth';
import { loadPretrained } from '../../lib/models/pretrained';
import { Tensor } from '../../lib/tensor';
import { tinyVgg } from '../helpers/tiny';
import { torchPython, runPython } from '../helpers/python';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-hub-'));
const saved = { VGGNET_CACHE: process.env.VGGNET_CACHE, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME, TORCH_HOME: process.env.TORCH_HOME, VGGNET_WEIGHTS_URL: process.env.VGGNET_WEIGHTS_URL };
process.env.TORCH_HOME = path.join(tmp, 'torch'); // never the machine's own torch.hub cache
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  fs.rmSync(tmp, { recursive: true, force: true });
});

let server: http.Server;
let base: string;
const files = new Map<string, Buffer>();
const log: { url: string; range?: string }[] = [];
let cutAfter: number | undefined;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    log.push({ url: req.url ?? '', range: req.headers.range });
    const body = files.get(decodeURIComponent((req.url ?? '').slice(1)));
    if (!body) {
      res.writeHead(404);
      return res.end();
    }
    let start = 0;
    if (req.headers.range) {
      start = Number(/bytes=(\d+)-/.exec(req.headers.range)![1]);
      res.writeHead(206, { 'Content-Length': body.length - start, 'Content-Range': `bytes ${start}-${body.length - 1}/${body.length}` });
    } else {
      res.writeHead(200, { 'Content-Length': body.length });
    }
    if (cutAfter !== undefined) {
      const n = cutAfter;
      cutAfter = undefined;
      res.write(body.subarray(start, start + n), () => setTimeout(() => res.destroy(), 100)); // let the client store what came
    } else {
      res.end(body.subarray(start));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** A tiny VGG's state dict as a .pth, served under `<stem>-<sha256 prefix>.pth`. */
function fixture(stem: string, numClasses = 5): { name: string; body: Buffer } {
  const m = tinyVgg({ seed: 11, numClasses });
  const body = Buffer.concat(serializePth(m.stateDict()));
  const name = `${stem}-${crypto.createHash('sha256').update(body).digest('hex').slice(0, 8)}.pth`;
  files.set(name, body);
  return { name, body };
}

test('the eight torchvision names, their URLs and architectures', () => {
  expect(Object.keys(TORCHVISION_VGG_FILES)).toEqual(['vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn']);
  expect(TORCHVISION_BASE_URL).toBe('https://download.pytorch.org/models/');
  expect(hashPrefix('vgg16-397923af.pth')).toBe('397923af');
  expect(hashPrefix('vgg16_features-amdegroot-88682ab5.pth')).toBe('88682ab5');
  expect(hashPrefix('weights.pth')).toBeNull();
  expect(pretrainedArchitecture('vgg19_bn')).toEqual({ model: 'vgg19', batchNorm: true });
  expect(pretrainedArchitecture('vgg13')).toEqual({ model: 'vgg13', batchNorm: false });
  const src = '/usr/lib/python3/dist-packages/torchvision/models/vgg.py';
  if (!torchPython || !fs.existsSync(src)) {
    // eslint-disable-next-line no-console
    console.log(`not compared with torchvision's source: ${src} is not here (python3-torchvision not installed)`);
    return;
  }
  const urls = JSON.parse(runPython(torchPython, `
import json
from torchvision.models import vgg
names = ['vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn']
print(json.dumps({n: getattr(vgg, 'VGG%s_Weights' % n[3:].upper().replace('_BN', '_BN')).IMAGENET1K_V1.url for n in names}))`)) as Record<string, string>;
  for (const [n, f] of Object.entries(TORCHVISION_VGG_FILES)) expect([n, urls[n]]).toEqual([n, TORCHVISION_BASE_URL + f]);
});

test('cache folder: VGGNET_CACHE, else XDG_CACHE_HOME/vggnet, else ~/.cache/vggnet', () => {
  const keep = process.env.VGGNET_CACHE;
  process.env.VGGNET_CACHE = path.join(tmp, 'c1');
  expect(weightsCacheDir()).toBe(path.join(tmp, 'c1', 'weights'));
  delete process.env.VGGNET_CACHE;
  process.env.XDG_CACHE_HOME = path.join(tmp, 'xdg');
  expect(weightsCacheDir()).toBe(path.join(tmp, 'xdg', 'vggnet', 'weights'));
  delete process.env.XDG_CACHE_HOME;
  expect(weightsCacheDir()).toBe(path.join(os.homedir(), '.cache', 'vggnet', 'weights'));
  if (keep !== undefined) process.env.VGGNET_CACHE = keep;
});

test('download by URL into the cache, verified; a second call does not download; loadPretrained replaces the last layer', async () => {
  const { name, body } = fixture('tiny', 5);
  const cacheDir = path.join(tmp, 'cache1');
  log.length = 0;
  const file = await fetchWeights(base + name, { cacheDir, quiet: true });
  expect(file).toBe(path.join(cacheDir, name));
  expect(fs.readFileSync(file).equals(body)).toBe(true);
  expect(fs.readdirSync(cacheDir)).toEqual([name]); // no .part left
  await fetchWeights(base + name, { cacheDir, quiet: true });
  expect(log).toHaveLength(1);
  // Fine-tuning for 3 classes: everything but classifier.6 comes from the file.
  const m = tinyVgg({ seed: 99, numClasses: 3 });
  const fresh = (m.stateDict()['classifier.6.weight'] as Tensor).toFloat32().slice();
  const { replaced } = loadPretrained(m, file);
  expect(replaced).toEqual(['classifier.6.weight [5, 12] -> [3, 12]', 'classifier.6.bias [5] -> [3]']);
  const src = tinyVgg({ seed: 11, numClasses: 5 }).stateDict();
  const got = m.stateDict();
  expect((got['features.0.weight'] as Tensor).toFloat32()).toEqual((src['features.0.weight'] as Tensor).toFloat32());
  expect((got['classifier.6.weight'] as Tensor).toFloat32()).toEqual(fresh);
});

test('an interrupted download resumes with a Range request', async () => {
  const { name, body } = fixture('resume', 4);
  const cacheDir = path.join(tmp, 'cache2');
  log.length = 0;
  cutAfter = Math.floor(body.length / 3);
  await expect(fetchWeights(base + name, { cacheDir, quiet: true })).rejects.toThrow(/expected \d+ bytes, got \d+|aborted|socket hang up|ECONNRESET|premature close/i);
  expect(fs.statSync(path.join(cacheDir, `${name}.part`)).size).toBeGreaterThan(0);
  const file = await fetchWeights(base + name, { cacheDir, quiet: true });
  expect(fs.readFileSync(file).equals(body)).toBe(true);
  expect(log.map((l) => l.range)).toEqual([undefined, expect.stringMatching(/^bytes=\d+-$/)]);
});

test('a wrong hash, a 404 and an unknown name are errors; nothing is left that looks complete', async () => {
  const { body } = fixture('x');
  files.set('bad-00000000.pth', body);
  const cacheDir = path.join(tmp, 'cache3');
  await expect(fetchWeights(`${base}bad-00000000.pth`, { cacheDir, quiet: true }))
    .rejects.toThrow(/bad-00000000\.pth: expected a sha256 starting with 00000000, got [0-9a-f]{64} \(the file was deleted; run again\)/);
  expect(fs.readdirSync(cacheDir)).toEqual([]);
  await expect(fetchWeights(`${base}gone-12345678.pth`, { cacheDir, quiet: true })).rejects.toThrow(/gone-12345678\.pth: expected HTTP 200 or 206, got 404/);
  // By name from a mirror (VGGNET_WEIGHTS_URL): the request is for torchvision's file name, whose hash our fixture lacks.
  files.set('vgg11-8a719046.pth', body);
  process.env.VGGNET_WEIGHTS_URL = base;
  log.length = 0;
  await expect(resolvePretrained('vgg11', { cacheDir, quiet: true })).rejects.toThrow(/vgg11-8a719046\.pth: expected a sha256 starting with 8a719046/);
  expect(log.map((l) => l.url)).toEqual(['/vgg11-8a719046.pth']);
  delete process.env.VGGNET_WEIGHTS_URL;
  await expect(resolvePretrained(path.join(tmp, 'nope.pth'))).rejects.toThrow(/pretrained weights '.*nope\.pth': no such file, and not a torchvision name \(vgg11, vgg11_bn, .*vgg19_bn\) or an http\(s\) URL/);
  await expect(resolvePretrained('vgg12')).rejects.toThrow(/'vgg12': no such file, and not a torchvision name/);
});

test("a copy in torch.hub's cache (TORCH_HOME) is used without downloading, its hash checked", async () => {
  const { name, body } = fixture('hubbed');
  const hub = path.join(process.env.TORCH_HOME!, 'hub', 'checkpoints');
  fs.mkdirSync(hub, { recursive: true });
  fs.writeFileSync(path.join(hub, name), body);
  log.length = 0;
  expect(await fetchWeights(base + name, { cacheDir: path.join(tmp, 'cache4'), quiet: true })).toBe(path.join(hub, name));
  expect(log).toHaveLength(0);
  // A corrupt copy there is not used: ours is downloaded.
  fs.writeFileSync(path.join(hub, name), Buffer.from('corrupt'));
  expect(await fetchWeights(base + name, { cacheDir: path.join(tmp, 'cache4'), quiet: true })).toBe(path.join(tmp, 'cache4', name));
  expect(log).toHaveLength(1);
  // cachedPretrained finds nothing for a torchvision name whose real file is absent.
  expect(await cachedPretrained('vgg19_bn', { cacheDir: path.join(tmp, 'cache4') })).toBeNull();
});
