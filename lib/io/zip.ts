// The zip container of PyTorch's checkpoints: stored (uncompressed) entries only, which is all torch.save writes.
// The reader validates every offset and size against the file (ZIP64 records included) and checks each entry's CRC-32
// when it is read; the writer aligns each entry's data to 64 bytes with a padding extra field, as torch's writer does.
import { crc32 } from './crc';

export interface ZipEntry {
  name: string;
  /** Byte range of the entry's data in the file. */
  start: number;
  size: number;
  crc: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_LOCATOR64 = 0x07064b50;
const ALIGN = 64;
const PAD_ID = 0x4246; // 'FB', the id torch's writer gives its padding field

export function isZip(buf: Buffer): boolean {
  return buf.length >= 4 && buf.readUInt32LE(0) === SIG_LOCAL;
}

/** Reads a zip's central directory. Every problem is an Error `${source}: not a valid zip archive: ...`. */
export function readZipDirectory(buf: Buffer, source: string): Map<string, ZipEntry> {
  const fail = (msg: string): never => {
    throw new Error(`${source}: not a valid zip archive: ${msg}`);
  };
  // The end-of-central-directory record is in the last 22 + 65535 (comment) bytes.
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 0xffff); i--) {
    if (buf.readUInt32LE(i) === SIG_EOCD && i + 22 + buf.readUInt16LE(i + 20) === buf.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) fail(`no end-of-central-directory record (${buf.length} bytes; truncated?)`);
  let count = buf.readUInt16LE(eocd + 10);
  let cdSize = buf.readUInt32LE(eocd + 12);
  let cdOffset = buf.readUInt32LE(eocd + 16);
  if (buf.readUInt16LE(eocd + 4) !== 0 || buf.readUInt16LE(eocd + 6) !== 0) fail('multi-disk archives are not read');
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || buf.readUInt32LE(loc) !== SIG_LOCATOR64) fail('ZIP64 sizes without a ZIP64 locator');
    const at = big(buf.readBigUInt64LE(loc + 8), 'ZIP64 record offset', fail);
    if (at + 56 > loc || buf.readUInt32LE(at) !== SIG_EOCD64) fail(`no ZIP64 end-of-central-directory record at ${at}`);
    count = big(buf.readBigUInt64LE(at + 32), 'ZIP64 entry count', fail);
    cdSize = big(buf.readBigUInt64LE(at + 40), 'ZIP64 central directory size', fail);
    cdOffset = big(buf.readBigUInt64LE(at + 48), 'ZIP64 central directory offset', fail);
  }
  if (cdOffset + cdSize > eocd) fail(`central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at ${eocd}`);
  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  for (let k = 0; k < count; k++) {
    if (p + 46 > cdOffset + cdSize || buf.readUInt32LE(p) !== SIG_CENTRAL) fail(`central directory entry ${k} at ${p} is missing or cut short`);
    const flags = buf.readUInt16LE(p + 8);
    const method = buf.readUInt16LE(p + 10);
    const crc = buf.readUInt32LE(p + 16);
    let csize = buf.readUInt32LE(p + 20);
    let size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    let local = buf.readUInt32LE(p + 42);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdOffset + cdSize) fail(`central directory entry ${k} runs past the directory`);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    // ZIP64 extra field: the 8-byte values of exactly the fields that read 0xFFFFFFFF, in this order.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen;) {
      const id = buf.readUInt16LE(e);
      const len = buf.readUInt16LE(e + 2);
      if (e + 4 + len > p + 46 + nameLen + extraLen) fail(`entry '${name}': extra field runs past its header`);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (what: string): number => {
          if (q + 8 > e + 4 + len) fail(`entry '${name}': ZIP64 field has no ${what}`);
          const v = big(buf.readBigUInt64LE(q), `entry '${name}' ${what}`, fail);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next('size');
        if (csize === 0xffffffff) csize = next('compressed size');
        if (local === 0xffffffff) local = next('header offset');
      }
      e += 4 + len;
    }
    if (flags & 1) fail(`entry '${name}' is encrypted`);
    if (method !== 0) fail(`entry '${name}' is compressed (method ${method}); PyTorch writes stored entries only`);
    if (csize !== size) fail(`entry '${name}' is stored but its sizes differ (${csize} vs ${size})`);
    if (entries.has(name)) fail(`entry '${name}' appears twice`);
    if (local + 30 > cdOffset || buf.readUInt32LE(local) !== SIG_LOCAL) fail(`entry '${name}': no local header at ${local}`);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    if (start + size > cdOffset) fail(`entry '${name}': data [${start}, ${start + size}) runs into the central directory at ${cdOffset}`);
    entries.set(name, { name, start, size, crc });
    p = end;
  }
  return entries;
}

function big(v: bigint, what: string, fail: (m: string) => never): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${v} is too large`);
  return Number(v);
}

/** The bytes of an entry, after checking its CRC-32. */
export function zipEntryData(buf: Buffer, e: ZipEntry, source: string): Buffer {
  const data = buf.subarray(e.start, e.start + e.size);
  const got = crc32(data);
  if (got !== e.crc) {
    throw new Error(`${source}: zip entry '${e.name}' is corrupt: CRC-32 ${hex(got)}, the directory says ${hex(e.crc)}`);
  }
  return data;
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/** A zip archive of stored entries, each entry's data 64-byte aligned; returned as chunks for writeFileAtomic. */
export function writeZip(files: { name: string; data: Buffer[] }[]): Buffer[] {
  const out: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, 'utf8');
    const size = f.data.reduce((a, b) => a + b.length, 0);
    const crc = f.data.reduce((c, b) => crc32(b, c), 0);
    // Padding extra field: 4 bytes of header plus enough to bring the data to the next multiple of 64.
    const pad = (ALIGN - ((off + 30 + name.length + 4) % ALIGN)) % ALIGN;
    const extra = Buffer.alloc(4 + pad, 'Z');
    extra.writeUInt16LE(PAD_ID, 0);
    extra.writeUInt16LE(pad, 2);
    if (off > 0xffffffff || size > 0xffffffff || files.length > 0xffff) {
      throw new Error(`zip: '${f.name}' lies past 4 GiB or the archive has over 65535 entries; ZIP64 output is not written`);
    }
    const local = Buffer.alloc(30);
    local.writeUInt32LE(SIG_LOCAL, 0);
    local.writeUInt16LE(20, 4); // version needed: 2.0
    local.writeUInt16LE(0, 6); // flags
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt32LE(0, 10); // time and date: 0 (the output does not depend on when it was written)
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(size, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(extra.length, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(SIG_CENTRAL, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(size, 20);
    cd.writeUInt32LE(size, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(off, 42);
    central.push(cd, name);
    out.push(local, name, extra, ...f.data);
    off += 30 + name.length + extra.length + size;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0);
  if (off > 0xffffffff) throw new Error('zip: the archive is over 4 GiB; ZIP64 output is not written');
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(SIG_EOCD, 0);
  eocd.writeUInt16LE(files.length, 8);
  eocd.writeUInt16LE(files.length, 10);
  eocd.writeUInt32LE(cdSize, 12);
  eocd.writeUInt32LE(off, 16);
  return [...out, ...central, eocd];
}
