// Fetching STL10: the official archive streamed to <root>/stl10_binary.tar.gz.part (HTTP Range resumes an
// interrupted download), md5-verified, renamed, extracted with `tar` into a temporary folder, size-checked, and only
// then renamed to <root>/stl10_binary — so a tree at that path is always complete.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import * as path from 'path';
import { pipeline } from 'stream/promises';
import * as tar from 'tar';
import { checkRegularFile, fileKind, readRegularFileSync } from '../io/files';

export const STL10_URL = 'http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz';
export const STL10_MD5 = '91f7769df0f17e558f3565bffb0c7dfb';
const IMAGE_BYTES = 3 * 96 * 96;
/** Image counts of the official archive, checked when its md5 is the official one. */
export const STL10_COUNTS = { train: 5000, test: 8000, unlabeled: 100000 };

export interface DownloadOptions {
  /** Archive URL; default: env VGGNET_STL10_URL, else the official URL. */
  url?: string;
  /** Expected md5 of the archive; default: the official one. */
  md5?: string;
  /** No progress bar even on a TTY. */
  quiet?: boolean;
}

/**
 * Problems with an extracted STL10 folder ([] when complete and consistent): every file present, X sizes a multiple
 * of 3*96*96, one label byte per image, 10 class names, 10 fold lines; `counts` also fixes the image counts.
 */
export function checkStl10Files(dir: string, counts?: { train: number; test: number; unlabeled: number }): string[] {
  const problems: string[] = [];
  const size = (name: string): number | null => {
    let st: fs.Stats;
    try {
      st = fs.statSync(path.join(dir, name));
    } catch {
      problems.push(`${path.join(dir, name)}: expected a file, got missing file`);
      return null;
    }
    if (!st.isFile()) {
      problems.push(`${path.join(dir, name)}: expected a regular file, got ${fileKind(st)}`);
      return null;
    }
    return st.size;
  };
  for (const split of ['train', 'test', 'unlabeled'] as const) {
    const x = size(`${split}_X.bin`);
    const want = counts ? counts[split] * IMAGE_BYTES : null;
    if (x !== null && (x === 0 || x % IMAGE_BYTES !== 0 || (want !== null && x !== want))) {
      const exp = want !== null ? `${want} bytes` : 'a positive multiple of 27648 bytes';
      problems.push(`${path.join(dir, `${split}_X.bin`)}: expected ${exp}, got ${x} bytes`);
    }
    if (split !== 'unlabeled') {
      const y = size(`${split}_y.bin`);
      if (x !== null && y !== null && y * IMAGE_BYTES !== x) {
        problems.push(`${path.join(dir, `${split}_y.bin`)}: expected ${x / IMAGE_BYTES} bytes (one per image), got ${y} bytes`);
      }
    }
  }
  for (const [name, lines] of [['class_names.txt', 10], ['fold_indices.txt', 10]] as const) {
    if (size(name) === null) continue;
    const n = readRegularFileSync(path.join(dir, name), 64 << 20).toString('utf8').split('\n').filter((l) => l.trim()).length;
    if (n !== lines) problems.push(`${path.join(dir, name)}: expected ${lines} lines, got ${n}`);
  }
  return problems;
}

export async function md5File(file: string): Promise<string> {
  return hashFile(file, 'md5');
}

/** The hex digest of a file (md5, sha256, ...). */
export async function hashFile(file: string, algorithm: string): Promise<string> {
  checkRegularFile(file); // a FIFO would be read forever
  const h = crypto.createHash(algorithm);
  await pipeline(fs.createReadStream(file), h);
  return h.digest('hex');
}

function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

class Progress {
  private last = 0;
  private readonly start = Date.now();
  constructor(private readonly label: string, private readonly enabled: boolean) {}
  update(done: number, total: number | null, startBytes: number, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const rate = (done - startBytes) / Math.max(1e-3, (now - this.start) / 1000);
    let line = `${this.label} ${formatBytes(done)}`;
    if (total) {
      const f = Math.min(1, done / total);
      const w = 30;
      const filled = Math.round(f * w);
      line = `${this.label} [${'#'.repeat(filled)}${'-'.repeat(w - filled)}] ${(f * 100).toFixed(1)}% ${formatBytes(done)}/${formatBytes(total)}`;
    }
    process.stderr.write(`\r${line} ${formatBytes(rate)}/s\x1b[K`);
  }
  end(): void {
    if (this.enabled) process.stderr.write('\n');
  }
}

function get(url: string, headers: Record<string, string>, redirects = 5): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : url.startsWith('http:') ? http : null;
    if (!mod) return reject(new Error(`download: ${url}: expected an http:// or https:// URL`));
    const req = mod.get(url, { headers }, (res) => {
      const code = res.statusCode ?? 0;
      if (code >= 300 && code < 400 && res.headers.location) {
        res.resume();
        if (redirects <= 0) return reject(new Error(`download: ${url}: too many redirects`));
        return resolve(get(new URL(res.headers.location, url).toString(), headers, redirects - 1));
      }
      resolve(res);
    });
    req.on('error', (e) => reject(new Error(`download: ${url}: ${e.message}`)));
  });
}

/** Downloads `url` to `dest` through `dest.part`, resuming a previous .part with an HTTP Range request. */
export async function downloadFile(url: string, dest: string, options: { quiet?: boolean } = {}): Promise<void> {
  const part = `${dest}.part`;
  let have = fs.existsSync(part) ? fs.statSync(part).size : 0;
  const res = await get(url, have > 0 ? { Range: `bytes=${have}-` } : {});
  const code = res.statusCode ?? 0;
  if (code === 416 && have > 0) {
    res.resume(); // the .part already holds the whole file; the md5 check decides
    return fs.promises.rename(part, dest);
  }
  if (code !== 200 && code !== 206) {
    res.resume();
    throw new Error(`download: ${url}: expected HTTP 200 or 206, got ${code} ${res.statusMessage ?? ''}`.trim());
  }
  if (code === 200) have = 0; // server ignored the range: start over
  const len = Number(res.headers['content-length'] ?? NaN);
  const total = Number.isFinite(len) ? have + len : null;
  const bar = new Progress(path.basename(dest), !options.quiet && Boolean(process.stderr.isTTY));
  let done = have;
  const start = have;
  res.on('data', (chunk: Buffer) => {
    done += chunk.length;
    bar.update(done, total, start);
  });
  try {
    await pipeline(res, fs.createWriteStream(part, { flags: have > 0 ? 'a' : 'w' }));
  } finally {
    bar.update(done, total, start, true);
    bar.end();
  }
  if (total !== null && done !== total) {
    throw new Error(`download: ${url}: expected ${total} bytes, got ${done} (connection closed early; run again to resume)`);
  }
  await fs.promises.rename(part, dest);
}

/**
 * Makes `dest` a verified copy of `url`: kept when it is there and its digest starts with `expected` (a full digest
 * or, as torch.hub's file names give, a prefix of one), else downloaded through `dest.part` (resuming it) and checked.
 * A mismatch deletes the file.
 */
export async function downloadVerified(
  url: string, dest: string, check: { algorithm: string; expected: string; quiet?: boolean },
): Promise<void> {
  const expected = check.expected.toLowerCase();
  if (fs.existsSync(dest) && (await hashFile(dest, check.algorithm)).startsWith(expected)) return;
  for (let attempt = 0; ; attempt++) {
    const resumed = fs.existsSync(`${dest}.part`);
    if (fs.existsSync(dest)) await fs.promises.rm(dest, { force: true });
    await downloadFile(url, dest, { quiet: check.quiet });
    const got = await hashFile(dest, check.algorithm);
    if (got.startsWith(expected)) return;
    await fs.promises.rm(dest, { force: true });
    // A resumed .part may have been corrupt: one fresh download before giving up.
    if (!resumed || attempt === 1) {
      const what = expected.length < got.length ? `a ${check.algorithm} starting with ${expected}` : `${check.algorithm} ${expected}`;
      throw new Error(`download: ${url}: expected ${what}, got ${got} (the file was deleted; run again)`);
    }
  }
}

/**
 * Makes <root>/stl10_binary complete: returns at once when it is; otherwise downloads (resuming), verifies the md5,
 * extracts into a temporary folder, checks every file's size and renames the folder into place.
 */
export async function downloadStl10(root: string, options: DownloadOptions = {}): Promise<string> {
  const url = options.url ?? process.env.VGGNET_STL10_URL ?? STL10_URL;
  const md5 = (options.md5 ?? STL10_MD5).toLowerCase();
  const counts = md5 === STL10_MD5 ? STL10_COUNTS : undefined;
  const dir = path.join(root, 'stl10_binary');
  if (fs.existsSync(dir) && checkStl10Files(dir, counts).length === 0) return dir;
  await fs.promises.mkdir(root, { recursive: true });
  const archive = path.join(root, 'stl10_binary.tar.gz');

  await downloadVerified(url, archive, { algorithm: 'md5', expected: md5, quiet: options.quiet });

  const tmp = await fs.promises.mkdtemp(path.join(root, '.stl10_binary.extract-'));
  try {
    try {
      await tar.x({ file: archive, cwd: tmp, strict: true });
    } catch (e) {
      throw new Error(`STL10: ${archive}: expected a complete tar.gz archive, got ${(e as Error).message}`);
    }
    const extracted = path.join(tmp, 'stl10_binary');
    const problems = checkStl10Files(extracted, counts);
    if (problems.length) {
      throw new Error(`STL10: ${archive}: extracted files are wrong: ${problems.join('; ').split(tmp).join('<archive>')}`);
    }
    if (fs.existsSync(dir)) await fs.promises.rm(dir, { recursive: true, force: true }); // an incomplete old tree
    await fs.promises.rename(extracted, dir);
  } finally {
    // After a failed extraction tar may still be closing files in tmp (ENOTEMPTY races): retry, and never let the
    // clean-up hide the error that got us here.
    await fs.promises.rm(tmp, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }).catch(() => undefined);
  }
  return dir;
}
