// CRC-32 (zip's, polynomial 0xEDB88320) and CRC-32C (Castagnoli, 0x82F63B78: TFRecord framing), both reflected with
// init and final xor 0xFFFFFFFF. zlib.crc32 (Node >= 20.15) does CRC-32 natively; the table form is the fallback
// and the only CRC-32C here.
import * as zlib from 'zlib';

function table(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? poly ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}
const CRC32_TABLE = table(0xedb88320);
const CRC32C_TABLE = table(0x82f63b78);

function crcTable(t: Uint32Array, buf: Uint8Array, prev: number): number {
  let c = ~prev >>> 0;
  for (let i = 0; i < buf.length; i++) c = t[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const nativeCrc32 = (zlib as unknown as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/** zip's CRC-32 of `buf`, continuing from `prev` (the CRC of the bytes before it). */
export function crc32(buf: Uint8Array, prev = 0): number {
  return nativeCrc32 ? nativeCrc32(buf, prev) >>> 0 : crcTable(CRC32_TABLE, buf, prev);
}

/** CRC-32C of `buf`, continuing from `prev`. */
export function crc32c(buf: Uint8Array, prev = 0): number {
  return crcTable(CRC32C_TABLE, buf, prev);
}

/** TFRecord's masked CRC-32C: rotated right by 15 bits plus a constant, so CRCs of CRCs stay well mixed. */
export function maskedCrc32c(buf: Uint8Array): number {
  const c = crc32c(buf);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}
