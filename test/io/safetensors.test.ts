// safetensors: byte-exact writing, reading files from another writer, round trips through the model, and errors.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor } from '../../lib/tensor';
import { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors } from '../../lib/io/safetensors';
import { tinyVgg, randomBatch } from '../helpers/tiny';
import { crossEntropy } from '../../lib/nn/loss';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function f32le(...v: number[]): Buffer {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => b.writeFloatLE(x, i * 4));
  return b;
}
function file(headerJson: string, data: Buffer): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(headerJson)));
  return Buffer.concat([len, Buffer.from(headerJson), data]);
}

describe('safetensors format', () => {
  test('writes exactly the reference writer\'s bytes: I64 before F32, names sorted, header space-padded to 8', () => {
    const a = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const b = Tensor.from(new Float32Array([-1.5]), [1]);
    const bytes = Buffer.concat(serializeSafetensors({ 'w.b': b, 'w.a': a, n: 7n }, { format: 'pt' }));
    const header =
      '{"__metadata__":{"format":"pt"},' +
      '"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]},' +
      '"w.a":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},' +
      '"w.b":{"dtype":"F32","shape":[1],"data_offsets":[24,28]}}';
    const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
    const n = Buffer.alloc(8);
    n.writeBigInt64LE(7n);
    const expected = file(padded, Buffer.concat([n, f32le(1, 2, 3, 4), f32le(-1.5)]));
    expect(bytes.equals(expected)).toBe(true);
    expect(padded.length % 8).toBe(0);
  });

  test('reads a file made byte by byte from the spec (other key order, whitespace, F16/BF16/F64, no padding)', () => {
    const half = Buffer.alloc(4);
    half.writeUInt16LE(0x3c00, 0); // 1.0
    half.writeUInt16LE(0xc000, 2); // -2.0
    const bf = Buffer.alloc(4);
    bf.writeUInt16LE(0x3fc0, 0); // 1.5
    bf.writeUInt16LE(0x4049, 2); // 3.140625
    const dbl = Buffer.alloc(8);
    dbl.writeDoubleLE(0.25);
    const data = Buffer.concat([f32le(5, 6), half, bf, dbl]);
    const header = `{ "z" : {"shape":[2],"dtype":"F32","data_offsets":[0,8]},
      "h": {"dtype":"F16","shape":[2],"data_offsets":[8,12]},
      "b": {"dtype":"BF16","shape":[1,2],"data_offsets":[12,16]},
      "d": {"dtype":"F64","shape":[],"data_offsets":[16,24]}, "__metadata__": {"k": "v"} }`;
    const { tensors, metadata } = parseSafetensors(file(header, data), 'spec.safetensors');
    expect(metadata).toEqual({ k: 'v' });
    expect((tensors.z as Tensor).toNumbers()).toEqual([5, 6]);
    expect((tensors.h as Tensor).toNumbers()).toEqual([1, -2]);
    expect((tensors.b as Tensor).toNumbers()).toEqual([1.5, 3.140625]);
    expect((tensors.b as Tensor).shape).toEqual([1, 2]);
    expect((tensors.d as Tensor).toNumbers()).toEqual([0.25]);
  });

  const bad: [string, Buffer, RegExp][] = [
    ['too short', Buffer.alloc(3), /too short/],
    ['header past EOF', (() => { const b = Buffer.alloc(16); b.writeBigUInt64LE(1000n); return b; })(), /runs past the end/],
    ['huge header length', (() => { const b = Buffer.alloc(16); b.writeBigUInt64LE(1n << 60n); return b; })(), /over the .* limit/],
    ['not JSON', file('{nope', Buffer.alloc(0)), /not JSON/],
    ['not an object', file('[1,2]', Buffer.alloc(0)), /not a JSON object/],
    ['unknown dtype', file('{"a":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}', Buffer.alloc(1)), /'a': unknown dtype "Q8"/],
    ['bad shape', file('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', Buffer.alloc(4)), /'a': shape must be/],
    ['size mismatch', file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', Buffer.alloc(4)), /'a': data_offsets \[0, 4\] hold 4 bytes.*needs 8/],
    ['offsets past data', file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', Buffer.alloc(4)), /larger than the file|past the data/],
    ['overlap', file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', Buffer.alloc(4)), /overlap or leave a gap/],
    ['trailing bytes', file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', Buffer.alloc(12)), /cover 4 bytes of data but the file holds 12/],
    ['overflowing shape', file('{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}', Buffer.alloc(4)), /larger than the file/],
  ];
  test.each(bad)('rejects a malformed file: %s', (_n, buf, msg) => {
    expect(() => parseSafetensors(buf, 'bad.safetensors')).toThrow(msg);
    expect(() => parseSafetensors(buf, 'bad.safetensors')).toThrow(/^bad\.safetensors: /);
  });

  test('a missing file is an error naming it', () => {
    expect(() => readSafetensors(path.join(tmp, 'nope.safetensors'))).toThrow(/nope\.safetensors: cannot read \(ENOENT\)/);
  });
});

describe('model state dicts', () => {
  test('save → load round trip restores every tensor and counter exactly; outputs match', () => {
    const a = tinyVgg({ batchNorm: true, seed: 1 });
    const { x, y } = randomBatch(4, 2);
    // one training step so BN running stats and num_batches_tracked are not at their initial values
    const logits = a.forward(x);
    a.backward(crossEntropy(logits, y).grad);
    const f = path.join(tmp, 'tiny.safetensors');
    a.saveStateDict(f, { note: 'x' });
    const b = tinyVgg({ batchNorm: true, seed: 99 });
    b.loadStateDict(f);
    const sa = a.stateDict();
    const sb = b.stateDict();
    expect(Object.keys(sb).sort()).toEqual(Object.keys(sa).sort());
    for (const k of Object.keys(sa)) {
      const va = sa[k];
      const vb = sb[k];
      if (typeof va === 'bigint') expect(vb).toBe(va);
      else expect((vb as Tensor).toArray()).toEqual(va.toArray());
    }
    expect(sb['features.1.num_batches_tracked']).toBe(1n);
    a.eval();
    b.eval();
    expect(b.forward(x).toArray()).toEqual(a.forward(x).toArray());
    expect(readSafetensors(f).metadata).toEqual({ note: 'x' });
    a.dispose();
    b.dispose();
  });

  test('missing, unexpected and mis-shaped entries are errors naming them; the model is unchanged', () => {
    const m = tinyVgg({ seed: 1 });
    const before = (m.stateDict()['features.0.weight'] as Tensor).toArray();
    const sd = { ...m.stateDict() };
    delete sd['classifier.6.bias'];
    expect(() => m.loadStateDict(sd)).toThrow(/missing: classifier\.6\.bias/);
    const extra = { ...m.stateDict(), 'features.99.weight': Tensor.zeros([1]) };
    expect(() => m.loadStateDict(extra)).toThrow(/unexpected: features\.99\.weight/);
    const wrong = { ...m.stateDict(), 'features.0.weight': Tensor.zeros([4, 3, 5, 5]) };
    expect(() => m.loadStateDict(wrong)).toThrow(/'features\.0\.weight' has shape \[4, 3, 5, 5\], the model expects \[4, 3, 3, 3\]/);
    expect((m.stateDict()['features.0.weight'] as Tensor).toArray()).toEqual(before);
    m.dispose();
  });

  test('a truncated checkpoint file is an error naming the file', () => {
    const m = tinyVgg();
    const f = path.join(tmp, 'trunc.safetensors');
    m.saveStateDict(f);
    const buf = fs.readFileSync(f);
    fs.writeFileSync(f, buf.subarray(0, buf.length - 10));
    expect(() => m.loadStateDict(f)).toThrow(/trunc\.safetensors: not a valid safetensors file/);
    m.dispose();
  });

  test('writes are atomic: a failed write leaves the old file and no temporary behind', () => {
    const f = path.join(tmp, 'atomic.safetensors');
    writeSafetensors(f, { a: Tensor.from(new Float32Array([1]), [1]) });
    const old = fs.readFileSync(f);
    const disposed = Tensor.from(new Float32Array([1]), [1]);
    disposed.dispose();
    expect(() => writeSafetensors(f, { a: disposed })).toThrow(/disposed/);
    expect(fs.readFileSync(f).equals(old)).toBe(true);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});
