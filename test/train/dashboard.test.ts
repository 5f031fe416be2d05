// The live dashboard (lib/train/dashboard.ts): it binds 127.0.0.1 by default, serves a page with nothing from
// elsewhere, streams the Trainer's steps, epochs, evaluation and sample predictions as server-sent events (checked
// against the Trainer's own history), says clearly when its port is taken; and in headless Chromium (Debian's
// `chromium`, driven by playwright-core) the page loads, its accuracy curve gains points as epochs end, and the
// console stays free of errors. The screenshot goes to $VGGNET_DASHBOARD_SCREENSHOT (default: the temp folder).
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import { VGGNet, sgd } from '../../lib';
import { STL10, DataLoader, transforms as T, generateSampleStl10 } from '../../lib/data';
import { Dashboard, Trainer, EpochInfo } from '../../lib/train/index';
import { main as trainMain } from '../../lib/cli/train';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-dashboard-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const root = path.join(tmp, 'data');
generateSampleStl10(path.join(root, 'stl10_binary'), { train: 48, test: 20, unlabeled: 0, seed: 2 });
const norm = T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD);
const loaders = () => ({
  train: new DataLoader(new STL10({ root, split: 'train', transform: T.compose([T.randomResizedCrop(32), norm]) }), { batchSize: 16, shuffle: true, seed: 1, workers: 1 }),
  test: new DataLoader(new STL10({ root, split: 'test', transform: T.compose([T.evalTransform(32), norm]) }), { batchSize: 10, workers: 1 }),
});
const tinyModel = () => new VGGNet([4, 'M', 8, 'M', 8, 'M'], { numClasses: 10, hiddenFeatures: 16, seed: 1, device: 'cpu' }, 'tiny');

function get(url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    }).on('error', reject);
  });
}

/** Reads a server-sent event stream into [event, data] pairs until `close()`. */
function subscribe(url: string) {
  const events: [string, any][] = [];
  let req: http.ClientRequest;
  const opened = new Promise<void>((resolve, reject) => {
    req = http.get(url, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = /^event: (.*)$/m.exec(block);
          const data = /^data: (.*)$/m.exec(block);
          if (ev && data) events.push([ev[1], JSON.parse(data[1])]);
        }
      });
      resolve();
    });
    req.on('error', reject);
  });
  return { events, opened, close: () => req.destroy() };
}

const waitFor = async (cond: () => boolean, what: string, ms = 20000) => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('binds 127.0.0.1 by default; the page names no outside resource and forbids them by CSP', async () => {
  const d = new Dashboard({ port: 0 });
  const url = await d.start();
  try {
    expect(new URL(url).hostname).toBe('127.0.0.1');
    const page = await get(url);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.headers['content-security-policy']).toMatch(/default-src 'none'/);
    // every src/href is a data: URL or relative; no http(s):// or protocol-relative reference anywhere
    for (const m of page.body.matchAll(/\b(?:src|href)\s*=\s*["']([^"']*)["']/g)) expect(m[1]).toMatch(/^(data:|[a-z#./]|$)/);
    expect(page.body).not.toMatch(/(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}\//i);
    expect(page.body).toContain("new EventSource('events')");
    expect((await get(url + 'nope')).status).toBe(404);
  } finally {
    await d.close();
  }
  expect(d.url).toBeNull();
});

test('a port in use is a clear error', async () => {
  const a = new Dashboard({ port: 0 });
  const url = await a.start();
  try {
    const b = new Dashboard({ port: Number(new URL(url).port) });
    await expect(b.start()).rejects.toThrow(/port \d+ on 127\.0\.0\.1 is in use; choose another port \(0 picks a free one\)/);
    // through the Trainer: fit() fails before training, with the same message
    const trainer = new Trainer(tinyModel(), { optimizer: sgd({ lr: 0.01 }), dashboard: { port: Number(new URL(url).port) }, output: null });
    await expect(trainer.fit(loaders().train, { epochs: 1 })).rejects.toThrow(/is in use; choose another port/);
    expect(trainer.step).toBe(0);
  } finally {
    await a.close();
  }
  expect(() => new Dashboard({ port: 70000 })).toThrow(/port must be an integer in \[0, 65535\], got 70000/);
  expect(() => new Dashboard({ samples: -1 })).toThrow(/samples must be an integer in \[0, 64\]/);
});

test('the Trainer streams its steps, epochs, evaluation and sample predictions', async () => {
  const { train, test } = loaders();
  const dash = new Dashboard({ port: 0, samples: 4 });
  const url = await dash.start();
  const sub = subscribe(url + 'events');
  await sub.opened;
  try {
    const trainer = new Trainer(tinyModel(), { optimizer: sgd({ lr: 0.01, momentum: 0.9 }), dashboard: dash, output: null });
    const res = await trainer.fit(train, { epochs: 2, validation: test });
    await waitFor(() => sub.events.some(([e, d]) => e === 'status' && d.status === 'done'), 'the done status');
    expect(dash.listening).toBe(true); // a Dashboard the caller made is the caller's to close
    const of = (name: string) => sub.events.filter(([e]) => e === name).map(([, d]) => d);
    expect(of('state')[0].status).toBe('waiting');
    // every step's loss arrives once, in order, as the Trainer's history averages them
    const points = of('step').flatMap((d) => d.points) as [number, number, number][];
    expect(points.map((p) => p[0])).toEqual(Array.from({ length: 6 }, (_, i) => i + 1));
    const epochMean = (e: number) => points.slice(3 * e, 3 * e + 3).map((p) => p[1]);
    // train.loss is sample-weighted: batches of 16 (48 samples: three full batches), so the plain mean matches
    for (const e of [0, 1]) expect(epochMean(e).reduce((a, b) => a + b, 0) / 3).toBeCloseTo(res.history[e]['train.loss'], 6);
    expect(of('epoch').map((d) => d.record)).toEqual(res.history);
    const ev = of('evaluation');
    expect(ev.length).toBe(2);
    expect(ev[1].confusion).toEqual(res.validation!.confusion);
    expect(ev[1].top1).toBeCloseTo(res.validation!.top1, 12);
    const samples = of('samples')[1];
    expect(samples.length).toBe(4);
    for (const s of samples) {
      expect(s.image).toMatch(/^data:image\/png;base64,/);
      expect(s.top.length).toBe(3);
      const p = s.top.map((t: [number, number]) => t[1]);
      expect(p[0]).toBeGreaterThanOrEqual(p[1]);
      expect(p[1]).toBeGreaterThanOrEqual(p[2]);
    }
    // the predictions are the trained model's: the same softmax as model.predict on the same images
    const x = test.dataset.get(samples[0].index).image;
    const want = trainer.model.predict(x.view([1, ...x.shape]))[0];
    x.dispose();
    expect(samples[0].top[0][1]).toBeCloseTo(Math.max(...want), 5);
    expect(samples[0].label).toBe(test.dataset.get(samples[0].index).label);
  } finally {
    sub.close();
    await dash.close();
  }
});

test('options given to the Trainer: it starts the dashboard, prints the URL and closes it when fit() ends', async () => {
  const { train } = loaders();
  const out: string[] = [];
  const trainer = new Trainer(tinyModel(), { optimizer: sgd({ lr: 0.01 }), dashboard: { port: 0 }, output: { write: (s: string) => out.push(s) }, progress: false });
  await trainer.fit(train, { epochs: 1 });
  expect(out.join('')).toMatch(/dashboard: http:\/\/127\.0\.0\.1:\d+\//);
  const seen = out.join('').match(/dashboard: (\S+)/)![1];
  expect(trainer.dashboard!.url).toBeNull();
  await expect(get(seen)).rejects.toThrow(/ECONNREFUSED/);
});

test('--dashboard PORT on the command line', async () => {
  const out: string[] = [];
  const err: string[] = [];
  const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } };
  expect(await trainMain(['--dashboard', 'x'], io)).toBe(2);
  expect(err.join('')).toMatch(/--dashboard must be a port number in \[0, 65535\], got 'x'/);
  err.length = 0;
  const code = await trainMain(['--dataset', 'stl10', '--data', root, '--model', 'vgg11', '--width', '0.05', '--hidden-features', '16',
    '--image-size', '32', '--epochs', '1', '--batch-size', '24', '--workers', '1', '--device', 'cpu', '--quiet', '--dashboard', '0',
    '--checkpoint-dir', path.join(tmp, 'ck'), '--log-dir', path.join(tmp, 'logs')], io);
  expect(err.join('')).toBe('');
  expect(code).toBe(0);
  expect(out.join('')).toMatch(/dashboard: http:\/\/127\.0\.0\.1:\d+\//);
});

// ---- the page in a real browser

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const chromiumWhyNot = fs.existsSync(CHROMIUM) ? null : `${CHROMIUM} is absent (Debian: apt-get install chromium; .ci/run installs it)`;
if (chromiumWhyNot) console.log(`skipping the headless-Chromium dashboard test: ${chromiumWhyNot}`);

(chromiumWhyNot ? test.skip : test)('in headless Chromium: the page loads, the accuracy curve gains points per epoch, no console errors', async () => {
  const { chromium } = await import('playwright-core');
  const profile = fs.mkdtempSync(path.join(tmp, 'chromium-profile-'));
  // Not the sanitizer runtimes of `npm run test:asan` (they are for node and the addon, not the browser).
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !['LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS'].includes(k)) env[k] = v;
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    env,
    headless: true,
    viewport: { width: 1280, height: 1100 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  const { train, test } = loaders();
  const dash = new Dashboard({ port: 0, samples: 8 });
  const url = await dash.start();
  // each epoch end waits here until the test has looked at the page
  const gates: { epoch: number; release: () => void }[] = [];
  const trainer = new Trainer(tinyModel(), {
    optimizer: sgd({ lr: 0.01, momentum: 0.9 }), dashboard: dash, output: null,
    onEpochEnd: (e: EpochInfo) => new Promise<void>((release) => gates.push({ epoch: e.epoch, release })),
  });
  const problems: string[] = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => { if (!r.url().endsWith('/events')) problems.push(`request failed: ${r.url()}`); });
    const outside: string[] = [];
    page.on('request', (r) => { if (!r.url().startsWith(url) && !r.url().startsWith('data:')) outside.push(r.url()); });
    await page.goto(url);
    // Locators, not page.waitForFunction: a string predicate that is not true at once is re-evaluated with eval()
    // in the page, which the page's CSP (no 'unsafe-eval') refuses; locators poll from Playwright's isolated world.
    await page.locator('#status:text-is("waiting")').waitFor();
    expect(await page.locator('#chart-accuracy').getAttribute('data-points')).toBe('0');
    const fit = trainer.fit(train, { epochs: 2, validation: test });
    for (const epoch of [1, 2]) {
      await waitFor(() => gates.length > 0, `the end of epoch ${epoch}`);
      const gate = gates.shift()!;
      expect(gate.epoch).toBe(epoch);
      // train top-1, validation top-1 and top-5: three points per epoch
      await page.locator(`#chart-accuracy[data-points="${3 * epoch}"]`).waitFor();
      await page.locator('#samples figure img').nth(7).waitFor();
      expect(await page.locator('#samples figure img').count()).toBe(8);
      expect(await page.locator('#confusion tr').count()).toBe(11); // header + 10 classes
      expect(await page.locator('#epoch').textContent()).toBe(`${epoch} / 2`);
      if (epoch === 2) {
        const shot = process.env.VGGNET_DASHBOARD_SCREENSHOT ?? path.join(os.tmpdir(), 'vggnet-dashboard.png');
        await page.screenshot({ path: shot, fullPage: true });
        expect(fs.statSync(shot).size).toBeGreaterThan(10000);
      }
      gate.release();
    }
    await fit;
    await page.locator('#status:text-is("done")').waitFor();
    expect(Number(await page.locator('#chart-loss').getAttribute('data-points'))).toBe(4); // train and val, 2 epochs
    expect(outside).toEqual([]);
    expect(problems).toEqual([]);
  } finally {
    for (const g of gates) g.release();
    await context.close();
    await dash.close();
  }
});
