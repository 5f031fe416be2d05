// safetensors files (https://github.com/huggingface/safetensors), byte for byte as the reference writer makes them:
// u64 little-endian header length, a compact JSON header ("__metadata__" first, then tensors in data order),
// padded with spaces to a multiple of 8, then the tensors' bytes. Tensors are ordered by dtype (the writer's
// descending dtype order, so I64 before F32) then by name. Writes go to a temporary file that is fsynced and renamed.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor, DType } from '../tensor';
import type { Module } from '../nn/module';
import { Counter } from '../nn/module';
import { asBuffer } from './bytes';
import { makeDirs, pathArg, readRegularFileSync } from './files';

/** A state dict: tensors by name; int64 scalars (num_batches_tracked) as bigint. */
export type StateRecord = Record<string, Tensor | bigint>;

const DTYPE_INFO: Record<string, { size: number; rank: number }> = {
  // rank: the reference writer's dtype order (its enum order); larger sorts first.
  BOOL: { size: 1, rank: 0 },
  U8: { size: 1, rank: 1 },
  I8: { size: 1, rank: 2 },
  I16: { size: 2, rank: 5 },
  U16: { size: 2, rank: 6 },
  F16: { size: 2, rank: 7 },
  BF16: { size: 2, rank: 8 },
  I32: { size: 4, rank: 9 },
  U32: { size: 4, rank: 10 },
  F32: { size: 4, rank: 11 },
  F64: { size: 8, rank: 12 },
  I64: { size: 8, rank: 13 },
  U64: { size: 8, rank: 14 },
};
const MAX_HEADER = 100_000_000;

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}
export interface ParsedHeader {
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
  dataStart: number;
}

/** Validates the header of a safetensors buffer; every problem is an Error naming `source` and the field. */
export function parseHeader(bytes: Uint8Array, source: string): ParsedHeader {
  const buf = asBuffer(bytes);
  const fail = (msg: string): never => {
    throw new Error(`${source}: not a valid safetensors file: ${msg}`);
  };
  if (buf.length < 8) fail(`${buf.length} bytes, too short for the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER)) fail(`header length ${n} is over the ${MAX_HEADER}-byte limit`);
  if (Number(n) > buf.length - 8) fail(`header length ${n} runs past the end of the file (${buf.length} bytes)`);
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  } catch (e) {
    fail(`header is not JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  // JSON.parse keeps the last of duplicate keys silently; a file naming a tensor twice is ambiguous, so reject it.
  const dup = firstDuplicateKey(buf.toString('utf8', 8, 8 + headerLen));
  if (dup !== null) fail(`tensor name '${dup}' appears more than once in the header`);
  if (Object.prototype.hasOwnProperty.call(header, '__proto__')) fail("'__proto__' is not a valid tensor name");
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as Record<string, unknown>;
    if (typeof e !== 'object' || e === null) fail(`tensor '${name}' is not an object`);
    const dtype = e.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_INFO)) fail(`tensor '${name}': unknown dtype ${JSON.stringify(dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor '${name}': shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    let numel = 1;
    for (const d of shape as number[]) {
      numel *= d;
      if (!Number.isSafeInteger(numel) || numel > dataLen) fail(`tensor '${name}': shape ${JSON.stringify(shape)} is larger than the file`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor '${name}': data_offsets must be two non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as number[];
    const size = DTYPE_INFO[dtype as string].size;
    if (end < begin || end - begin !== numel * size) {
      fail(`tensor '${name}': data_offsets [${begin}, ${end}] hold ${end - begin} bytes, shape ${JSON.stringify(shape)} of ${dtype} needs ${numel * size}`);
    }
    if (end > dataLen) fail(`tensor '${name}': data_offsets end ${end} is past the data (${dataLen} bytes)`);
    entries.set(name, { dtype: dtype as string, shape: shape as number[], begin, end });
  }
  // The tensors must tile the data region exactly: no overlap, no gap, nothing left over.
  const sorted = [...entries.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let pos = 0;
  for (const [name, e] of sorted) {
    if (e.begin !== pos) fail(`tensor '${name}' starts at ${e.begin}, expected ${pos} (tensors overlap or leave a gap)`);
    pos = e.end;
  }
  if (pos !== dataLen) fail(`the tensors cover ${pos} bytes of data but the file holds ${dataLen}`);
  return { entries, metadata, dataStart };
}

/**
 * The first top-level key of a JSON object text that occurs twice, or null. The text must already be valid JSON (it
 * is scanned after JSON.parse accepted it): strings are skipped with their escapes, depth is counted by brackets.
 */
export function firstDuplicateKey(text: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      expectKey = depth === 1 && c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return null;
}

/** Little-endian F32/F64/F16/BF16 bytes as float32 (shared with the PyTorch reader, lib/io/pth.ts). */
export function toFloat32(dtype: string, data: Uint8Array): Float32Array {
  const bytes = asBuffer(data);
  const n = bytes.length / DTYPE_INFO[dtype].size;
  const out = new Float32Array(n);
  if (dtype === 'F32') {
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  if (dtype === 'F64') {
    for (let i = 0; i < n; i++) out[i] = bytes.readDoubleLE(i * 8);
    return out;
  }
  if (dtype === 'BF16') {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u[i] = bytes.readUInt16LE(i * 2) << 16;
    return out;
  }
  if (dtype === 'F16') {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(bytes.readUInt16LE(i * 2));
    return out;
  }
  throw new Error(`cannot convert ${dtype} to float32`);
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * Reads a safetensors buffer: floating tensors become float32 Tensors, I32 int32, U8 uint8, I64 scalars bigint and
 * other I64 tensors int64 Tensors.
 */
export function parseSafetensors(bytes: Uint8Array, source: string, device: 'cpu' | 'cuda' = 'cpu'): { tensors: StateRecord; metadata: Record<string, string> } {
  const buf = asBuffer(bytes);
  const h = parseHeader(buf, source);
  const tensors: StateRecord = {};
  try {
    for (const [name, e] of h.entries) {
      const bytes = buf.subarray(h.dataStart + e.begin, h.dataStart + e.end);
      if (e.dtype === 'I64') {
        const a = new BigInt64Array(bytes.length / 8);
        new Uint8Array(a.buffer).set(bytes);
        tensors[name] = e.shape.length === 0 ? a[0] : Tensor.from(a, e.shape, { device });
      } else if (e.dtype === 'I32') {
        const a = new Int32Array(bytes.length / 4);
        new Uint8Array(a.buffer).set(bytes);
        tensors[name] = Tensor.from(a, e.shape, { device });
      } else if (e.dtype === 'U8') {
        tensors[name] = Tensor.from(Uint8Array.from(bytes), e.shape, { device });
      } else if (['F32', 'F64', 'BF16', 'F16'].includes(e.dtype)) {
        tensors[name] = Tensor.from(toFloat32(e.dtype, bytes), e.shape, { device });
      } else {
        throw new Error(`${source}: tensor '${name}' has dtype ${e.dtype}, which vggnet does not read`);
      }
    }
  } catch (err) {
    for (const v of Object.values(tensors)) if (v instanceof Tensor) v.dispose();
    throw err;
  }
  return { tensors, metadata: h.metadata };
}

export function readSafetensors(file: string, device: 'cpu' | 'cuda' = 'cpu'): { tensors: StateRecord; metadata: Record<string, string> } {
  return parseSafetensors(readRegularFileSync(pathArg(file, 'readSafetensors')), file, device);
}

const ST_DTYPE: Record<DType, string> = { float32: 'F32', bfloat16: 'F32', int32: 'I32', int64: 'I64', uint8: 'U8', int8: 'I8' };

/** The bytes of a safetensors file for these tensors (bfloat16 tensors are written as F32). */
export function serializeSafetensors(tensors: StateRecord, metadata: Record<string, string> = {}): Uint8Array[] {
  const items = Object.entries(tensors).map(([name, v]) => {
    if (typeof v === 'bigint') {
      const a = new BigInt64Array([v]);
      return { name, dtype: 'I64', shape: [] as number[], bytes: Buffer.from(a.buffer) };
    }
    const arr = v.toArray();
    return { name, dtype: ST_DTYPE[v.dtype], shape: v.shape, bytes: Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength) };
  });
  items.sort((a, b) => DTYPE_INFO[b.dtype].rank - DTYPE_INFO[a.dtype].rank || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const it of items) {
    header[it.name] = { dtype: it.dtype, shape: it.shape, data_offsets: [off, off + it.bytes.length] };
    off += it.bytes.length;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const hb = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  return [len, hb, ...items.map((i) => i.bytes)];
}

/** Writes atomically: a temporary file beside the target, fsynced, then renamed over it; the folder is created. */
export function writeFileAtomic(file: string, chunks: readonly Uint8Array[]): void {
  pathArg(file, 'write');
  const dir = path.dirname(path.resolve(file));
  try {
    makeDirs(dir);
  } catch (e) {
    throw new Error(`${file}: could not write: ${(e as Error).message}`);
  }
  const prefix = `.${path.basename(file)}.tmp-`;
  removeStaleTemporaries(dir, prefix);
  const tmp = path.join(dir, `${prefix}${process.pid}-${Date.now()}`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    for (const c of chunks) {
      let off = 0;
      while (off < c.length) off += fs.writeSync(fd, c, off, c.length - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw new Error(`${file}: could not write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); the previous file, if any, is unchanged`);
  }
  try {
    const dfd = fs.openSync(dir, 'r');
    fs.fsyncSync(dfd);
    fs.closeSync(dfd);
  } catch {
    /* some filesystems cannot fsync a directory */
  }
}

/**
 * Deletes temporaries `<prefix><pid>-<time>` left by writers that were killed mid-write (their process is gone), so
 * crashes do not pile up partial checkpoints. Files of live processes (another writer now) are left alone.
 */
function removeStaleTemporaries(dir: string, prefix: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(n.slice(prefix.length).split('-')[0]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) fs.rmSync(path.join(dir, n), { force: true });
  }
}

export function writeSafetensors(file: string, tensors: StateRecord, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, serializeSafetensors(tensors, metadata));
}

/**
 * Copies a state dict into a module's parameters and buffers by name. strict: missing or unexpected names are
 * errors (listed all at once, like PyTorch); a shape mismatch is always an error.
 */
export function loadStateDictInto(
  module: Module, record: StateRecord, options: { strict: boolean; source: string },
): void {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    throw new TypeError(`${options.source}: expected a record of tensors by name, got ${record === null ? 'null' : Array.isArray(record) ? 'an array' : typeof record}`);
  }
  for (const [name, v] of Object.entries(record)) {
    if (!(v instanceof Tensor) && typeof v !== 'bigint') {
      throw new TypeError(`${options.source}: '${name}' is ${v === null ? 'null' : typeof v}, expected a Tensor (or a bigint for num_batches_tracked)`);
    }
  }
  const params = module.namedParameters();
  const buffers = module.namedBuffers();
  const known = new Set<string>([...params.map((p) => p.name), ...buffers.map(([n]) => n)]);
  const missing = [...known].filter((n) => !(n in record));
  const unexpected = Object.keys(record).filter((n) => !known.has(n));
  if (options.strict && (missing.length || unexpected.length)) {
    const parts = [];
    if (missing.length) parts.push(`missing: ${missing.join(', ')}`);
    if (unexpected.length) parts.push(`unexpected: ${unexpected.join(', ')}`);
    throw new Error(`${options.source}: state dict does not match the model (${parts.join('; ')})`);
  }
  // Check every shape before changing anything, so a failed load leaves the model as it was.
  const shapeOf = (v: Tensor | bigint) => (typeof v === 'bigint' ? [] : v.shape);
  const check = (name: string, want: number[]) => {
    const v = record[name];
    if (v === undefined) return;
    const got = shapeOf(v);
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new Error(`${options.source}: '${name}' has shape [${got.join(', ')}], the model expects [${want.join(', ')}]`);
    }
    if (typeof v !== 'bigint' && v.dtype !== 'float32' && v.dtype !== 'bfloat16' && want.length > 0) {
      throw new Error(`${options.source}: '${name}' is ${v.dtype}, expected a floating-point tensor`);
    }
  };
  for (const { name, param } of params) check(name, param.shape);
  for (const [name, b] of buffers) check(name, b instanceof Counter ? [] : b.shape);
  for (const { name, param } of params) {
    const v = record[name];
    if (v instanceof Tensor) param.set(v);
  }
  for (const [name, b] of buffers) {
    const v = record[name];
    if (v === undefined) continue;
    if (b instanceof Counter) {
      b.value = typeof v === 'bigint' ? v : BigInt(Number((v as Tensor).toArray()[0]));
    } else if (v instanceof Tensor) {
      b.copy_(v);
    }
  }
}
