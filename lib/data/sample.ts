// A small STL10-format dataset drawn procedurally (no downloaded data): 10 classes of shapes and textures, each with
// its own colour family, at random position, scale and rotation over a noisy, shaded background. Deterministic from
// the seed. It is the default dataset when no STL10 is present and the fixture of the tests.
//
// The classes are ones a child tells apart, and stay apart under the training augmentations (random resized crop,
// horizontal flip, colour jitter) and at 32 px: the square stands on its side and the diamond on its corner (an
// arbitrarily rotated square is both); the background is shaded, not chequered (a chequered one looked like the
// `checker` class); stripes, chequers and dots are coarse enough to survive a 3× downscale.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export const SAMPLE_CLASSES = ['disc', 'square', 'triangle', 'ring', 'cross', 'hstripes', 'vstripes', 'checker', 'diamond', 'dots'];
const S = 96;
const PLANE = S * S;
const IMAGE_BYTES = 3 * PLANE;

export interface SampleOptions {
  /** Training images (default 1000: 100 per class). */
  train?: number;
  /** Test images (default 800). */
  test?: number;
  /** Unlabeled images (default 200). */
  unlabeled?: number;
  /** Seed of the drawing (default 1); the same seed draws the same files. */
  seed?: number;
}

// sfc32: a small, fast, seedable PRNG (the generator only; transforms use the native counter-based RNG).
function rng(seed: number): () => number {
  let a = 0x9e3779b9 ^ seed, b = 0x243f6a88 + seed * 7, c = 0xb7e15162 ^ (seed * 13), d = seed | 1;
  const next = (): number => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}

function hsv(h: number, s: number, v: number): [number, number, number] {
  const i = Math.floor(h * 6) % 6, f = h * 6 - Math.floor(h * 6);
  const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const m = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][(i + 6) % 6];
  return [m[0] * 255, m[1] * 255, m[2] * 255];
}

/** Draws one image of class `k` (row-major CHW uint8). */
export function drawSample(k: number, r: () => number): Uint8Array {
  const img = new Uint8Array(IMAGE_BYTES);
  const hue = (k / 10 + (r() - 0.5) * 0.06 + 1) % 1;
  const fg = hsv(hue, 0.6 + 0.4 * r(), 0.65 + 0.35 * r());
  const bg = hsv(r(), 0.3 * r(), 0.1 + 0.35 * r());
  const bg2 = hsv(r(), 0.3 * r(), 0.15 + 0.3 * r());
  const cx = S * (0.35 + 0.3 * r()), cy = S * (0.35 + 0.3 * r());
  const rad = S * (0.22 + 0.14 * r());
  // square (on its side) and diamond (on its corner) within ±10° of upright; the rest at any angle
  const tilt = (r() - 0.5) * (Math.PI / 9);
  const ang = k === 1 || k === 8 ? tilt : r() * Math.PI * 2;
  const ca = Math.cos(ang), sa = Math.sin(ang);
  const period = 10 + 8 * r();
  const noise = 10 + 25 * r();
  // background: a linear blend of two colours in a random direction
  const ga = r() * Math.PI * 2;
  const gx = Math.cos(ga) / S, gy = Math.sin(ga) / S;
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const dx = x - cx, dy = y - cy;
      // rotated, radius-normalised coordinates
      const u = (ca * dx + sa * dy) / rad, v = (-sa * dx + ca * dy) / rad;
      let on = false;
      switch (k) {
        case 0: on = u * u + v * v < 1; break; // disc
        case 1: on = Math.abs(u) < 0.8 && Math.abs(v) < 0.8; break; // square
        case 2: on = v < 0.6 && v > -0.9 + 1.7 * Math.abs(u) * 1.15; break; // triangle
        case 3: { const d = Math.sqrt(u * u + v * v); on = d < 1 && d > 0.6; break; } // ring
        case 4: on = (Math.abs(u) < 0.28 && Math.abs(v) < 1) || (Math.abs(v) < 0.28 && Math.abs(u) < 1); break; // cross
        case 5: on = Math.abs(dx) < rad * 1.3 && Math.abs(dy) < rad * 1.3 && Math.floor(y / period) % 2 === 0; break;
        case 6: on = Math.abs(dx) < rad * 1.3 && Math.abs(dy) < rad * 1.3 && Math.floor(x / period) % 2 === 0; break;
        case 7: on = Math.abs(dx) < rad * 1.3 && Math.abs(dy) < rad * 1.3 && (Math.floor(x / period) + Math.floor(y / period)) % 2 === 0; break;
        case 8: on = Math.abs(u) + Math.abs(v) < 1; break; // diamond
        case 9: { // dots on a grid
          const px = ((dx / period) % 2 + 2) % 2 - 1, py = ((dy / period) % 2 + 2) % 2 - 1;
          on = Math.abs(dx) < rad * 1.3 && Math.abs(dy) < rad * 1.3 && px * px + py * py < 0.35;
          break;
        }
      }
      const t = Math.min(1, Math.max(0, 0.5 + (x - S / 2) * gx + (y - S / 2) * gy));
      const col = on ? fg : [bg[0] + (bg2[0] - bg[0]) * t, bg[1] + (bg2[1] - bg[1]) * t, bg[2] + (bg2[2] - bg[2]) * t];
      const n = (r() + r() - 1) * noise;
      const o = y * S + x;
      for (let c = 0; c < 3; c++) {
        const val = col[c] + n;
        img[c * PLANE + o] = val < 0 ? 0 : val > 255 ? 255 : val;
      }
    }
  }
  return img;
}

/** Row-major CHW -> STL10's column-major-per-channel layout. */
function toStl10Layout(img: Uint8Array, out: Uint8Array, offset: number): void {
  for (let c = 0; c < 3; c++) {
    const base = c * PLANE;
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) out[offset + base + x * S + y] = img[base + y * S + x];
  }
}

function writeSplit(file: string, labelFile: string | null, n: number, r: () => number): void {
  const X = new Uint8Array(n * IMAGE_BYTES);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const k = labelFile ? i % 10 : Math.floor(r() * 10);
    y[i] = k + 1;
    toStl10Layout(drawSample(k, r), X, i * IMAGE_BYTES);
  }
  fs.writeFileSync(file, X);
  if (labelFile) fs.writeFileSync(labelFile, y);
}

/** Writes a complete STL10-format folder (train/test/unlabeled, class_names.txt, fold_indices.txt) into `dir`. */
export function generateSampleStl10(dir: string, options: SampleOptions = {}): void {
  const nTrain = options.train ?? 1000, nTest = options.test ?? 800, nUnl = options.unlabeled ?? 200;
  const seed = options.seed ?? 1;
  fs.mkdirSync(dir, { recursive: true });
  writeSplit(path.join(dir, 'train_X.bin'), path.join(dir, 'train_y.bin'), nTrain, rng(seed * 3 + 0));
  writeSplit(path.join(dir, 'test_X.bin'), path.join(dir, 'test_y.bin'), nTest, rng(seed * 3 + 1));
  writeSplit(path.join(dir, 'unlabeled_X.bin'), null, nUnl, rng(seed * 3 + 2));
  fs.writeFileSync(path.join(dir, 'class_names.txt'), SAMPLE_CLASSES.join('\n') + '\n');
  // like STL10: 10 folds, each a fixed subset (a fifth) of the training indices
  const r = rng(seed * 3 + 3);
  const lines: string[] = [];
  const per = Math.max(1, Math.floor(nTrain / 5));
  for (let f = 0; f < 10; f++) {
    const perm = Array.from({ length: nTrain }, (_, i) => i);
    for (let i = nTrain - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    lines.push(perm.slice(0, per).sort((a, b) => a - b).join(' '));
  }
  fs.writeFileSync(path.join(dir, 'fold_indices.txt'), lines.join('\n') + '\n');
}

/** The generator's version is in the folder's name: a changed generator writes a new folder beside the old one. */
const SAMPLE_FOLDER = 'sample-v2';

/** The default cache root: $VGGNET_CACHE, else $XDG_CACHE_HOME/vggnet, else ~/.cache/vggnet. */
export function defaultDataRoot(): string {
  return process.env.VGGNET_CACHE || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'vggnet');
}

/**
 * Generates the sample dataset once into <root>/sample-v2/stl10_binary (atomically: written to a temporary folder
 * and renamed) and returns <root>/sample-v2, the `root` to give STL10.
 */
export function ensureSampleData(root: string = defaultDataRoot(), options: SampleOptions = {}): string {
  const sampleRoot = path.join(root, SAMPLE_FOLDER);
  const dir = path.join(sampleRoot, 'stl10_binary');
  if (fs.existsSync(path.join(dir, 'fold_indices.txt'))) return sampleRoot;
  fs.mkdirSync(sampleRoot, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(sampleRoot, '.generate-'));
  try {
    generateSampleStl10(tmp, options);
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      if (!fs.existsSync(path.join(dir, 'fold_indices.txt'))) throw e; // another process won the race: fine
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return sampleRoot;
}
