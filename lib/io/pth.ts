// PyTorch checkpoints (torch.save of a state dict), read and written without Python.
//
// Two formats are read: the zip archive torch.save has written since PyTorch 1.6 (<archive>/data.pkl, one record
// <archive>/data/<key> per storage, <archive>/version) and the older stream torchvision's 2017 VGG files use (pickles
// of a magic number, the protocol version 1001 and a sys-info dict, then the state dict's pickle, the list of storage
// keys, and each storage as an int64 element count followed by its bytes). The pickles go through lib/io/pickle.ts
// with the allow-list of torch.load(weights_only=True) for state dicts: collections.OrderedDict, torch._utils'
// _rebuild_tensor / _rebuild_tensor_v2 / _rebuild_parameter, torch.Size and the torch.*Storage types. Each tensor's
// dtype, size, stride and storage offset are checked against its storage before a byte is copied.
//
// The writer makes the zip format with one storage per tensor, every element in row-major order; torch.load(...,
// weights_only=True) reads it back.
import * as fs from 'fs';
import { Tensor } from '../tensor';
import { PickleCallable, PickleGlobal, PickleWriter, describe, unpickle } from './pickle';
import { isZip, readZipDirectory, writeZip, zipEntryData } from './zip';
import { StateRecord, toFloat32, writeFileAtomic } from './safetensors';
import { asBuffer } from './bytes';
import { readRegularFileSync } from './files';

type StorageDtype = 'F32' | 'F64' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
const STORAGE_TYPES: Record<string, { dtype: StorageDtype; size: number }> = {
  FloatStorage: { dtype: 'F32', size: 4 },
  DoubleStorage: { dtype: 'F64', size: 8 },
  HalfStorage: { dtype: 'F16', size: 2 },
  BFloat16Storage: { dtype: 'BF16', size: 2 },
  LongStorage: { dtype: 'I64', size: 8 },
  IntStorage: { dtype: 'I32', size: 4 },
  ShortStorage: { dtype: 'I16', size: 2 },
  CharStorage: { dtype: 'I8', size: 1 },
  ByteStorage: { dtype: 'U8', size: 1 },
  BoolStorage: { dtype: 'BOOL', size: 1 },
};

class StorageType {
  constructor(readonly name: string, readonly dtype: StorageDtype, readonly size: number) {}
}
/** A storage as the pickle names it: `numel` elements of `type` from element `base` of the stored bytes of `key`. */
class StorageRef {
  constructor(readonly type: StorageType, readonly key: string, readonly base: number, readonly numel: number) {}
}
class TensorRef {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly size: number[], readonly stride: number[]) {}
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;
const ALLOWED_NOTE = 'collections.OrderedDict, torch._utils._rebuild_tensor(_v2), torch._utils._rebuild_parameter, torch.Size and torch.*Storage';

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isTuple = (v: unknown): v is readonly unknown[] => Array.isArray(v) && Object.isFrozen(v);

function intTuple(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || !v.every((d) => isInt(d) && d >= 0)) throw new Error(`${what} must be a tuple of non-negative integers, got ${describe(v)}`);
  return v as number[];
}

function rebuildTensor(args: unknown[], min: number, max: number): TensorRef {
  if (args.length < min || args.length > max) throw new Error(`expected ${min === max ? min : `${min}-${max}`} arguments, got ${args.length}`);
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) throw new Error(`the storage is ${describe(storage)}, not a storage`);
  if (!isInt(offset) || offset < 0) throw new Error(`storage offset ${describe(offset)} is not a non-negative integer`);
  const sz = intTuple(size, 'size');
  const st = intTuple(stride, 'stride');
  if (sz.length !== st.length) throw new Error(`size ${describe(size)} and stride ${describe(stride)} differ in length`);
  return new TensorRef(storage, offset, sz, st);
}

/** The allow-list: what a state dict's pickle may name, and what each becomes. */
const GLOBALS: ReadonlyMap<string, PickleCallable | PickleGlobal> = new Map<string, PickleCallable | PickleGlobal>([
  ['collections.OrderedDict', new PickleCallable('collections.OrderedDict', (args) => {
    if (args.length) throw new Error('expected no arguments');
    return new Map();
  })],
  ['torch._utils._rebuild_tensor_v2', new PickleCallable('torch._utils._rebuild_tensor_v2', (a) => rebuildTensor(a, 6, 7))],
  ['torch._utils._rebuild_tensor', new PickleCallable('torch._utils._rebuild_tensor', (a) => rebuildTensor(a, 4, 4))],
  ['torch._utils._rebuild_parameter', new PickleCallable('torch._utils._rebuild_parameter', (a) => {
    if (a.length !== 3 || !(a[0] instanceof TensorRef)) throw new Error(`expected (tensor, requires_grad, hooks), got ${describe(a)}`);
    return a[0];
  })],
  ['torch.Size', new PickleCallable('torch.Size', (a) => {
    if (a.length !== 1 || !Array.isArray(a[0])) throw new Error(`expected one tuple, got ${describe(a)}`);
    return Object.freeze(intTuple(a[0], 'torch.Size').slice());
  })],
  ...Object.entries(STORAGE_TYPES).map(([n, t]) => [`torch.${n}`, new PickleGlobal(`torch.${n}`, new StorageType(n, t.dtype, t.size))] as const),
]);

/**
 * persistent_load of torch.save: ('storage', storage type, key, location, numel) in the zip format, plus
 * view_metadata (view key, offset, numel) or None in the legacy one. Locations (cpu, cuda:N) are all read to the host.
 */
function storageLoader(legacy: boolean, roots: Map<string, { type: StorageType; numel: number }>) {
  return (pid: unknown): StorageRef => {
    if (!isTuple(pid) || pid.length !== (legacy ? 6 : 5)) throw new Error(`expected a ${legacy ? 6 : 5}-tuple ('storage', type, key, location, numel${legacy ? ', view' : ''})`);
    const [kind, typeG, key, location, numel, view] = pid;
    if (kind !== 'storage') throw new Error(`persistent ids of kind ${describe(kind)} are not read; only storages`);
    if (!(typeG instanceof PickleGlobal) || !(typeG.value instanceof StorageType)) throw new Error(`storage type ${describe(typeG)} is not a torch.*Storage`);
    const type = typeG.value as StorageType;
    if (typeof key !== 'string' || key.length === 0 || key.length > 200) throw new Error(`storage key ${describe(key)} is not a short string`);
    if (typeof location !== 'string') throw new Error(`storage location ${describe(location)} is not a string`);
    if (!isInt(numel) || numel < 0) throw new Error(`storage size ${describe(numel)} is not a non-negative integer`);
    const seen = roots.get(key);
    if (seen && (seen.type !== type || seen.numel !== numel)) {
      throw new Error(`storage '${key}' is named as ${seen.type.name} of ${seen.numel} and as ${type.name} of ${numel}`);
    }
    roots.set(key, { type, numel });
    if (view === undefined || view === null) return new StorageRef(type, key, 0, numel);
    if (!isTuple(view) || view.length !== 3 || !isInt(view[1]) || !isInt(view[2]) || view[1] < 0 || view[2] < 0) {
      throw new Error(`storage view ${describe(view)} is not (key, offset, numel)`);
    }
    if (view[1] + view[2] > numel) throw new Error(`storage view [${view[1]}, ${view[1] + view[2]}) runs past storage '${key}' of ${numel} elements`);
    return new StorageRef(type, key, view[1], view[2]);
  };
}

/** The top-level state dict: a dict of tensors by name (int64 scalars become bigint). */
function stateDictRefs(value: unknown, source: string): Map<string, TensorRef> {
  if (!(value instanceof Map)) throw new Error(`${source}: the pickle holds ${describe(value)}, not a state dict (a dict of tensors by name)`);
  const out = new Map<string, TensorRef>();
  for (const [k, v] of value) {
    if (typeof k !== 'string') throw new Error(`${source}: state dict key ${describe(k)} is not a string`);
    if (!(v instanceof TensorRef)) {
      const keys = [...value.keys()].slice(0, 8).map((x) => describe(x)).join(', ');
      throw new Error(`${source}: '${k}' is ${describe(v)}, not a tensor; expected a state dict (a checkpoint holding one under another key? its keys: ${keys})`);
    }
    if (k === '__proto__') throw new Error(`${source}: '__proto__' is not a valid tensor name`);
    out.set(k, v);
  }
  return out;
}

/** One tensor's elements, gathered in row-major order from its storage's bytes after checking every bound. */
function materialize(name: string, t: TensorRef, bytes: Buffer, source: string, device: 'cpu' | 'cuda'): Tensor | bigint {
  const { storage: s, offset, size, stride } = t;
  const { dtype, size: es } = s.type;
  const fail = (msg: string): never => {
    throw new Error(`${source}: tensor '${name}' (${s.type.name}, size [${size.join(', ')}], stride [${stride.join(', ')}], offset ${offset}): ${msg}`);
  };
  let numel = 1;
  for (const d of size) {
    numel *= d;
    if (numel > 2 ** 40) fail('has more elements than any file holds');
  }
  // Elements must be distinct (no zero or overlapping strides): then the tensor spans at least numel elements of
  // its storage, which bounds what is allocated by what the file holds.
  const dims = size.map((d, i) => ({ d, s: stride[i] })).filter((x) => x.d > 1).sort((a, b) => a.s - b.s);
  let need = 1;
  for (const { d, s: st } of dims) {
    if (st < need) fail('has overlapping elements (a zero or too small stride); only tensors with distinct elements are read');
    need = st * d;
  }
  const last = numel === 0 ? 0 : size.reduce((a, d, i) => a + (d - 1) * stride[i], 0);
  if (numel > 0 && offset + last >= s.numel) fail(`reaches element ${offset + last} of a storage of ${s.numel}`);
  const start = (s.base + offset) * es;
  const span = numel === 0 ? 0 : (last + 1) * es;
  if (start + span > bytes.length) fail(`needs bytes [${start}, ${start + span}) of a storage of ${bytes.length}`);
  const region = bytes.subarray(start, start + span);
  // Row-major tensors copy straight; others are gathered element by element from the region.
  let contiguous = true;
  for (let i = size.length - 1, want = 1; i >= 0; i--) {
    if (size[i] !== 1 && stride[i] !== want) contiguous = false;
    want *= size[i];
  }
  const order = (): Int32Array => {
    if (numel >= 2 ** 31) fail('is too large to gather');
    const idx = new Int32Array(numel);
    const pos = new Array(size.length).fill(0);
    let off = 0;
    for (let k = 0; k < numel; k++) {
      idx[k] = off;
      for (let i = size.length - 1; i >= 0; i--) {
        if (++pos[i] < size[i]) {
          off += stride[i];
          break;
        }
        off -= (size[i] - 1) * stride[i];
        pos[i] = 0;
      }
    }
    return idx;
  };
  if (dtype === 'F32' || dtype === 'F64' || dtype === 'F16' || dtype === 'BF16') {
    const all = toFloat32(dtype, region);
    const out = contiguous ? all : Float32Array.from(order(), (i) => all[i]);
    return Tensor.from(out, size, { device });
  }
  if (dtype === 'I64') {
    const all = new BigInt64Array(region.length / 8);
    new Uint8Array(all.buffer).set(region);
    const out = contiguous ? all : BigInt64Array.from(order(), (i) => all[i]);
    return size.length === 0 ? out[0] : Tensor.from(out, size, { device });
  }
  if (dtype === 'I32') {
    const all = new Int32Array(region.length / 4);
    new Uint8Array(all.buffer).set(region);
    return Tensor.from(contiguous ? all : Int32Array.from(order(), (i) => all[i]), size, { device });
  }
  if (dtype === 'U8' || dtype === 'BOOL') {
    const all = Uint8Array.from(region);
    return Tensor.from(contiguous ? all : Uint8Array.from(order(), (i) => all[i]), size, { device });
  }
  return fail(`has dtype ${s.type.name}, which vggnet does not read`);
}

function unpickleStateDict(buf: Buffer, offset: number, source: string, legacy: boolean, roots: Map<string, { type: StorageType; numel: number }>) {
  return unpickle(buf, offset, { source, globals: GLOBALS, allowedNote: ALLOWED_NOTE, persistentLoad: storageLoader(legacy, roots) });
}

function readZipFormat(buf: Buffer, source: string) {
  const entries = readZipDirectory(buf, source);
  const pkl = [...entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (!pkl) throw new Error(`${source}: a zip archive without <name>/data.pkl: not a torch.save file (entries: ${[...entries.keys()].slice(0, 5).join(', ')})`);
  const prefix = pkl.slice(0, -'data.pkl'.length);
  const order = entries.get(`${prefix}byteorder`);
  if (order) {
    const bo = zipEntryData(buf, order, source).toString('latin1').trim();
    if (bo !== 'little') throw new Error(`${source}: byteorder '${bo.slice(0, 20)}'; only little-endian files are read`);
  }
  const roots = new Map<string, { type: StorageType; numel: number }>();
  const { value, end } = unpickleStateDict(zipEntryData(buf, entries.get(pkl)!, source), 0, `${source}: ${pkl}`, false, roots);
  const pklLen = entries.get(pkl)!.size;
  if (end !== pklLen) throw new Error(`${source}: ${pkl}: ${pklLen - end} bytes after the pickle's STOP`);
  const refs = stateDictRefs(value, source);
  const data = new Map<string, Buffer>();
  for (const [key, { type, numel }] of roots) {
    const e = entries.get(`${prefix}data/${key}`);
    if (!e) throw new Error(`${source}: storage '${key}' has no record ${prefix}data/${key}`);
    if (e.size !== numel * type.size) {
      throw new Error(`${source}: storage '${key}' holds ${e.size} bytes; ${numel} elements of ${type.name} need ${numel * type.size}`);
    }
    data.set(key, zipEntryData(buf, e, source));
  }
  return { refs, data };
}

function readLegacyFormat(buf: Buffer, source: string) {
  // The pickles around the state dict's hold plain values: no globals at all.
  const header = (offset: number) => unpickle(buf, offset, { source, globals: new Map(), allowedNote: 'plain values in the pickles around it' });
  const magic = header(0);
  if (magic.value !== LEGACY_MAGIC) throw new Error(`${source}: not a PyTorch file: it starts with a pickle of ${describe(magic.value)}, not torch.save's magic number`);
  const proto = header(magic.end);
  if (proto.value !== LEGACY_PROTOCOL) throw new Error(`${source}: legacy torch.save protocol version ${describe(proto.value)}; only ${LEGACY_PROTOCOL} is read`);
  const info = header(proto.end);
  if (!(info.value instanceof Map) || info.value.get('little_endian') !== true) {
    throw new Error(`${source}: sys info ${describe(info.value)} does not say little_endian=True; only little-endian files are read`);
  }
  const roots = new Map<string, { type: StorageType; numel: number }>();
  const main = unpickleStateDict(buf, info.end, source, true, roots);
  const refs = stateDictRefs(main.value, source);
  const keysP = header(main.end);
  const keys = keysP.value;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new Error(`${source}: the storage key list is ${describe(keys)}, not a list of strings`);
  let pos = keysP.end;
  const data = new Map<string, Buffer>();
  for (const key of keys as string[]) {
    const root = roots.get(key);
    if (!root) throw new Error(`${source}: storage '${key}' is listed but no tensor uses it`);
    if (data.has(key)) throw new Error(`${source}: storage '${key}' is listed twice`);
    if (pos + 8 > buf.length) throw new Error(`${source}: storage '${key}' at byte ${pos}: the file ends before its size (truncated?)`);
    const n = buf.readBigInt64LE(pos);
    if (n !== BigInt(root.numel)) throw new Error(`${source}: storage '${key}' at byte ${pos} says ${n} elements, the pickle ${root.numel}`);
    const bytes = root.numel * root.type.size;
    if (pos + 8 + bytes > buf.length) throw new Error(`${source}: storage '${key}' needs bytes [${pos + 8}, ${pos + 8 + bytes}), the file has ${buf.length} (truncated?)`);
    data.set(key, buf.subarray(pos + 8, pos + 8 + bytes));
    pos += 8 + bytes;
  }
  for (const key of roots.keys()) if (!data.has(key)) throw new Error(`${source}: storage '${key}' is used but its data is not in the file`);
  if (pos !== buf.length) throw new Error(`${source}: ${buf.length - pos} bytes after the last storage`);
  return { refs, data };
}

/** Which torch.save format a buffer is in, or null. */
export function pthFormat(bytes: Uint8Array): 'zip' | 'legacy' | 'tar' | null {
  const buf = asBuffer(bytes);
  if (isZip(buf)) return 'zip';
  if (buf.length >= 262 && buf.toString('latin1', 257, 262) === 'ustar') return 'tar';
  if (buf.length >= 2 && buf[0] === 0x80 && buf[1] >= 2 && buf[1] <= 5) return 'legacy';
  return null;
}

/** Reads a torch.save'd state dict: float tensors become float32, int64 scalars bigint (as readSafetensors does). */
export function parsePth(bytes: Uint8Array, source: string, device: 'cpu' | 'cuda' = 'cpu'): { tensors: StateRecord } {
  const buf = asBuffer(bytes);
  const format = pthFormat(buf);
  if (format === null) throw new Error(`${source}: not a PyTorch file (neither a zip archive nor a pickle stream; ${buf.length} bytes)`);
  if (format === 'tar') throw new Error(`${source}: a tar-format PyTorch file (written by PyTorch before 0.1.10), which is not read; load it with torch.load and save it again`);
  const { refs, data } = format === 'zip' ? readZipFormat(buf, source) : readLegacyFormat(buf, source);
  // More elements than the file has bytes can only come from tensors sharing storage; allow some, not a bomb.
  let total = 0;
  for (const t of refs.values()) total += t.size.reduce((a, b) => a * b, 1);
  if (total > 4 * buf.length + 1024) throw new Error(`${source}: its tensors claim ${total} elements from a file of ${buf.length} bytes`);
  const tensors: StateRecord = {};
  try {
    for (const [name, t] of refs) tensors[name] = materialize(name, t, data.get(t.storage.key)!, source, device);
  } catch (e) {
    for (const v of Object.values(tensors)) if (v instanceof Tensor) v.dispose();
    throw e;
  }
  return { tensors };
}

export function readPth(file: string, device: 'cpu' | 'cuda' = 'cpu'): { tensors: StateRecord } {
  return parsePth(readRegularFileSync(file), file, device);
}

const STORAGE_OF = { float32: 'FloatStorage', bfloat16: 'FloatStorage', int32: 'IntStorage', int64: 'LongStorage', uint8: 'ByteStorage', int8: 'CharStorage' } as const;

/** The bytes of a torch.save zip archive of this state dict (bfloat16 tensors are written as float32). */
export function serializePth(tensors: StateRecord): Uint8Array[] {
  const w = new PickleWriter();
  const orderedDict = () => w.global('collections', 'OrderedDict').emptyTuple().reduce();
  const storages: { name: string; data: Buffer[] }[] = [];
  orderedDict().mark();
  Object.entries(tensors).forEach(([name, v], i) => {
    const key = String(i);
    let bytes: Buffer, shape: number[], storage: string;
    if (typeof v === 'bigint') {
      bytes = Buffer.from(new BigInt64Array([v]).buffer);
      shape = [];
      storage = 'LongStorage';
    } else {
      const a = v.toArray();
      bytes = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
      shape = v.shape;
      storage = STORAGE_OF[v.dtype];
    }
    const numel = shape.reduce((a, b) => a * b, 1);
    const stride = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
    w.str(name).global('torch._utils', '_rebuild_tensor_v2').mark();
    w.mark().str('storage').global('torch', storage).str(key).str('cpu').int(numel).tuple().persistentId();
    w.int(0).intTuple(shape).intTuple(stride).bool(false);
    orderedDict().tuple().reduce();
    storages.push({ name: `archive/data/${key}`, data: [bytes] });
  });
  w.setItems();
  return writeZip([
    { name: 'archive/data.pkl', data: [w.finish()] },
    { name: 'archive/byteorder', data: [Buffer.from('little')] },
    ...storages,
    { name: 'archive/version', data: [Buffer.from('3\n')] },
  ]);
}

/** Writes a state dict as a torch.save zip archive, atomically (temporary file, fsync, rename). */
export function writePth(file: string, tensors: StateRecord): void {
  writeFileAtomic(file, serializePth(tensors));
}
