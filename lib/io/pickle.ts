// Python pickles, read without executing anything: the binary opcodes of protocols 2-5 that data needs (no NEWOBJ,
// no INST/OBJ, no extension registry, no out-of-band buffers). A GLOBAL is looked up in the caller's allow-list and
// anything else is an error naming it — the promise of torch.load(weights_only=True). REDUCE calls only the
// allow-listed functions the caller gives; BINPERSID goes to the caller's persistentLoad. Every length is checked
// against the bytes left before anything is read, so a hostile file cannot make this allocate what it merely claims.
// The writer emits the subset torch's weights-only unpickler accepts.

/** A callable global from the allow-list: REDUCE applies it to its argument tuple. */
export class PickleCallable {
  constructor(readonly name: string, readonly call: (args: unknown[]) => unknown) {}
}
/** A global that is a value (a storage type, say), not called. */
export class PickleGlobal {
  constructor(readonly name: string, readonly value: unknown) {}
}

export interface UnpickleOptions {
  /** Names the file in errors. */
  source: string;
  /** Allowed globals by 'module.name' (Python 2's `copy_reg` and `__builtin__` names are the caller's to add). */
  globals: ReadonlyMap<string, PickleCallable | PickleGlobal>;
  /** A short list of what is allowed, for the error message about anything else. */
  allowedNote: string;
  /** BINPERSID: maps the persistent id (a tuple) to an object. Without it, persistent ids are errors. */
  persistentLoad?: (pid: unknown) => unknown;
}

/** Tuples are frozen arrays, lists plain arrays, dicts Maps, bytes Buffers, ints numbers (bigint beyond 2^53). */
export type PickleTuple = readonly unknown[];

const MARK = Symbol('mark');
const TEXT_OPCODES: Record<number, string> = {
  0x49: 'INT', 0x4c: 'LONG', 0x53: 'STRING', 0x56: 'UNICODE', 0x46: 'FLOAT', 0x70: 'PUT', 0x67: 'GET', 0x50: 'PERSID',
  0x69: 'INST', 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** A short description of a pickled value for error messages (bounded: values may be cyclic). */
export function describe(v: unknown, depth = 0): string {
  if (v === null) return 'None';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (Buffer.isBuffer(v)) return `bytes(${v.length})`;
  if (Array.isArray(v)) {
    const open = Object.isFrozen(v) ? '(' : '[';
    const close = Object.isFrozen(v) ? ')' : ']';
    if (depth > 1) return `${open}…${close}`;
    const items = v.slice(0, 6).map((x) => describe(x, depth + 1));
    return `${open}${items.join(', ')}${v.length > 6 ? ', …' : ''}${close}`;
  }
  if (v instanceof Map) return `dict(${v.size} items)`;
  if (v instanceof PickleCallable || v instanceof PickleGlobal) return v.name;
  return typeof v === 'object' && v !== null ? (v.constructor?.name ?? 'object') : typeof v;
}

/**
 * Unpickles one pickle starting at `offset`; returns the value and the offset just past its STOP. Every problem is
 * an Error `${source}: ...` naming the opcode and its byte offset.
 */
export function unpickle(buf: Buffer, offset: number, options: UnpickleOptions): { value: unknown; end: number } {
  const { source } = options;
  let pos = offset;
  let at = offset;
  const fail = (msg: string): never => {
    throw new Error(`${source}: pickle at byte ${at}: ${msg}`);
  };
  const need = (n: number, what: string) => {
    if (!Number.isSafeInteger(n) || n < 0 || pos + n > buf.length) fail(`${what} needs ${n} bytes, ${buf.length - pos} are left (truncated?)`);
  };
  const take = (n: number, what: string): Buffer => {
    need(n, what);
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const u8 = () => take(1, 'a 1-byte argument')[0];
  const u16 = () => take(2, 'a 2-byte argument').readUInt16LE(0);
  const u32 = () => take(4, 'a 4-byte argument').readUInt32LE(0);
  const u64 = (): number => {
    const v = take(8, 'an 8-byte argument').readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`length ${v} is larger than any file`);
    return Number(v);
  };
  const line = (): string => {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0 || nl - pos > 1000) fail('GLOBAL name has no end of line');
    const s = buf.toString('utf8', pos, nl);
    pos = nl + 1;
    return s;
  };

  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const pop = (what: string): unknown => {
    if (stack.length <= (marks.length ? marks[marks.length - 1] : 0)) fail(`${what} found no value on the stack`);
    return stack.pop();
  };
  const top = (what: string): unknown => {
    if (stack.length <= (marks.length ? marks[marks.length - 1] : 0)) fail(`${what} found no value on the stack`);
    return stack[stack.length - 1];
  };
  const popMark = (what: string): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail(`${what} found no MARK`);
    return stack.splice(m!);
  };
  const tuple = (items: unknown[]): PickleTuple => Object.freeze(items);
  const list = (v: unknown, what: string): unknown[] => {
    if (!Array.isArray(v) || Object.isFrozen(v)) fail(`${what} applies to a list, got ${describe(v)}`);
    return v as unknown[];
  };
  const dict = (v: unknown, what: string): Map<unknown, unknown> => {
    if (!(v instanceof Map)) fail(`${what} applies to a dict, got ${describe(v)}`);
    return v as Map<unknown, unknown>;
  };
  const key = (k: unknown): unknown => {
    // Dict keys must be hashable in Python; here only strings and ints are useful (and comparable by value).
    if (typeof k === 'string' || typeof k === 'number' || typeof k === 'bigint' || typeof k === 'boolean' || k === null) return k;
    return fail(`dict key ${describe(k)} is not a string or an int`);
  };
  const global = (module: string, name: string): unknown => {
    const full = `${module}.${name}`;
    const g = options.globals.get(full);
    if (!g) fail(`global '${full}' is not allowed: a state dict needs only ${options.allowedNote} (torch.load(weights_only=True) refuses it too)`);
    return g;
  };
  const signedLong = (b: Buffer): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  for (;;) {
    at = pos;
    if (pos >= buf.length) fail('the pickle ends without STOP (truncated?)');
    const op = buf[pos++];
    switch (op) {
      case 0x80: { // PROTO
        const p = u8();
        if (p < 2 || p > 5) fail(`protocol ${p}; only the binary protocols 2-5 are read`);
        break;
      }
      case 0x95: u64(); break; // FRAME: framing is advisory; the opcodes follow
      case 0x2e: { // STOP
        if (marks.length) fail('STOP inside an open MARK');
        if (stack.length !== 1) fail(`STOP with ${stack.length} values on the stack, expected 1`);
        return { value: stack[0], end: pos };
      }
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x30: pop('POP'); break;
      case 0x31: popMark('POP_MARK'); break;
      case 0x32: stack.push(top('DUP')); break;
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(take(4, 'BININT').readInt32LE(0)); break;
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: { const n = u8(); stack.push(signedLong(take(n, 'LONG1'))); break; }
      case 0x8b: { // LONG4
        const n = take(4, 'LONG4').readInt32LE(0);
        if (n < 0 || n > 64) fail(`LONG4 of ${n} bytes; a state dict's integers fit in 64`);
        stack.push(signedLong(take(n, 'LONG4')));
        break;
      }
      case 0x47: stack.push(take(8, 'BINFLOAT').readDoubleBE(0)); break;
      case 0x58: { const n = u32(); stack.push(take(n, 'BINUNICODE').toString('utf8')); break; }
      case 0x8c: { const n = u8(); stack.push(take(n, 'SHORT_BINUNICODE').toString('utf8')); break; }
      case 0x8d: { const n = u64(); stack.push(take(n, 'BINUNICODE8').toString('utf8')); break; }
      // Python 2 str: torch.load decodes it as UTF-8.
      case 0x54: { const n = take(4, 'BINSTRING').readInt32LE(0); stack.push(take(n, 'BINSTRING').toString('utf8')); break; }
      case 0x55: { const n = u8(); stack.push(take(n, 'SHORT_BINSTRING').toString('utf8')); break; }
      case 0x42: { const n = u32(); stack.push(take(n, 'BINBYTES')); break; }
      case 0x43: { const n = u8(); stack.push(take(n, 'SHORT_BINBYTES')); break; }
      case 0x8e: { const n = u64(); stack.push(take(n, 'BINBYTES8')); break; }
      case 0x29: stack.push(tuple([])); break; // EMPTY_TUPLE
      case 0x85: { const a = pop('TUPLE1'); stack.push(tuple([a])); break; }
      case 0x86: { const b = pop('TUPLE2'); const a = pop('TUPLE2'); stack.push(tuple([a, b])); break; }
      case 0x87: { const c = pop('TUPLE3'); const b = pop('TUPLE3'); const a = pop('TUPLE3'); stack.push(tuple([a, b, c])); break; }
      case 0x74: stack.push(tuple(popMark('TUPLE'))); break;
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: stack.push(popMark('LIST')); break;
      case 0x61: { const v = pop('APPEND'); list(top('APPEND'), 'APPEND').push(v); break; }
      case 0x65: { const items = popMark('APPENDS'); const l = list(top('APPENDS'), 'APPENDS'); for (const v of items) l.push(v); break; }
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x64: { // DICT
        const items = popMark('DICT');
        if (items.length % 2) fail('DICT with an odd number of items');
        const d = new Map<unknown, unknown>();
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]), items[i + 1]);
        stack.push(d);
        break;
      }
      case 0x73: { const v = pop('SETITEM'); const k = pop('SETITEM'); dict(top('SETITEM'), 'SETITEM').set(key(k), v); break; }
      case 0x75: { // SETITEMS
        const items = popMark('SETITEMS');
        if (items.length % 2) fail('SETITEMS with an odd number of items');
        const d = dict(top('SETITEMS'), 'SETITEMS');
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]), items[i + 1]);
        break;
      }
      case 0x8f: stack.push(tuple([])); break; // EMPTY_SET (torch's weights-only reader has it; sets stay empty here)
      case 0x90: popMark('ADDITEMS'); break;
      case 0x91: stack.push(tuple(popMark('FROZENSET'))); break;
      case 0x63: { const module = line(); const name = line(); stack.push(global(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop('STACK_GLOBAL');
        const module = pop('STACK_GLOBAL');
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop('REDUCE');
        const fn = pop('REDUCE');
        if (!(fn instanceof PickleCallable)) fail(`REDUCE calls ${describe(fn)}, which is not an allowed function`);
        if (!Array.isArray(args) || !Object.isFrozen(args)) fail(`REDUCE of ${(fn as PickleCallable).name} needs an argument tuple, got ${describe(args)}`);
        let r: unknown;
        try {
          r = (fn as PickleCallable).call(args as unknown[]);
        } catch (e) {
          fail(`${(fn as PickleCallable).name}${describe(args)}: ${(e as Error).message}`);
        }
        stack.push(r);
        break;
      }
      case 0x62: { // BUILD: an OrderedDict's instance attributes (a state dict's _metadata); nothing else is built
        const state = pop('BUILD');
        const target = top('BUILD');
        if (!(target instanceof Map)) fail(`BUILD of ${describe(target)} with ${describe(state)}; only a dict's attributes are set`);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop('BINPERSID');
        if (!options.persistentLoad) fail('a persistent id where none is expected');
        try {
          stack.push(options.persistentLoad!(pid));
        } catch (e) {
          fail(`persistent id ${describe(pid)}: ${(e as Error).message}`);
        }
        break;
      }
      case 0x71: memo.set(u8(), top('BINPUT')); break;
      case 0x72: memo.set(u32(), top('LONG_BINPUT')); break;
      case 0x94: memo.set(memo.size, top('MEMOIZE')); break;
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`${op === 0x68 ? 'BINGET' : 'LONG_BINGET'} ${i} of a memo slot never set`);
        stack.push(memo.get(i));
        break;
      }
      default:
        if (TEXT_OPCODES[op]) fail(`opcode ${TEXT_OPCODES[op]} is not read (it is not needed for tensors and can construct arbitrary objects or text-protocol values)`);
        fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

/**
 * A pickle writer for protocol 2, using only the opcodes torch's weights-only unpickler reads (no memo needed: every
 * value is written where it is used).
 */
export class PickleWriter {
  private chunks: Buffer[] = [Buffer.from([0x80, 2])];
  private byte(...b: number[]): this {
    this.chunks.push(Buffer.from(b));
    return this;
  }
  global(module: string, name: string): this {
    this.chunks.push(Buffer.from(`c${module}\n${name}\n`, 'utf8'));
    return this;
  }
  mark(): this { return this.byte(0x28); }
  tuple(): this { return this.byte(0x74); }
  emptyTuple(): this { return this.byte(0x29); }
  emptyDict(): this { return this.byte(0x7d); }
  setItems(): this { return this.byte(0x75); }
  reduce(): this { return this.byte(0x52); }
  persistentId(): this { return this.byte(0x51); }
  bool(v: boolean): this { return this.byte(v ? 0x88 : 0x89); }
  none(): this { return this.byte(0x4e); }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58; // BINUNICODE
    h.writeUInt32LE(b.length, 1);
    this.chunks.push(h, b);
    return this;
  }
  int(v: number): this {
    if (!Number.isSafeInteger(v)) throw new Error(`pickle: ${v} is not a safe integer`);
    if (v >= 0 && v < 256) return this.byte(0x4b, v);
    if (v >= 0 && v < 65536) return this.byte(0x4d, v & 0xff, v >> 8);
    if (v >= -(2 ** 31) && v < 2 ** 31) {
      const b = Buffer.alloc(5);
      b[0] = 0x4a;
      b.writeInt32LE(v, 1);
      this.chunks.push(b);
      return this;
    }
    const b = Buffer.alloc(10);
    b[0] = 0x8a; // LONG1 of 8 bytes, two's complement
    b[1] = 8;
    b.writeBigInt64LE(BigInt(v), 2);
    this.chunks.push(b);
    return this;
  }
  /** Ints as a tuple (sizes, strides). */
  intTuple(vs: number[]): this {
    if (vs.length === 0) return this.emptyTuple();
    this.mark();
    for (const v of vs) this.int(v);
    return this.tuple();
  }
  finish(): Buffer {
    this.byte(0x2e); // STOP
    return Buffer.concat(this.chunks);
  }
}
