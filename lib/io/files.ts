// Reading files that must be regular files. A FIFO, socket, device or folder given where a file is expected must be
// an error naming it, never a hang: a plain open() of a FIFO blocks until some writer appears, and reading a device
// (/dev/zero, a tty) never ends. So the file is opened non-blocking, checked with fstat on that same descriptor (no
// window for a swap between check and read), and only then read. Every reader of user-named files goes through here
// (safetensors, .pth, checkpoints, STL10's text files, images).
import * as fs from 'fs';
import * as path from 'path';

/** What a non-regular file is, in words ("a folder", "a FIFO (named pipe)", ...). */
export function fileKind(st: fs.Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/** The error of a path that is not a regular file: "<file>: expected a regular file, got a FIFO (named pipe)". */
export class NotRegularFileError extends Error {
  constructor(readonly file: string, readonly kind: string) {
    super(`${file}: expected a regular file, got ${kind}`);
    this.name = 'NotRegularFileError';
  }
}

const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** The error of a failed open: what the path is when it is not a regular file (a socket cannot be opened: ENXIO). */
function openError(file: string, e: unknown): Error {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return new NotRegularFileError(file, fileKind(st));
  } catch {
    /* missing or unreadable: the open's own error says it */
  }
  return new Error(`${file}: cannot read (${errnoOf(e)})`);
}

/** `file` as a path, or a TypeError (fs's own says "The "path" argument must be of type string"). */
export function pathArg(file: unknown, what: string): string {
  if (typeof file !== 'string' || file.length === 0) throw new TypeError(`${what}: expected a file path, got ${file === '' ? 'an empty string' : file === null ? 'null' : typeof file}`);
  return file;
}

/** Throws NotRegularFileError when `file` (links followed) exists but is not a regular file; missing files pass. */
export function checkRegularFile(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return; // the reader that follows reports what is wrong (missing, unreadable)
  }
  if (!st.isFile()) throw new NotRegularFileError(file, fileKind(st));
}

/**
 * The bytes of a regular file. Errors: NotRegularFileError for anything else, `<file>: cannot read (<code>)` when
 * it cannot be opened or read, and `<file>: ... over the limit` when it is larger than `maxBytes`.
 */
export function readRegularFileSync(file: string, maxBytes = 2 ** 31 - 1): Buffer {
  const fd = openRegularFileSync(file);
  try {
    const st = fs.fstatSync(fd);
    if (st.size > maxBytes) throw new RangeError(`${file}: ${st.size} bytes is over the ${maxBytes}-byte limit of what is read here`);
    const buf = Buffer.allocUnsafe(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = fs.readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break; // shrank while being read: what was there
      off += n;
    }
    return off === buf.length ? buf : buf.subarray(0, off);
  } catch (e) {
    if (e instanceof RangeError) throw e;
    throw new Error(`${file}: cannot read (${errnoOf(e)})`);
  } finally {
    fs.closeSync(fd);
  }
}

/** readRegularFileSync without blocking the event loop (images are decoded many at a time). */
export async function readRegularFile(file: string, maxBytes = 2 ** 31 - 1): Promise<Buffer> {
  pathArg(file, 'read');
  let h: fs.promises.FileHandle;
  try {
    h = await fs.promises.open(file, OPEN_FLAGS);
  } catch (e) {
    throw openError(file, e);
  }
  try {
    const st = await h.stat();
    if (!st.isFile()) throw new NotRegularFileError(file, fileKind(st));
    if (st.size > maxBytes) throw new RangeError(`${file}: ${st.size} bytes is over the ${maxBytes}-byte limit of what is read here`);
    const buf = Buffer.allocUnsafe(st.size);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await h.read(buf, off, buf.length - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return off === buf.length ? buf : buf.subarray(0, off);
  } catch (e) {
    if (e instanceof NotRegularFileError || e instanceof RangeError) throw e;
    throw new Error(`${file}: cannot read (${errnoOf(e)})`);
  } finally {
    await h.close();
  }
}

/** Opens a regular file for reading (non-blocking open, fstat check) and returns its descriptor; the caller closes it. */
export function openRegularFileSync(file: string): number {
  pathArg(file, 'read');
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (e) {
    throw openError(file, e);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new NotRegularFileError(file, fileKind(st));
  } catch (e) {
    fs.closeSync(fd);
    if (e instanceof NotRegularFileError) throw e;
    throw new Error(`${file}: cannot read (${errnoOf(e)})`);
  }
  return fd;
}

/**
 * Creates `dir` and its missing parents, one at a time from the nearest existing ancestor, so a failure reports the
 * real cause at the folder where it happened (fs.mkdirSync's recursive form reports ENOENT for a missing parent on a
 * read-only mount, where the cause is EROFS). Errors: `<dir>: cannot create the folder (<code> at <path>)`, or
 * `... <path> is <kind>, not a folder`.
 */
export function makeDirs(dir: string): void {
  const missing: string[] = [];
  let p = path.resolve(dir);
  for (;;) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code; // ENOTDIR: a file above; found and named on the way up
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new Error(`${dir}: cannot create the folder (${errnoOf(e)} at ${p})`);
    }
    if (st) {
      if (!st.isDirectory()) throw new Error(`${dir}: cannot create the folder: ${p} is ${fileKind(st)}, not a folder`);
      break;
    }
    missing.unshift(p);
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  for (const m of missing) {
    try {
      fs.mkdirSync(m);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`${dir}: cannot create the folder (${errnoOf(e)} at ${m})`);
    }
  }
}

/**
 * Checks, before a long run, that `dir` can take files of `bytes` bytes: creates it (makeDirs), writes, fsyncs and
 * removes a small probe file, and compares the free space (statfs) with `bytes`. `what` names the folder's use in
 * errors ("checkpoint folder"). A read-only or full folder was otherwise found only when the first checkpoint was
 * written, after a whole epoch of training.
 */
export function probeWritableDir(dir: string, bytes: number, what: string): void {
  try {
    makeDirs(dir);
  } catch (e) {
    throw new Error(`${what} ${(e as Error).message}`);
  }
  const probe = path.join(dir, `.vggnet-probe-${process.pid}-${Date.now()}`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(probe, 'w');
    const block = Buffer.alloc(4096);
    let off = 0;
    while (off < block.length) off += fs.writeSync(fd, block, off, block.length - off);
    fs.fsyncSync(fd);
  } catch (e) {
    throw new Error(`${what} ${dir}: cannot write there (${errnoOf(e)})`);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(probe, { force: true });
  }
  const statfs = (fs as unknown as { statfsSync?: (p: string) => { bavail: number | bigint; bsize: number | bigint } }).statfsSync;
  if (!statfs) return;
  let free: number;
  try {
    const s = statfs(dir);
    free = Number(s.bavail) * Number(s.bsize);
  } catch {
    return; // no statfs here: the write above is what we can check
  }
  if (free < bytes) {
    const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    throw new Error(`${what} ${dir}: not enough free space: a checkpoint needs about ${mb(bytes)}, ${mb(free)} are free (ENOSPC would come at the first save)`);
  }
}
