// Run logs in the log directory: metrics.jsonl and metrics.csv (one row per epoch) and metrics.svg, a self-contained
// plot of the loss and accuracy curves (train and validation) that any browser or image viewer opens; and a
// TensorBoard event file (lib/io/tensorboard.ts) with the same scalars, the train loss every few steps and the
// test confusion matrix as an image.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { writeFileAtomic } from '../io/safetensors';
import { TensorBoardWriter } from '../io/tensorboard';
import type { EvalResult } from './metrics';

export type EpochRecord = Record<string, number>;

const COLUMNS = ['epoch', 'step', 'lr', 'train.loss', 'train.top1', 'val.loss', 'val.top1', 'val.top5', 'time_s', 'img_per_s'];

export function writeMetrics(dir: string, history: EpochRecord[]): { jsonl: string; csv: string; plot: string } {
  fs.mkdirSync(dir, { recursive: true });
  const jsonl = path.join(dir, 'metrics.jsonl');
  const csv = path.join(dir, 'metrics.csv');
  const plot = path.join(dir, 'metrics.svg');
  writeFileAtomic(jsonl, [Buffer.from(history.map((h) => JSON.stringify(h)).join('\n') + (history.length ? '\n' : ''))]);
  const cols = [...COLUMNS, ...new Set(history.flatMap((h) => Object.keys(h)).filter((k) => !COLUMNS.includes(k)))];
  const rows = [cols.join(','), ...history.map((h) => cols.map((c) => (h[c] === undefined ? '' : String(h[c]))).join(','))];
  writeFileAtomic(csv, [Buffer.from(rows.join('\n') + '\n')]);
  writeFileAtomic(plot, [Buffer.from(renderPlot(history))]);
  return { jsonl, csv, plot };
}

interface Series {
  label: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) {
    hi = lo + 1;
  }
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function panel(x0: number, y0: number, w: number, h: number, title: string, series: Series[], yFmt: (v: number) => string, yMin?: number, yMax?: number): string {
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const xs = pts.map((p) => p[0]);
  const xMin = Math.min(0, ...xs), xMax = Math.max(1, ...xs);
  let lo = yMin ?? Math.min(...pts.map((p) => p[1]));
  let hi = yMax ?? Math.max(...pts.map((p) => p[1]));
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (yMin === undefined) lo = Math.min(lo, 0) < 0 ? lo : 0;
  if (hi === lo) hi = lo + 1;
  const yt = niceTicks(lo, hi);
  hi = Math.max(hi, yt[yt.length - 1]);
  const L = 56, R = 12, T = 28, B = 36;
  const pw = w - L - R, ph = h - T - B;
  const sx = (x: number) => x0 + L + ((x - xMin) / (xMax - xMin)) * pw;
  const sy = (y: number) => y0 + T + ph - ((y - lo) / (hi - lo)) * ph;
  const out: string[] = [];
  out.push(`<rect x="${x0 + L}" y="${y0 + T}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`);
  out.push(`<text x="${x0 + L + pw / 2}" y="${y0 + 18}" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`);
  for (const v of yt) {
    if (v < lo - 1e-12 || v > hi + 1e-12) continue;
    out.push(`<line x1="${x0 + L}" x2="${x0 + L + pw}" y1="${sy(v)}" y2="${sy(v)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x0 + L - 6}" y="${sy(v) + 4}" text-anchor="end" font-size="11">${esc(yFmt(v))}</text>`);
  }
  for (const v of niceTicks(xMin, xMax, Math.min(10, Math.max(1, xMax - xMin)))) {
    if (!Number.isInteger(v)) continue;
    out.push(`<line x1="${sx(v)}" x2="${sx(v)}" y1="${y0 + T + ph}" y2="${y0 + T + ph + 4}" stroke="#999"/>`);
    out.push(`<text x="${sx(v)}" y="${y0 + T + ph + 16}" text-anchor="middle" font-size="11">${v}</text>`);
  }
  out.push(`<text x="${x0 + L + pw / 2}" y="${y0 + h - 4}" text-anchor="middle" font-size="12">epoch</text>`);
  series.forEach((s, i) => {
    const p = s.points.filter(([, y]) => Number.isFinite(y));
    if (p.length) {
      const d = p.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(Math.min(hi, Math.max(lo, y))).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      for (const [x, y] of p) out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(Math.min(hi, Math.max(lo, y))).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    }
    const lx = x0 + L + 10, ly = y0 + T + 14 + i * 16;
    out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(`<text x="${lx + 26}" y="${ly}" font-size="11">${esc(s.label)}</text>`);
  });
  return out.join('\n');
}

/** An SVG with two panels: loss (train, val) and accuracy (train top-1, val top-1, val top-5) per epoch. */
export function renderPlot(history: EpochRecord[], title = 'vggnet training'): string {
  const s = (key: string) => history.filter((h) => h[key] !== undefined).map((h) => [h.epoch, h[key]] as [number, number]);
  const pct = (key: string) => s(key).map(([x, y]) => [x, 100 * y] as [number, number]);
  const W = 960, H = 400;
  const loss = panel(0, 30, W / 2, H - 30, 'loss', [
    { label: 'train', color: '#1f77b4', points: s('train.loss') },
    { label: 'validation', color: '#d62728', points: s('val.loss') },
  ], (v) => v.toFixed(2));
  const acc = panel(W / 2, 30, W / 2, H - 30, 'accuracy (%)', [
    { label: 'train top-1', color: '#1f77b4', points: pct('train.top1') },
    { label: 'validation top-1', color: '#d62728', points: pct('val.top1') },
    { label: 'validation top-5', color: '#ff7f0e', points: pct('val.top5'), dashed: true },
  ], (v) => v.toFixed(0), 0, 100);
  const last = history[history.length - 1];
  const sub = last ? `${history.length} epochs` + (last['val.top1'] !== undefined ? ` · final validation top-1 ${(100 * last['val.top1']).toFixed(2)}%` : '') : 'no epochs yet';
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<rect width="${W}" height="${H}" fill="#fafafa"/>
<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">${esc(title)} — ${esc(sub)}</text>
${loss}
${acc}
</svg>
`;
}

/** TensorBoard tags of the per-epoch scalars (grouped by what they measure, train and test side by side). */
export const TENSORBOARD_TAGS: Record<string, string> = {
  'train.loss': 'loss/train', 'val.loss': 'loss/test', 'train.top1': 'top1/train', 'val.top1': 'top1/test',
  'train.top5': 'top5/train', 'val.top5': 'top5/test', lr: 'lr', img_per_s: 'img_per_s', epoch: 'epoch',
};

/**
 * The confusion matrix as an RGB PNG: cell (true row, predicted column) shaded from white (0) to dark blue (the whole
 * row), by the fraction of that true class; square cells of `cell` pixels with 1-pixel grey grid lines.
 */
export async function confusionPng(confusion: number[][], cell = Math.max(4, Math.min(32, Math.floor(320 / Math.max(1, confusion.length))))): Promise<{ png: Uint8Array; width: number; height: number }> {
  const n = confusion.length;
  const size = n * cell + n + 1;
  const px = Buffer.alloc(size * size * 3, 0xc0); // grid lines: the background left between cells
  for (let i = 0; i < n; i++) {
    const total = confusion[i].reduce((a, b) => a + b, 0);
    for (let j = 0; j < n; j++) {
      const f = total > 0 ? confusion[i][j] / total : 0;
      const rgb = [Math.round(255 - f * (255 - 8)), Math.round(255 - f * (255 - 48)), Math.round(255 - f * (255 - 107))];
      for (let y = 0; y < cell; y++) {
        for (let x = 0; x < cell; x++) {
          const o = (((1 + i * (cell + 1) + y) * size) + 1 + j * (cell + 1) + x) * 3;
          px[o] = rgb[0];
          px[o + 1] = rgb[1];
          px[o + 2] = rgb[2];
        }
      }
    }
  }
  const png = await sharp(px, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
  return { png, width: size, height: size };
}

/** One epoch's scalars (at the run's optimizer step) and, with a validation result, its confusion matrix. */
export async function logEpochTensorBoard(tb: TensorBoardWriter, rec: EpochRecord, step: number, validation?: EvalResult): Promise<void> {
  const values: Record<string, number> = {};
  for (const [k, tag] of Object.entries(TENSORBOARD_TAGS)) if (rec[k] !== undefined) values[tag] = rec[k];
  tb.addScalars(values, step);
  if (validation) {
    const img = await confusionPng(validation.confusion);
    tb.addImage('confusion/test', img.png, { width: img.width, height: img.height, colorspace: 3 }, step);
  }
}
