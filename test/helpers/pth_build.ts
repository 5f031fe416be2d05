// Builders of hand-made PyTorch files for the hostile-input and fuzz suites: a state-dict pickle from entry
// descriptions, wrapped in torch.save's zip layout or its legacy stream layout.
import { PickleWriter } from '../../lib/io/pickle';
import { writeZip } from '../../lib/io/zip';

export interface Entry {
  name: string;
  storage?: string; // torch.<storage> (default FloatStorage)
  key?: string;
  numel: number; // the storage's element count as the pickle states it
  offset?: number;
  size: number[];
  stride?: number[];
}

export function rowMajor(size: number[]): number[] {
  return size.map((_, d) => size.slice(d + 1).reduce((a, b) => a * b, 1));
}

/** The pickle of a state dict of these entries (zip form; `legacy` adds the view element). */
export function statePickle(entries: Entry[], legacy = false): Buffer {
  const w = new PickleWriter();
  w.global('collections', 'OrderedDict').emptyTuple().reduce().mark();
  entries.forEach((e, i) => {
    w.str(e.name).global('torch._utils', '_rebuild_tensor_v2').mark();
    w.mark().str('storage').global('torch', e.storage ?? 'FloatStorage').str(e.key ?? String(i)).str('cpu').int(e.numel);
    if (legacy) w.none();
    w.tuple().persistentId();
    w.int(e.offset ?? 0).intTuple(e.size).intTuple(e.stride ?? rowMajor(e.size)).bool(false);
    w.global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  });
  return w.setItems().finish();
}

/** A zip-format .pth of a pickle and storage records (by key). */
export function zipPth(pkl: Buffer, storages: Record<string, Buffer>, extra: { name: string; data: Buffer }[] = []): Buffer {
  return Buffer.concat(writeZip([
    { name: 'archive/data.pkl', data: [pkl] },
    ...Object.entries(storages).map(([k, b]) => ({ name: `archive/data/${k}`, data: [b] })),
    ...extra.map((e) => ({ name: e.name, data: [e.data] })),
    { name: 'archive/version', data: [Buffer.from('3\n')] },
  ]));
}

const p = (build: (w: PickleWriter) => PickleWriter) => build(new PickleWriter()).finish();
/** The legacy stream: magic, protocol 1001, sys info, the pickle, the key list, each storage as int64 count + bytes. */
export function legacyPth(pkl: Buffer, storages: [string, number, Buffer][], opts: { magic?: bigint; protocol?: number; littleEndian?: boolean } = {}): Buffer {
  const magic = Buffer.alloc(11 + 3);
  magic.set([0x80, 2, 0x8a, 10]);
  let m = opts.magic ?? 0x1950a86a20f9469cfc6cn;
  for (let i = 0; i < 10; i++) { magic[4 + i] = Number(m & 0xffn); m >>= 8n; }
  const stop = Buffer.from([0x2e]);
  const info = p((w) => w.emptyDict().mark().str('protocol_version').int(1001).str('little_endian').bool(opts.littleEndian ?? true).setItems());
  // The key list: PROTO 2, EMPTY_LIST, MARK, the keys as BINUNICODE, APPENDS, STOP.
  const list = Buffer.concat([Buffer.from([0x80, 2, 0x5d, 0x28]), ...storages.map(([k]) => { const b = Buffer.from(k); const h = Buffer.alloc(5); h[0] = 0x58; h.writeUInt32LE(b.length, 1); return Buffer.concat([h, b]); }), Buffer.from([0x65, 0x2e])]);
  const data = storages.flatMap(([, n, b]) => { const h = Buffer.alloc(8); h.writeBigInt64LE(BigInt(n)); return [h, b]; });
  return Buffer.concat([magic, stop, p((w) => w.int(opts.protocol ?? 1001)), info, pkl, list, ...data]);
}

export const f32 = (xs: number[]) => Buffer.from(Float32Array.from(xs).buffer);
