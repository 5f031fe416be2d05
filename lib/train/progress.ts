// What a person sees during an epoch: on a TTY a progress bar redrawn in place (ETA, img/s, loss, acc, lr); otherwise
// plain lines every `interval` seconds, so logs stay readable.
export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressState {
  epoch: number; // 1-based for display
  epochs: number;
  batch: number; // batches done in this epoch
  batches: number;
  samples: number; // samples seen in this epoch (this run)
  loss: number;
  acc: number;
  lr: number;
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--:--';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(2, '0'), ss = String(sec).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** A learning rate in few characters: 0.05, 0.00248, 1.23e-4. */
export function formatLr(lr: number): string {
  if (lr === 0 || lr >= 1e-3) return String(Number(lr.toPrecision(3)));
  return lr.toExponential(2).replace(/\.?0+e/, 'e');
}

export class Progress {
  private t0 = 0;
  private lastDraw = 0;
  private startBatch = 0;
  private drawn = false;
  readonly tty: boolean;

  constructor(private readonly out: ProgressStream, options: { tty?: boolean; interval?: number } = {}) {
    this.tty = options.tty ?? Boolean(out.isTTY);
    this.interval = options.interval ?? (this.tty ? 0.1 : 10);
  }
  private readonly interval: number;

  start(startBatch = 0): void {
    this.t0 = Date.now();
    this.lastDraw = this.t0;
    this.startBatch = startBatch;
    this.drawn = false;
  }

  update(s: ProgressState, force = false): void {
    const now = Date.now();
    if (!force && (now - this.lastDraw) / 1000 < this.interval) return;
    this.lastDraw = now;
    const el = (now - this.t0) / 1000;
    const done = s.batch - this.startBatch;
    const eta = done > 0 ? (el / done) * (s.batches - s.batch) : NaN;
    const ips = el > 0 ? s.samples / el : 0;
    const stats = `loss ${s.loss.toFixed(4)} acc ${(100 * s.acc).toFixed(1)}% lr ${formatLr(s.lr)} ${ips.toFixed(ips < 100 ? 1 : 0)} img/s`;
    const head = `epoch ${s.epoch}/${s.epochs}`;
    if (this.tty) {
      // One line that fits the terminal (80 columns when unknown): a bar of what the text leaves (up to 30 columns,
      // none below 5); still too long, the elapsed time goes (the ETA stays); then the line is cut, never wrapped.
      const cols = this.out.columns || 80;
      const pos = ` ${s.batch}/${s.batches}`;
      const full = `${pos} ${formatDuration(el)}<${formatDuration(eta)} ${stats}`;
      const width = Math.min(30, cols - 1 - head.length - full.length - 3);
      let line: string;
      if (width >= 5) {
        const fill = Math.min(width, Math.round((width * s.batch) / Math.max(1, s.batches)));
        line = `${head} [${'='.repeat(fill)}${fill < width ? '>' : ''}${' '.repeat(Math.max(0, width - fill - 1))}]${full}`;
      } else {
        line = head + full;
        if (line.length > cols - 1) line = `${head}${pos} eta ${formatDuration(eta)} ${stats}`;
      }
      this.out.write(`\r${line.slice(0, cols - 1)}\x1b[K`);
      this.drawn = true;
    } else {
      this.out.write(`${head} batch ${s.batch}/${s.batches} ${stats} eta ${formatDuration(eta)}\n`);
    }
  }

  /** Clears the bar (TTY) before the epoch's summary line. */
  end(): void {
    if (this.tty && this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}
