// An independent protobuf wire-format decoder for tests (the library encodes with protobufjs): varints, 64-bit,
// length-delimited and 32-bit fields, decoded into { field number: values[] } without any schema.
export type Field = { wire: number; value: bigint | Buffer | number };
export type Message = Map<number, Field[]>;

export function decodeMessage(buf: Buffer): Message {
  const out: Message = new Map();
  let p = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (p >= buf.length) throw new Error('protobuf: varint runs past the end');
      const b = buf[p++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      if (shift > 63n) throw new Error('protobuf: varint longer than 10 bytes');
    }
  };
  while (p < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    let value: bigint | Buffer | number;
    if (wire === 0) value = varint();
    else if (wire === 1) { value = buf.readDoubleLE(p); p += 8; }
    else if (wire === 2) { const n = Number(varint()); if (p + n > buf.length) throw new Error('protobuf: field runs past the end'); value = buf.subarray(p, p + n); p += n; }
    else if (wire === 5) { value = buf.readFloatLE(p); p += 4; }
    else throw new Error(`protobuf: wire type ${wire} at ${p}`);
    if (!out.has(field)) out.set(field, []);
    out.get(field)!.push({ wire, value });
  }
  return out;
}

export const bytes = (m: Message, f: number): Buffer[] => (m.get(f) ?? []).map((x) => x.value as Buffer);
export const str = (m: Message, f: number): string | undefined => bytes(m, f)[0]?.toString('utf8');
export const num = (m: Message, f: number): number | undefined => {
  const v = m.get(f)?.[0]?.value;
  return v === undefined ? undefined : typeof v === 'bigint' ? Number(BigInt.asIntN(64, v)) : (v as number);
};
export const sub = (m: Message, f: number): Message[] => bytes(m, f).map(decodeMessage);
/** A packed (or unpacked) repeated varint field. */
export function varints(m: Message, f: number): number[] {
  const out: number[] = [];
  for (const x of m.get(f) ?? []) {
    if (x.wire === 0) out.push(Number(BigInt.asIntN(64, x.value as bigint)));
    else {
      const b = x.value as Buffer;
      for (let p = 0; p < b.length;) {
        let v = 0n;
        for (let shift = 0n; ; shift += 7n) {
          const c = b[p++];
          v |= BigInt(c & 0x7f) << shift;
          if (!(c & 0x80)) break;
        }
        out.push(Number(BigInt.asIntN(64, v)));
      }
    }
  }
  return out;
}
