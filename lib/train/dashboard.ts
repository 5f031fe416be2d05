// A live training dashboard: a local web page (lib/train/dashboard.html, no external assets) that the Trainer feeds
// through server-sent events while fit() runs: loss and accuracy curves, the learning rate and img/s, the last
// evaluation's per-class accuracy and confusion matrix, and a few test images with their predictions.
//
//   new Trainer(model, { optimizer, dashboard: { port: 6007 } })   // http://127.0.0.1:6007/ while fit() runs
//
// The server binds 127.0.0.1 unless told otherwise: the page shows the test images and the run's configuration.
// Late visitors get the whole state on connecting (`state` event), then the same deltas as everyone else.
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import sharp from 'sharp';
import { Tensor } from '../tensor';
import type { VGGNet } from '../models/vgg';
import type { Dataset } from '../data/dataset';
import type { EvalResult } from './metrics';
import type { EpochRecord } from './logs';

/** The port `--dashboard` uses when none is given (TensorBoard's 6006, plus one). */
export const DEFAULT_DASHBOARD_PORT = 6007;

export interface DashboardOptions {
  /** TCP port (default 6007). 0 picks a free one; `dashboard.url` says which once it is serving. */
  port?: number;
  /**
   * Interface to bind (default '127.0.0.1': only this machine can connect). '0.0.0.0' exposes the page, its test
   * images and the run's configuration to the network, without authentication.
   */
  host?: string;
  /** Test images shown with their top-3 predictions after each evaluation (default 8; 0: none). */
  samples?: number;
  /**
   * Keep serving after fit() returns, until `dashboard.close()` (default false: the Trainer closes a dashboard it
   * started when fit() ends).
   */
  keepOpen?: boolean;
}

/** What the Trainer tells the dashboard when fit() starts. */
export interface DashboardRun {
  title: string;
  model: VGGNet;
  classes: string[];
  epochs: number;
  batches: number;
  /** Epochs already trained (a resumed run), drawn at once. */
  history: EpochRecord[];
  step: number;
  /** Where the sample images come from (the validation loader's dataset), or null. */
  samplesFrom: Dataset | null;
}

export interface DashboardStep {
  epoch: number;
  batch: number;
  batches: number;
  step: number;
  loss: number;
  lr: number;
  batchSize: number;
}

export type DashboardStatus = 'waiting' | 'training' | 'evaluating' | 'done' | 'interrupted' | 'failed';

interface SamplePrediction {
  index: number;
  /** data:image/png;base64,... (the stored image, not the normalised one the model sees). */
  image: string;
  label: number;
  /** The three most likely classes: [class index, probability]. */
  top: [number, number][];
}

interface DashboardState {
  title: string;
  classes: string[];
  epochs: number;
  status: DashboardStatus;
  message: string;
  progress: { epoch: number; batch: number; batches: number; step: number; loss: number; lr: number; imgPerSec: number };
  /** Training loss per step (averaged over `stride` steps once there are many): [step, loss, lr]. */
  steps: [number, number, number][];
  history: EpochRecord[];
  evaluation: { epoch: number; loss: number; top1: number; top5: number; samples: number; perClass: (number | null)[]; confusion: number[][] } | null;
  samples: SamplePrediction[];
}

const MAX_STEP_POINTS = 4000; // past this, neighbouring points are averaged in pairs (the page stays light)
const FLUSH_MS = 200; // step events are batched: at most five a second whatever the step rate
const HEARTBEAT_MS = 15000; // an SSE comment now and then keeps proxies and idle timeouts from closing the stream

function pageFile(): string {
  // lib/train/dashboard.html is shipped in the package ("files"); two levels above both lib/train and dist/train.
  return path.join(__dirname, '..', '..', 'lib', 'train', 'dashboard.html');
}

export class Dashboard {
  readonly port: number;
  readonly host: string;
  readonly samples: number;
  readonly keepOpen: boolean;
  private server: http.Server | null = null;
  private address: string | null = null;
  private readonly clients = new Set<http.ServerResponse>();
  private page: string | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private pendingPoints: [number, number, number][] = [];
  private stride = 1;
  private bucket = { n: 0, loss: 0 };
  private rate = { t: 0, samples: 0 };
  private run: DashboardRun | null = null;
  private sampleInput: { data: Float32Array; shape: number[] } | null = null;
  private readonly state: DashboardState = {
    title: 'vggnet', classes: [], epochs: 0, status: 'waiting', message: '',
    progress: { epoch: 0, batch: 0, batches: 0, step: 0, loss: NaN, lr: NaN, imgPerSec: NaN },
    steps: [], history: [], evaluation: null, samples: [],
  };

  constructor(options: DashboardOptions = {}) {
    const port = options.port ?? DEFAULT_DASHBOARD_PORT;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`Dashboard: port must be an integer in [0, 65535], got ${port}`);
    const samples = options.samples ?? 8;
    if (!Number.isInteger(samples) || samples < 0 || samples > 64) throw new RangeError(`Dashboard: samples must be an integer in [0, 64], got ${samples}`);
    this.port = port;
    this.host = options.host ?? '127.0.0.1';
    this.samples = samples;
    this.keepOpen = options.keepOpen ?? false;
  }

  /** http://host:port/ once serving, else null. */
  get url(): string | null {
    return this.address;
  }
  get listening(): boolean {
    return this.server !== null;
  }

  /** Starts serving; resolves with the page's URL. A port in use is an error saying so. */
  async start(): Promise<string> {
    if (this.address) return this.address;
    this.page ??= fs.readFileSync(pageFile(), 'utf8');
    const server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        reject(new Error(e.code === 'EADDRINUSE'
          ? `dashboard: port ${this.port} on ${this.host} is in use; choose another port (0 picks a free one)`
          : `dashboard: cannot listen on ${this.host}:${this.port} (${e.code ?? e.message})`));
      };
      server.once('error', onError);
      server.listen(this.port, this.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    this.server = server;
    const a = server.address();
    const port = typeof a === 'object' && a ? a.port : this.port;
    const host = this.host.includes(':') ? `[${this.host}]` : this.host;
    this.address = `http://${host}:${port}/`;
    this.heartbeat = setInterval(() => this.broadcastRaw(': keep-alive\n\n'), HEARTBEAT_MS);
    this.heartbeat.unref();
    return this.address;
  }

  /** Ends every event stream and stops serving. */
  async close(): Promise<void> {
    this.flush();
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.heartbeat = this.flushTimer = null;
    for (const res of this.clients) res.end();
    this.clients.clear();
    const server = this.server;
    this.server = null;
    this.address = null;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
    }
  }

  // ---- what the Trainer calls

  /** fit() started: the run's shape, and the history of a resumed run. */
  async beginFit(run: DashboardRun): Promise<void> {
    this.run = run;
    const s = this.state;
    s.title = run.title;
    s.classes = run.classes;
    s.epochs = run.epochs;
    s.history = run.history.slice();
    s.status = 'training';
    s.message = '';
    s.progress = { ...s.progress, step: run.step, batches: run.batches };
    this.rate = { t: performance.now(), samples: 0 };
    if (this.samples > 0 && run.samplesFrom && run.samplesFrom.length > 0) await this.prepareSamples(run.samplesFrom);
    this.broadcast('state', s);
  }

  /** One optimizer step done. Cheap: the points go out in batches, at most five times a second. */
  step(info: DashboardStep): void {
    const p = this.state.progress;
    Object.assign(p, { epoch: info.epoch + 1, batch: info.batch, batches: info.batches, step: info.step, loss: info.loss, lr: info.lr });
    this.rate.samples += info.batchSize;
    this.bucket.n++;
    this.bucket.loss += info.loss;
    if (this.bucket.n >= this.stride) {
      const point: [number, number, number] = [info.step, this.bucket.loss / this.bucket.n, info.lr];
      this.bucket = { n: 0, loss: 0 };
      this.state.steps.push(point);
      this.pendingPoints.push(point);
      if (this.state.steps.length > MAX_STEP_POINTS) this.compact();
    }
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flush();
      }, FLUSH_MS);
      this.flushTimer.unref();
    }
  }

  /** The model is being evaluated on the validation set. */
  evaluating(): void {
    this.flush();
    this.setStatus('evaluating');
  }

  /** An epoch ended: its record, the evaluation and the sample images' predictions. */
  async endEpoch(record: EpochRecord, validation?: EvalResult): Promise<void> {
    this.flush();
    const s = this.state;
    s.history.push(record);
    s.progress.imgPerSec = record.img_per_s ?? s.progress.imgPerSec;
    this.broadcast('epoch', { record, progress: s.progress });
    if (validation) {
      s.evaluation = {
        epoch: record.epoch, loss: validation.loss, top1: validation.top1, top5: validation.top5, samples: validation.samples,
        perClass: validation.perClass.map((v) => (Number.isNaN(v) ? null : v)), confusion: validation.confusion,
      };
      this.broadcast('evaluation', s.evaluation);
    }
    if (this.sampleInput && this.run) {
      this.predictSamples(this.run.model);
      this.broadcast('samples', s.samples);
    }
    this.setStatus('training');
    this.rate = { t: performance.now(), samples: 0 };
  }

  /** fit() ended (status) and why, for the page's banner. */
  endFit(status: 'done' | 'interrupted' | 'failed', message = ''): void {
    this.flush();
    this.state.message = message;
    this.setStatus(status);
  }

  // ---- internals

  private setStatus(status: DashboardStatus): void {
    this.state.status = status;
    this.broadcast('status', { status, message: this.state.message });
  }

  private compact(): void {
    const s = this.state.steps;
    const out: [number, number, number][] = [];
    for (let i = 0; i + 1 < s.length; i += 2) out.push([s[i + 1][0], (s[i][1] + s[i + 1][1]) / 2, s[i + 1][2]]);
    if (s.length % 2) out.push(s[s.length - 1]);
    this.state.steps = out;
    this.stride *= 2;
    this.broadcast('steps', { steps: out }); // the pages replace their copy
    this.pendingPoints = [];
  }

  private flush(): void {
    const now = performance.now();
    const p = this.state.progress;
    const dt = (now - this.rate.t) / 1000;
    if (dt >= 0.5 && this.rate.samples > 0) {
      p.imgPerSec = this.rate.samples / dt;
      this.rate = { t: now, samples: 0 };
    }
    if (this.pendingPoints.length === 0 && this.clients.size === 0) return;
    this.broadcast('step', { progress: p, points: this.pendingPoints });
    this.pendingPoints = [];
  }

  /** Evenly spread test images: their stored pixels as PNG for the page, their transformed tensors for the model. */
  private async prepareSamples(ds: Dataset): Promise<void> {
    const n = Math.min(this.samples, ds.length);
    const indices = Array.from({ length: n }, (_, i) => Math.floor((i * ds.length) / n));
    const inputs: Float32Array[] = [];
    let shape: number[] = [];
    const samples: SamplePrediction[] = [];
    for (const index of indices) {
      const x = ds.get(index);
      const raw = ds.get(index, { transform: null });
      try {
        if (x.image.dtype !== 'float32' || x.image.shape.length !== 3) return; // not an image the model takes
        if (shape.length && x.image.shape.join() !== shape.join()) return; // sizes differ: no batch of them
        shape = x.image.shape;
        inputs.push(x.image.toArray() as Float32Array);
        samples.push({ index, image: await pngDataUrl(raw.image), label: x.label, top: [] });
      } finally {
        x.image.dispose();
        raw.image.dispose();
      }
    }
    const data = new Float32Array(inputs.reduce((a, b) => a + b.length, 0));
    let off = 0;
    for (const a of inputs) {
      data.set(a, off);
      off += a.length;
    }
    this.sampleInput = { data, shape: [samples.length, ...shape] };
    this.state.samples = samples;
  }

  private predictSamples(model: VGGNet): void {
    const { data, shape } = this.sampleInput!;
    const x = Tensor.from(data, shape, { device: model.device });
    try {
      const probs = model.predict(x); // eval mode and no gradients inside; the model's mode is restored
      probs.forEach((p, i) => {
        const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]).slice(0, 3);
        this.state.samples[i].top = order.map((k) => [k, p[k]]);
      });
    } finally {
      x.dispose();
    }
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/') {
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8',
        'Cache-Control': 'no-store',
        // Nothing from elsewhere: the page's own inline script and style, data: images, its own event stream.
        'Content-Security-Policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
      });
      res.end(req.method === 'HEAD' ? undefined : this.page);
      return;
    }
    if (url === '/events') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
      res.write('retry: 2000\n\n');
      res.write(sse('state', this.state));
      this.clients.add(res);
      req.on('close', () => this.clients.delete(res));
      return;
    }
    if (url === '/state.json') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(JSON.stringify(this.state));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  }

  private broadcast(event: string, data: unknown): void {
    if (this.clients.size) this.broadcastRaw(sse(event, data));
  }
  private broadcastRaw(text: string): void {
    for (const res of this.clients) res.write(text);
  }
}

/** One server-sent event; NaN and ±Infinity (not JSON) become null. */
function sse(event: string, data: unknown): string {
  const json = JSON.stringify(data, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v));
  return `event: ${event}\ndata: ${json}\n\n`;
}

/** A uint8 CHW image (1 or 3 channels) as a PNG data URL, scaled up to at least 96 pixels for small images. */
async function pngDataUrl(image: Tensor): Promise<string> {
  const [c, h, w] = image.shape;
  const chw = image.toArray() as Uint8Array;
  const hwc = Buffer.alloc(h * w * c);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) hwc[(y * w + x) * c + k] = chw[(k * h + y) * w + x];
  let img = sharp(hwc, { raw: { width: w, height: h, channels: c as 1 | 3 } });
  const side = Math.max(h, w);
  if (side < 96) img = img.resize({ width: Math.round((w * 96) / side), height: Math.round((h * 96) / side), kernel: 'nearest' });
  else if (side > 160) img = img.resize({ width: Math.round((w * 160) / side), height: Math.round((h * 160) / side), fit: 'fill' });
  return `data:image/png;base64,${(await img.png().toBuffer()).toString('base64')}`;
}
