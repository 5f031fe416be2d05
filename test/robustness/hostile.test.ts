// Hostile inputs for every reader: safetensors, PyTorch .pth (zip and legacy), checkpoint metadata, STL10 .bin/.txt, ImageFolder images and the
// training CLI's arguments. Each case expects a specific JS Error naming the file or field and what was expected —
// never a crash, never an allocation of a size the file merely claims.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { Tensor } from '../../lib/tensor';
import { parseSafetensors, readSafetensors, writeSafetensors, firstDuplicateKey } from '../../lib/io/safetensors';
import { encodeMeta, loadCheckpoint, modelFromCheckpoint, readCheckpointMeta, CHECKPOINT_FORMAT, CheckpointMeta } from '../../lib/train/checkpoint';
import { STL10, ImageFolder, DataLoader } from '../../lib/data';
import { main as trainMain } from '../../lib/cli/train';
import { tinyStl10 } from '../helpers/data_fixtures';
import { parsePth } from '../../lib/io/pth';
import { writeZip } from '../../lib/io/zip';
import { VGGNet } from '../../lib/models/vgg';
import { sgd } from '../../lib/optim/sgd';
import { BatchNorm2d, Conv2d, Linear, MaxPool2d } from '../../lib/nn/layers';
import { crossEntropy } from '../../lib/nn/loss';
import { linearWarmup, reduceLROnPlateau } from '../../lib/optim/schedulers';
import { Entry, f32, legacyPth, statePickle, zipPth } from '../helpers/pth_build';
import { captureIO } from '../helpers/cli_io';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-hostile-'));
process.env.VGGNET_CACHE = path.join(tmp, 'cache');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function st(headerJson: string, data: Buffer | number = 0): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(headerJson)));
  return Buffer.concat([len, Buffer.from(headerJson), typeof data === 'number' ? Buffer.alloc(data) : data]);
}
function rawLen(n: bigint, total = 16): Buffer {
  const b = Buffer.alloc(total);
  b.writeBigUInt64LE(n);
  return b;
}
const T = (name: string, dtype: string, shape: unknown, offs: unknown) => `"${name}":{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offs)}}`;

describe('safetensors', () => {
  const cases: [string, Buffer, RegExp][] = [
    ['empty file', Buffer.alloc(0), /0 bytes, too short for the 8-byte header length/],
    ['7 bytes', Buffer.alloc(7), /7 bytes, too short/],
    ['header length 2^64-1', rawLen(0xffffffffffffffffn), /header length 18446744073709551615 is over the 100000000-byte limit/],
    ['header length just under the limit, past EOF', rawLen(99_999_999n), /header length 99999999 runs past the end of the file \(16 bytes\)/],
    ['header length 0', rawLen(0n, 8), /header is not JSON/],
    ['header of NUL bytes', st('\0\0\0\0'), /header is not JSON/],
    ['invalid UTF-8', st('\xff\xfe{}'), /header is not JSON/],
    ['truncated JSON', st('{"a":{"dtype":"F32"'), /header is not JSON/],
    ['JSON array', st('[]'), /header is not a JSON object/],
    ['JSON null', st('null'), /header is not a JSON object/],
    ['JSON number', st('12345678'), /header is not a JSON object/],
    ['deeply nested', st('['.repeat(100000) + ']'.repeat(100000)), /header is not (JSON|a JSON object)/],
    ['entry is a number', st('{"a":5}'), /tensor 'a' is not an object/],
    ['entry is null', st('{"a":null}'), /tensor 'a' is not an object/],
    ['dtype missing', st('{"a":{"shape":[1],"data_offsets":[0,4]}}', 4), /tensor 'a': unknown dtype undefined/],
    ['dtype lower case', st(`{${T('a', 'f32', [1], [0, 4])}}`, 4), /tensor 'a': unknown dtype "f32"/],
    ['shape missing', st('{"a":{"dtype":"F32","data_offsets":[0,4]}}', 4), /tensor 'a': shape must be an array of non-negative integers, got undefined/],
    ['shape a string', st(`{${T('a', 'F32', '4', [0, 4])}}`, 4), /tensor 'a': shape must be an array/],
    ['shape fractional', st(`{${T('a', 'F32', [1.5], [0, 6])}}`, 6), /tensor 'a': shape must be an array of non-negative integers, got \[1.5\]/],
    ['shape negative', st(`{${T('a', 'F32', [-4], [0, 16])}}`, 16), /shape must be/],
    ['shape dim over 2^53', st('{"a":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,1]}}', 1), /shape must be/],
    ['shape product overflowing', st(`{${T('a', 'F32', [2 ** 31, 2 ** 31, 2 ** 31], [0, 4])}}`, 4), /tensor 'a': shape \[2147483648,2147483648,2147483648\] is larger than the file/],
    ['shape product larger than the file', st(`{${T('a', 'F64', [1 << 20, 1 << 20], [0, 8])}}`, 8), /tensor 'a': shape .* is larger than the file/],
    ['data_offsets missing', st('{"a":{"dtype":"F32","shape":[1]}}', 4), /tensor 'a': data_offsets must be two non-negative integers, got undefined/],
    ['data_offsets of three', st(`{${T('a', 'F32', [1], [0, 4, 8])}}`, 8), /data_offsets must be two/],
    ['data_offsets as strings', st(`{${T('a', 'F32', [1], ['0', '4'])}}`, 4), /data_offsets must be two/],
    ['data_offsets reversed', st(`{${T('a', 'F32', [1], [4, 0])}}`, 4), /tensor 'a': data_offsets \[4, 0\] hold -4 bytes/],
    ['data_offsets wrong size', st(`{${T('a', 'F32', [2], [0, 4])}}`, 8), /data_offsets \[0, 4\] hold 4 bytes, shape \[2\] of F32 needs 8/],
    ['data_offsets past the data', st(`{${T('a', 'U8', [4], [4, 8])}}`, 4), /tensor 'a': data_offsets end 8 is past the data \(4 bytes\)/],
    ['data_offsets huge', st(`{${T('a', 'U8', [0], [2 ** 52, 2 ** 52])}}`, 0), /data_offsets end 4503599627370496 is past the data/],
    ['tensors overlapping', st(`{${T('a', 'F32', [2], [0, 8])},${T('b', 'F32', [1], [4, 8])}}`, 8), /tensor 'b' starts at 4, expected 8 \(tensors overlap or leave a gap\)/],
    ['a gap between tensors', st(`{${T('a', 'F32', [1], [0, 4])},${T('b', 'F32', [1], [8, 12])}}`, 12), /tensor 'b' starts at 8, expected 4/],
    ['tensors not covering the data', st(`{${T('a', 'F32', [1], [0, 4])}}`, 100), /the tensors cover 4 bytes of data but the file holds 100/],
    ['no tensors but data', st('{}', 8), /the tensors cover 0 bytes of data but the file holds 8/],
    ['duplicate tensor names', st(`{${T('a', 'F32', [1], [0, 4])},${T('a', 'F32', [1], [4, 8])}}`, 8), /tensor name 'a' appears more than once in the header/],
    ['duplicate names written with escapes', st(`{${T('a', 'F32', [1], [0, 4])},${T('\\u0061', 'F32', [1], [4, 8])}}`, 8), /tensor name 'a' appears more than once/],
    ['duplicate __metadata__', st('{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"}}'), /tensor name '__metadata__' appears more than once/],
    ['__proto__ as a name', st(`{${T('__proto__', 'F32', [1], [0, 4])}}`, 4), /'__proto__' is not a valid tensor name/],
    ['__metadata__ an array', st('{"__metadata__":["x"]}'), /__metadata__ is not an object/],
    ['__metadata__ value a number', st('{"__metadata__":{"epoch":3}}'), /__metadata__\.epoch is not a string/],
    ['dtype vggnet does not read', st(`{${T('a', 'U16', [2], [0, 4])}}`, 4), /tensor 'a' has dtype U16, which vggnet does not read/],
  ];
  test.each(cases)('%s', (_name, buf, msg) => {
    const rss0 = process.memoryUsage().rss;
    let err: unknown;
    try {
      parseSafetensors(buf, 'hostile.safetensors');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^hostile\.safetensors: /);
    expect((err as Error).message).toMatch(msg);
    // Nothing the size of what the file claims was allocated (the claims above are gigabytes to exabytes).
    expect(process.memoryUsage().rss - rss0).toBeLessThan(256 << 20);
  });

  test('names that only look alike are not duplicates; nested keys do not count', () => {
    expect(firstDuplicateKey('{"a":{"a":1,"b":[{"a":2}]},"b":"a,\\"a\\":","c":{}}')).toBeNull();
    expect(firstDuplicateKey('{ "x" : 1 , "y":{"x":2}, "x" :3}')).toBe('x');
    const ok = st(`{"__metadata__":{"dtype":"x"},${T('a', 'F32', [1], [0, 4])},${T('a.b', 'F32', [1], [4, 8])}}`, 8);
    const { tensors, metadata } = parseSafetensors(ok, 'ok.safetensors');
    expect(Object.keys(tensors).sort()).toEqual(['a', 'a.b']);
    expect(metadata).toEqual({ dtype: 'x' });
    for (const t of Object.values(tensors)) (t as Tensor).dispose();
  });

  test('a folder, a missing file and an unreadable path are errors naming them', () => {
    expect(() => readSafetensors(tmp)).toThrow(new RegExp(`${path.basename(tmp)}: expected a regular file, got a folder`));
    expect(() => readSafetensors(path.join(tmp, 'missing.safetensors'))).toThrow(/missing\.safetensors: cannot read \(ENOENT\)/);
  });
});

describe('checkpoint metadata', () => {
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT, packageVersion: '0.1.0', epoch: 2, batchInEpoch: 0, step: 10, lr: 0.01,
    model: { name: 'tiny', config: [4, 'M'], numClasses: 5, batchNorm: false, dropout: 0, hiddenFeatures: 12, inChannels: 3, precision: 'fp32', seed: 1 },
    config: {}, hyperParameters: {}, scheduler: null, rng: { dropout: [], loader: null }, metrics: null, partial: null,
    history: [], best: null, classes: ['a', 'b', 'c', 'd', 'e'], created: '2026-01-01T00:00:00.000Z',
  };
  /** The weights of the model `meta.model` describes. */
  const weights = (): Record<string, Tensor | bigint> => {
    const m = new VGGNet([4, 'M'], { numClasses: 5, hiddenFeatures: 12, dropout: 0, device: 'cpu', seed: 1 });
    const sd = Object.fromEntries(Object.entries(m.stateDict()).map(([k, v]) => [k, typeof v === 'bigint' ? v : v.clone()]));
    m.dispose();
    return sd;
  };
  const write = (name: string, edit: (m: Record<string, string>) => void, tensors = weights()): string => {
    const m = encodeMeta(meta);
    edit(m);
    const f = path.join(tmp, `${name.replace(/\W+/g, '_')}.safetensors`);
    writeSafetensors(f, tensors, m);
    for (const v of Object.values(tensors)) if (v instanceof Tensor) v.dispose();
    return f;
  };

  test('an intact checkpoint reads back, and rebuilds its model', () => {
    const f = write('intact', () => undefined);
    expect(readCheckpointMeta(f)).toMatchObject({ epoch: 2, step: 10, lr: 0.01, classes: ['a', 'b', 'c', 'd', 'e'] });
    const ck = loadCheckpoint(f);
    expect(ck.meta.model.config).toEqual([4, 'M']);
    ck.dispose();
    const { model } = modelFromCheckpoint(f);
    expect(model.options.numClasses).toBe(5);
    model.dispose();
  });

  // Fields below the top level: each named by its path, before anything is built from it (was a TypeError from inside).
  const fieldCases: [string, (o: Record<string, unknown>) => void, RegExp][] = [
    ['model.config with a string width', (o) => ((o.model as { config: unknown[] }).config = [4, 'X']), /'model\.config\[1\]': expected a layer width \(an integer >= 1\) or 'M'/],
    ['model.config of pools only', (o) => ((o.model as { config: unknown[] }).config = ['M']), /'model\.config': expected at least one convolution width/],
    ['model.config with a huge width', (o) => ((o.model as { config: unknown[] }).config = [1e9, 'M']), /checkpoint metadata 'model' describes a network of \d+ weights and statistics, the file holds 2697/],
    ['model.numClasses a string', (o) => ((o.model as Record<string, unknown>).numClasses = '5'), /'model\.numClasses': expected an integer >= 1, got '5'/],
    ['model.hiddenFeatures 0', (o) => ((o.model as Record<string, unknown>).hiddenFeatures = 0), /'model\.hiddenFeatures': expected an integer >= 1, got 0/],
    ['model.batchNorm a string', (o) => ((o.model as Record<string, unknown>).batchNorm = 'yes'), /'model\.batchNorm': expected true or false/],
    ['model.dropout 1', (o) => ((o.model as Record<string, unknown>).dropout = 1), /'model\.dropout': expected a number in \[0, 1\), got 1/],
    ['model.precision fp16', (o) => ((o.model as Record<string, unknown>).precision = 'fp16'), /'model\.precision': expected one of fp32, tf32, bf16, got 'fp16'/],
    ['model.inChannels missing', (o) => delete (o.model as Record<string, unknown>).inChannels, /'model\.inChannels': expected an integer >= 1, got nothing/],
    ['model.seed fractional', (o) => ((o.model as Record<string, unknown>).seed = 0.5), /'model\.seed': expected an integer, got 0\.5/],
    ['classes fewer than the classes', (o) => (o.classes = ['a', 'b']), /'classes': expected 5 class names \(model\.numClasses\), got '2 names'/],
    ['rng.dropout entry without calls', (o) => ((o.rng as { dropout: unknown[] }).dropout = [{ seed: 1 }]), /'rng\.dropout\[0\]': expected an object \{ seed: integer, calls: integer >= 0 \}/],
    ['rng.loader garbled', (o) => ((o.rng as Record<string, unknown>).loader = { seed: 1, epoch: -1, batch: 0, shuffle: true }), /'rng\.loader': expected null or an object/],
    ['rng.loader.worldSize 0', (o) => ((o.rng as Record<string, unknown>).loader = { seed: 1, epoch: 0, batch: 0, shuffle: true, worldSize: 0 }), /'rng\.loader\.worldSize': expected an integer >= 1, got 0/],
    ['metrics value an object', (o) => (o.metrics = { 'val.loss': {} }), /'metrics\.val\.loss': expected a number/],
    ['partial with more correct than samples', (o) => (o.partial = { lossSum: 1, correct1: 5, correct5: 5, samples: 2 }), /'partial': expected null or the running metrics/],
    ['history entry a number', (o) => (o.history = [3]), /'history\[0\]': expected an object of metrics/],
    ['best.top1 2', (o) => (o.best = { top1: 2, epoch: 1 }), /'best': expected null or \{ top1: a number in \[0, 1\]/],
    ['config.imageSize a string', (o) => (o.config = { imageSize: 'big' }), /'config\.imageSize': expected an integer >= 1, got 'big'/],
  ];
  test.each(fieldCases)('%s', (name, edit, msg) => {
    const o = JSON.parse(JSON.stringify(meta)) as Record<string, unknown>;
    edit(o);
    const f = write(`field ${name}`, (m) => Object.assign(m, encodeMeta(o as unknown as CheckpointMeta)));
    const where = new RegExp(path.basename(f).replace(/\./g, '\\.'));
    for (const read of [() => loadCheckpoint(f).dispose(), () => modelFromCheckpoint(f).model.dispose()]) {
      expect(read).toThrow(msg);
      expect(read).toThrow(where);
    }
    // The header-only reader checks the same fields (all but the weights' count, which it does not read).
    if (!/holds \d+/.test(msg.source)) expect(() => readCheckpointMeta(f)).toThrow(msg);
  });

  test('weights that disagree with the metadata: the class count, the input channels', () => {
    const w = weights();
    const f = write('five weights three names', (m) => Object.assign(m, encodeMeta({ ...meta, model: { ...meta.model, numClasses: 3 }, classes: ['a', 'b', 'c'] })), w);
    expect(() => loadCheckpoint(f)).toThrow(/describes a network of \d+ weights and statistics, the file holds \d+/);
    // Same element count, other split: 5 classes in the weights, 5 in metadata, but the classifier says 4 rows.
    const w2 = weights();
    (w2['classifier.6.weight'] as Tensor).dispose();
    (w2['classifier.6.bias'] as Tensor).dispose();
    w2['classifier.6.weight'] = Tensor.from(new Float32Array(4 * 12 + 12), [4, 15]);
    w2['classifier.6.bias'] = Tensor.from(new Float32Array(5), [5]);
    const f2 = write('rows differ', () => undefined, w2);
    expect(() => loadCheckpoint(f2)).toThrow(/the weights have 4 classes \(classifier\.6\.weight is \[4, 15\]\) but checkpoint metadata 'model\.numClasses' says 5 and 'classes' names 5/);
  });

  test('loadStateDict of something that is not a path or a record is a TypeError saying what it got', () => {
    const m = new VGGNet([4, 'M'], { numClasses: 5, hiddenFeatures: 12, device: 'cpu' });
    try {
      for (const [v, got] of [[null, 'null'], [undefined, 'undefined'], [5, 'number'], [[1], 'an array']] as const) {
        expect(() => m.loadStateDict(v as never)).toThrow(new TypeError(`VGGNet.loadStateDict: expected a file path (.pth, .pt, .safetensors) or a record of tensors by name, got ${got}`));
      }
      expect(() => m.loadStateDict({ 'features.0.weight': 5 } as never)).toThrow(/state dict: 'features\.0\.weight' is number, expected a Tensor \(or a bigint for num_batches_tracked\)/);
      expect(() => m.loadStateDict({ 'features.0.weight': null } as never)).toThrow(TypeError);
    } finally {
      m.dispose();
    }
  });

  const cases: [string, (m: Record<string, string>) => void, RegExp][] = [
    ['format missing (plain weights)', (m) => delete m.format, /expected a vggnet training checkpoint \(metadata format 'vggnet-checkpoint\/1'\), got plain weights/],
    ['format of another tool', (m) => (m.format = 'pt'), /expected a vggnet training checkpoint .*got 'pt'/],
    ['epoch missing', (m) => delete m.epoch, /checkpoint metadata 'epoch': expected a non-negative integer, got nothing \(the field is missing\)/],
    ['epoch not a number', (m) => (m.epoch = 'two'), /checkpoint metadata 'epoch': expected a non-negative integer, got 'two'/],
    ['epoch negative', (m) => (m.epoch = '-1'), /'epoch': expected a non-negative integer, got '-1'/],
    ['epoch empty', (m) => (m.epoch = ''), /'epoch': expected a non-negative integer, got ''/],
    ['step fractional', (m) => (m.step = '1.5'), /'step': expected a non-negative integer, got '1.5'/],
    ['step beyond 2^53', (m) => (m.step = '99999999999999999999'), /'step': expected a non-negative integer/],
    ['batch_in_epoch garbled', (m) => (m.batch_in_epoch = '3x'), /'batch_in_epoch': expected a non-negative integer, got '3x'/],
    ['lr missing', (m) => delete m.lr, /'lr': expected a finite number >= 0, got nothing/],
    ['lr NaN', (m) => (m.lr = 'NaN'), /'lr': expected a finite number >= 0, got 'NaN'/],
    ['lr empty', (m) => (m.lr = ' '), /'lr': expected a finite number >= 0, got ' '/],
    ['model missing', (m) => delete m.model, /'model': expected an object with a config array \(the model description\), got nothing/],
    ['model not JSON', (m) => (m.model = '{"config":[4,'), /checkpoint metadata 'model' is not JSON/],
    ['model config not an array', (m) => (m.model = '{"config":"A"}'), /'model': expected an object with a config array/],
    ['history an object', (m) => (m.history = '{}'), /'history': expected a JSON array or null, got '\{\}'/],
    ['scheduler a string', (m) => (m.scheduler = '"plateau"'), /'scheduler': expected a JSON object or null/],
    ['rng.dropout not an array', (m) => (m.rng = '{"dropout":5}'), /'rng': expected an object with a dropout array/],
    ['classes with numbers', (m) => (m.classes = '[1,2]'), /'classes': expected an array of strings or null, got '\[1,2\]'/],
    ['metrics garbled', (m) => (m.metrics = '{"top1":0.5'), /checkpoint metadata 'metrics' is not JSON/],
  ];
  test.each(cases)('%s: loadCheckpoint and readCheckpointMeta say so', (name, edit, msg) => {
    const f = write(name, edit);
    const base = path.basename(f).replace(/\./g, '\\.');
    expect(() => loadCheckpoint(f)).toThrow(msg);
    expect(() => loadCheckpoint(f)).toThrow(new RegExp(base));
    expect(() => readCheckpointMeta(f)).toThrow(msg);
    expect(() => readCheckpointMeta(f)).toThrow(new RegExp(base));
  });

  const files: [string, Buffer | null, RegExp][] = [
    ['missing', null, /cannot read \(ENOENT\)/],
    ['empty', Buffer.alloc(0), /not a valid safetensors file: 0 bytes, too short/],
    ['huge header length', rawLen(1n << 62n), /header length 4611686018427387904 is over the 100000000-byte limit/],
    ['header past EOF', rawLen(4096n), /header length 4096 runs past the end of the file \(16 bytes\)/],
    ['header not JSON', st('{"__metadata__":'), /header is not JSON/],
    ['header an array', st('[1]'), /header is not a JSON object/],
    ['__metadata__ a string', st('{"__metadata__":"x"}'), /__metadata__ is not an object/],
    ['__metadata__ value a number', st('{"__metadata__":{"epoch":1}}'), /__metadata__\.epoch is not a string/],
  ];
  test.each(files)('readCheckpointMeta on a broken file: %s', (name, buf, msg) => {
    const f = path.join(tmp, `meta-${name.replace(/\W+/g, '_')}.safetensors`);
    if (buf) fs.writeFileSync(f, buf);
    expect(() => readCheckpointMeta(f)).toThrow(msg);
    expect(() => readCheckpointMeta(f)).toThrow(new RegExp(`^${f.replace(/[.\\/]/g, '\\$&')}: `));
    if (buf) expect(() => loadCheckpoint(f)).toThrow(/not a valid safetensors file|checkpoint/);
  });
});

describe('STL10 files', () => {
  const IMG = 27648;
  const cases: [string, (dir: string) => void, { split?: 'train' | 'test' | 'train+unlabeled'; folds?: number }, RegExp][] = [
    ['train_X.bin empty', (d) => fs.writeFileSync(path.join(d, 'train_X.bin'), ''), {}, /train_X\.bin: expected a size that is a positive multiple of 27648 bytes.*got 0 bytes/],
    ['train_X.bin one byte short', (d) => fs.truncateSync(path.join(d, 'train_X.bin'), 20 * IMG - 1), {}, /train_X\.bin: expected a size that is a positive multiple of 27648 bytes.*got 552959 bytes/],
    ['train_X.bin one image long', (d) => fs.appendFileSync(path.join(d, 'train_X.bin'), Buffer.alloc(IMG)), {}, /train_y\.bin: expected 21 bytes \(one label per image of .*train_X\.bin\), got 20 bytes/],
    ['train_X.bin missing', (d) => fs.rmSync(path.join(d, 'train_X.bin')), {}, /train_X\.bin: expected a file of N\*27648 bytes .*got missing file/],
    ['train_X.bin a folder', (d) => { fs.rmSync(path.join(d, 'train_X.bin')); fs.mkdirSync(path.join(d, 'train_X.bin')); }, {}, /train_X\.bin: expected a size that is a positive multiple of 27648|train_X\.bin: .*(folder|directory)/i],
    ['train_y.bin missing', (d) => fs.rmSync(path.join(d, 'train_y.bin')), {}, /train_y\.bin: expected a labels file, got missing file/],
    ['train_y.bin empty', (d) => fs.writeFileSync(path.join(d, 'train_y.bin'), ''), {}, /train_y\.bin: expected 20 bytes .*got 0 bytes/],
    ['train_y.bin label 0', (d) => patch(path.join(d, 'train_y.bin'), 0, 0), {}, /train_y\.bin: expected labels in 1\.\.10, got 0 at index 0/],
    ['train_y.bin label 255', (d) => patch(path.join(d, 'train_y.bin'), 19, 255), {}, /train_y\.bin: expected labels in 1\.\.10, got 255 at index 19/],
    ['test_y.bin label 11', (d) => patch(path.join(d, 'test_y.bin'), 3, 11), { split: 'test' }, /test_y\.bin: expected labels in 1\.\.10, got 11 at index 3/],
    ['class_names.txt with 9 names', (d) => fs.writeFileSync(path.join(d, 'class_names.txt'), 'a\nb\nc\nd\ne\nf\ng\nh\ni\n'), {}, /class_names\.txt: expected 10 class names, got 9/],
    ['class_names.txt a folder', (d) => { fs.rmSync(path.join(d, 'class_names.txt')); fs.mkdirSync(path.join(d, 'class_names.txt')); }, {}, /class_names\.txt: expected the class names file \(a regular file\), got a folder/],
    ['fold_indices.txt missing', (d) => fs.rmSync(path.join(d, 'fold_indices.txt')), { folds: 0 }, /fold_indices\.txt: expected the fold indices file, got missing file/],
    ['fold_indices.txt with 9 lines', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), '0 1\n'.repeat(9)), { folds: 0 }, /fold_indices\.txt: expected 10 lines \(folds 0\.\.9\), got 9/],
    ['fold line with a word', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), '0 one 2\n'.repeat(10)), { folds: 4 }, /fold_indices\.txt: line 5: expected training indices in 0\.\.19, got one/],
    ['fold line with -1', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), '0 -1\n'.repeat(10)), { folds: 0 }, /line 1: expected training indices in 0\.\.19, got -1/],
    ['fold line with 1.5', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), '1.5\n'.repeat(10)), { folds: 9 }, /line 10: expected training indices in 0\.\.19, got 1\.5/],
    ['fold line with hex', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), '0x3\n'.repeat(10)), { folds: 0 }, /got 0x3/],
    ['fold line with the image count', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), '20\n'.repeat(10)), { folds: 0 }, /expected training indices in 0\.\.19, got 20/],
    ['fold line with a 30-digit number', (d) => fs.writeFileSync(path.join(d, 'fold_indices.txt'), ('9'.repeat(30) + '\n').repeat(10)), { folds: 0 }, /got 9{20}\.\.\./],
    ['unlabeled_X.bin truncated (train+unlabeled, folds)', (d) => fs.truncateSync(path.join(d, 'unlabeled_X.bin'), IMG + 7), { split: 'train+unlabeled', folds: 1 }, /unlabeled_X\.bin: expected a size that is a positive multiple of 27648 bytes.*got 27655 bytes/],
  ];
  function patch(f: string, at: number, v: number): void {
    const b = fs.readFileSync(f);
    b[at] = v;
    fs.writeFileSync(f, b);
  }
  test.each(cases)('%s', (_name, damage, opts, msg) => {
    const root = tinyStl10({ train: 20, test: 10, unlabeled: 2 });
    try {
      damage(path.join(root, 'stl10_binary'));
      expect(() => new STL10({ root, split: opts.split ?? 'train', folds: opts.folds })).toThrow(msg);
      expect(() => new STL10({ root, split: opts.split ?? 'train', folds: opts.folds })).toThrow(/^STL10: /);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('a file truncated after opening: get() and the DataLoader reject with the file and offset', async () => {
    const root = tinyStl10({ train: 20, test: 10, unlabeled: 2 });
    try {
      const ds = new STL10({ root, split: 'train' });
      fs.truncateSync(path.join(root, 'stl10_binary', 'train_X.bin'), 10 * IMG + 100);
      expect(ds.get(9).image.shape).toEqual([3, 96, 96]);
      expect(() => ds.get(10)).toThrow(/train_X\.bin: read of \d+ bytes at offset \d+ failed \(unexpected end of file\)/);
      const loader = new DataLoader(ds, { batchSize: 8, workers: 2 });
      const seen: number[] = [];
      await expect((async () => {
        for await (const b of loader) {
          seen.push(b.batch);
          b.images.dispose();
          b.labels.dispose();
        }
      })()).rejects.toThrow(/train_X\.bin: read of \d+ bytes at offset \d+ failed \(unexpected end of file\)/);
      expect(seen).toEqual([0]); // batch 0 is images 0..7; batch 1 reaches past the cut
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('ImageFolder images', () => {
  let png: Buffer;
  let jpg: Buffer;
  let noisy: Buffer;
  beforeAll(async () => {
    const raw = Buffer.alloc(16 * 16 * 3, 128);
    png = await sharp(raw, { raw: { width: 16, height: 16, channels: 3 } }).png().toBuffer();
    jpg = await sharp(raw, { raw: { width: 16, height: 16, channels: 3 } }).jpeg().toBuffer();
    const px = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 2654435761) >>> 24;
    noisy = await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).jpeg().toBuffer();
  });
  function folder(files: Record<string, Buffer | 'dir'>): string {
    const root = fs.mkdtempSync(path.join(tmp, 'if-'));
    for (const [rel, content] of Object.entries(files)) {
      const p = path.join(root, rel);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      if (content === 'dir') fs.mkdirSync(p);
      else fs.writeFileSync(p, content);
    }
    return root;
  }
  const quiet = () => jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  afterEach(() => jest.restoreAllMocks());

  const decodeCases: [string, () => Buffer, RegExp][] = [
    // The real cause, not sharp's "Warning treated as error due to failOn setting".
    ['zero-byte .jpg', () => Buffer.alloc(0), /^ImageFolder: .*bad\.jpg: expected an image, got an empty file \(0 bytes\)$/],
    // libjpeg's "premature end" reaches us only when no concurrent decode cleared libvips's process-wide error
    // buffer first (CI saw it missing); the file's own missing end marker is always named.
    ['truncated JPEG', () => jpg.subarray(0, Math.floor(jpg.length / 2)), /^ImageFolder: .*bad\.jpg: truncated image: the file ends without JPEG's end-of-image marker \(FF D9\) \(\d+ bytes; the header cannot be read(: .*premature end of JPEG image.*)?\)$/],
    ['JPEG header only', () => jpg.subarray(0, 4), /^ImageFolder: .*bad\.jpg: truncated image: the file ends without JPEG's end-of-image marker \(FF D9\) \(4 bytes; /],
    ['text named .jpg', () => Buffer.from('hello, not an image\n'), /^ImageFolder: .*bad\.jpg: not an image \(no JPEG, PNG, WebP, GIF, TIFF or AVIF signature; the file starts with 68 65 6c 6c 6f 2c 20 6e\)$/],
    ['PNG with its data cut', () => png.subarray(0, png.length - 20), /^ImageFolder: .*bad\.jpg: truncated image: the file ends without PNG's IEND chunk \(png 16×16, \d+ bytes(; .*)?\)$/],
    ['JPEG with its last bytes cut', () => jpg.subarray(0, jpg.length - 2), /^ImageFolder: .*bad\.jpg: truncated image: the file ends without JPEG's end-of-image marker \(FF D9\) \(jpeg 16×16, \d+ bytes(; .*)?\)$/],
    // Its end marker intact, its entropy-coded data damaged: sharp said only "Warning treated as error due to failOn setting".
    ['JPEG with damaged scan data', () => { const b = Buffer.from(noisy); for (let i = b.length - 400; i < b.length - 300; i++) b[i] = 0xff; return b; }, /^ImageFolder: .*bad\.jpg: corrupt image data \(jpeg 64×64; (?!.*Warning treated as error)/],
    ['JPEG with a damaged Huffman table', () => { const b = Buffer.from(jpg); for (let i = 150; i < 170; i++) b[i] ^= 0xff; return b; }, /^ImageFolder: .*bad\.jpg: corrupt image (header|data) \(/],
  ];
  test.each(decodeCases)('%s: load() rejects naming the file', async (_n, bytes, msg) => {
    const root = folder({ 'cat/ok.png': png, 'dog/bad.jpg': bytes() });
    const ds = new ImageFolder({ root });
    await expect(ds.load()).rejects.toThrow(msg);
    // A failed load can be retried (and fails the same way) rather than leaving a half-made dataset.
    await expect(ds.load()).rejects.toThrow(msg);
    expect(() => ds.get(0)).toThrow(/images are not decoded yet/);
  });

  test('a folder named like an image is walked into (as os.walk does), a non-image file skipped with a warning', async () => {
    const warn = quiet();
    const root = folder({ 'cat/ok.png': png, 'cat/dir.jpg': 'dir', 'dog/a.jpg': jpg, 'dog/notes.txt': Buffer.from('x') });
    const ds = await ImageFolder.create({ root });
    expect(ds.samples.map(([p]) => path.relative(root, p))).toEqual([path.join('cat', 'ok.png'), path.join('dog', 'a.jpg')]);
    expect(ds.skipped.map((p) => path.relative(root, p)).sort()).toEqual([path.join('dog', 'notes.txt')]);
    expect(String(warn.mock.calls[0][0])).toMatch(/skipped 1 file\(s\) that are not \.jpg\/\.jpeg\/\.png images/);
    expect(ds.get(1).label).toBe(1);
  });

  test('a dangling link named like an image is skipped, not a crash', () => {
    quiet();
    const root = folder({ 'cat/ok.png': png });
    fs.symlinkSync(path.join(root, 'nowhere.png'), path.join(root, 'cat', 'gone.png'));
    expect(new ImageFolder({ root }).skipped).toEqual([path.join(root, 'cat', 'gone.png')]);
  });

  const layoutCases: [string, () => string, RegExp][] = [
    ['only non-images', () => folder({ 'cat/a.txt': Buffer.from('x'), 'cat/b.jpg': 'dir' }), /ImageFolder: class folder without \.jpg\/\.jpeg\/\.png images: .*cat \(every class needs at least one image/],
    ['no class folders', () => folder({ 'a.png': png }), /ImageFolder: .*: expected class folders, found none/],
    ['root is a file', () => path.join(folder({ 'f.png': png }), 'f.png'), /ImageFolder: .*f\.png: expected a folder of class folders, got ENOTDIR/],
    ['root missing', () => path.join(tmp, 'no-such-root'), /ImageFolder: .*no-such-root: expected a folder of class folders, got ENOENT/],
  ];
  test.each(layoutCases)('%s', (_n, make, msg) => {
    quiet();
    expect(() => new ImageFolder({ root: make() })).toThrow(msg);
  });
});

describe('training CLI arguments', () => {
  const io = captureIO;
  const exit2: [string[], RegExp][] = [
    [['--epochs', '-1'], /--epochs must be an integer >= 1, got '-1'/],
    [['--epochs', '1e3'], /--epochs must be an integer >= 1, got '1e3'/],
    [['--epochs', '99999999999999999999'], /--epochs must be an integer >= 1, got '99999999999999999999'/],
    [['--batch-size', '2.5'], /--batch-size must be an integer >= 1, got '2.5'/],
    [['--model', 'vgg99'], /argument 'vgg99' is invalid. Allowed choices are vgg11, vgg13, vgg16, vgg19/],
    [['--lr', 'fast'], /--lr must be a number >= 0, got 'fast'/],
    [['--lr', 'NaN'], /--lr must be a number >= 0, got 'NaN'/],
    [['--lr', 'Infinity'], /--lr must be a number >= 0, got 'Infinity'/],
    [['--lr', ''], /--lr must be a number >= 0, got ''/],
    [['--width', '0'], /--width must be a number >= 0.01, got '0'/],
    [['--image-size', '8'], /--image-size must be an integer >= 32, got '8'/],
    [['--precision', 'fp8'], /'fp8' is invalid\. Allowed choices are fp32/],
    [['--data'], /option '--data <dir>' argument missing/],
  ];
  test.each(exit2)('%j exits 2 with a clear message', async (argv, msg) => {
    const c = io();
    expect(await trainMain(argv, c.io)).toBe(2);
    expect(c.err()).toMatch(msg);
  });

  test('--dataset folder with a --data dir that lacks train/ exits 1 naming the folder', async () => {
    const empty = fs.mkdtempSync(path.join(tmp, 'nodata-'));
    const c = io();
    expect(await trainMain(['--dataset', 'folder', '--data', empty, '--device', 'cpu'], c.io)).toBe(1);
    expect(c.err()).toMatch(new RegExp(`error: ImageFolder: ${path.join(empty, 'train').replace(/[.\\/]/g, '\\$&')}: expected a folder of class folders, got ENOENT`));
  });

  test('--resume of a garbled checkpoint exits 1 naming the file and the field', async () => {
    const f = path.join(tmp, 'garbled.safetensors');
    fs.writeFileSync(f, st('{"__metadata__":{"format":"vggnet-checkpoint/1","epoch":"x"}}'));
    const c = io();
    expect(await trainMain(['--resume', f, '--device', 'cpu'], c.io)).toBe(1);
    expect(c.err()).toMatch(/error: .*garbled\.safetensors: checkpoint metadata 'epoch': expected a non-negative integer, got 'x'/);
    fs.writeFileSync(f, Buffer.alloc(5));
    const d = io();
    expect(await trainMain(['--resume', f, '--device', 'cpu'], d.io)).toBe(1);
    expect(d.err()).toMatch(/error: .*garbled\.safetensors: not a valid safetensors file: 5 bytes, too short/);
  });
});

describe('PyTorch .pth', () => {
  // Hand-made files (test/helpers/pth_build.ts): each must fail with an Error naming the file and what was wrong,
  // without allocating what the file merely claims.
  const ok = (entries: Entry[] = [{ name: 'w', numel: 4, size: [2, 2] }]) => zipPth(statePickle(entries), { 0: f32([1, 2, 3, 4]) });
  const raw = (...ops: (number | string)[]) => Buffer.concat([Buffer.from([0x80, 2]), ...ops.map((o) => (typeof o === 'number' ? Buffer.from([o]) : Buffer.from(o, 'latin1')))]);
  const inZip = (pkl: Buffer) => zipPth(pkl, {});
  const tarLike = Buffer.alloc(600);
  tarLike.write('ustar', 257, 'latin1');
  const badCrc = ok();
  badCrc[badCrc.indexOf(Buffer.from('archive/data/0')) + 14 + 60] ^= 1; // a byte of the storage's data (64-byte aligned)
  const compressed = ok();
  compressed.writeUInt16LE(8, compressed.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])) + 10); // central directory: deflate
  const cases: [string, Buffer, RegExp][] = [
    ['empty file', Buffer.alloc(0), /not a PyTorch file \(neither a zip archive nor a pickle stream; 0 bytes\)/],
    ['text', Buffer.from('hello world'), /not a PyTorch file/],
    ['tar format', tarLike, /a tar-format PyTorch file \(written by PyTorch before 0\.1\.10\), which is not read/],
    ['zip cut short', ok().subarray(0, 200), /not a valid zip archive: no end-of-central-directory record/],
    ['zip entry compressed', compressed, /entry 'archive\/data\.pkl' is compressed \(method 8\); PyTorch writes stored entries only/],
    ['zip CRC mismatch', badCrc, /zip entry 'archive\/data\/0' is corrupt: CRC-32 0x[0-9a-f]{8}, the directory says 0x[0-9a-f]{8}/],
    ['zip without data.pkl', Buffer.concat(writeZip([{ name: 'a/b.txt', data: [Buffer.from('x')] }])), /a zip archive without <name>\/data\.pkl: not a torch\.save file \(entries: a\/b\.txt\)/],
    ['storage record missing', zipPth(statePickle([{ name: 'w', numel: 4, size: [4] }]), {}), /storage '0' has no record archive\/data\/0/],
    ['storage record of the wrong size', zipPth(statePickle([{ name: 'w', numel: 4, size: [4] }]), { 0: f32([1, 2]) }), /storage '0' holds 8 bytes; 4 elements of FloatStorage need 16/],
    ['big-endian file', zipPth(statePickle([]), {}, [{ name: 'archive/byteorder', data: Buffer.from('big') }]), /byteorder 'big'; only little-endian files are read/],
    ['global os.system', inZip(raw('cposix\nsystem\n', 0x29, 0x52, 0x2e)), /global 'posix\.system' is not allowed: a state dict needs only collections\.OrderedDict, .* \(torch\.load\(weights_only=True\) refuses it too\)/],
    ['global builtins.eval', inZip(raw('cbuiltins\neval\n', 0x2e)), /global 'builtins\.eval' is not allowed/],
    ['STACK_GLOBAL of subprocess', inZip(raw(0x8c, 10, 'subprocess', 0x8c, 5, 'Popen', 0x93, 0x2e)), /global 'subprocess\.Popen' is not allowed/],
    ['complex storage', zipPth(statePickle([{ name: 'w', storage: 'ComplexFloatStorage', numel: 1, size: [1] }]), { 0: Buffer.alloc(8) }), /global 'torch\.ComplexFloatStorage' is not allowed/],
    ['NEWOBJ', inZip(raw('ccollections\nOrderedDict\n', 0x29, 0x81, 0x2e)), /opcode NEWOBJ is not read/],
    ['INST (protocol 0)', inZip(raw('ios\nsystem\n', 0x2e)), /opcode INST is not read/],
    ['REDUCE of a string', inZip(raw(0x8c, 1, 'x', 0x29, 0x52, 0x2e)), /REDUCE calls "x", which is not an allowed function/],
    ['BUILD on a tensor-less value', inZip(raw(0x4e, 0x7d, 0x62, 0x2e)), /BUILD of None with dict\(0 items\); only a dict's attributes are set/],
    ['BINGET of an unset slot', inZip(raw(0x68, 7, 0x2e)), /BINGET 7 of a memo slot never set/],
    ['no STOP', inZip(raw(0x7d)), /the pickle ends without STOP \(truncated\?\)/],
    ['stack underflow', inZip(raw(0x85, 0x2e)), /TUPLE1 found no value on the stack/],
    ['BINUNICODE claiming 4 GB', inZip(raw(0x58, '\xff\xff\xff\xff', 'abc')), /BINUNICODE needs 4294967295 bytes, 3 are left \(truncated\?\)/],
    ['BINBYTES8 claiming 2^60', inZip(raw(0x8e, '\x00\x00\x00\x00\x00\x00\x00\x10')), /length 1152921504606846976 is larger than any file/],
    ['LONG4 of 1 GB', inZip(raw(0x8b, '\x00\x00\x00\x40')), /LONG4 of 1073741824 bytes; a state dict's integers fit in 64/],
    ['unknown opcode', inZip(raw(0xff)), /unknown opcode 0xff/],
    ['protocol 9', inZip(Buffer.from([0x80, 9, 0x2e])), /protocol 9; only the binary protocols 2-5 are read/],
    ['a list, not a dict', inZip(raw(0x5d, 0x2e)), /the pickle holds \[\], not a state dict/],
    ['a value that is not a tensor', inZip(raw(0x7d, 0x8c, 5, 'epoch', 0x4b, 3, 0x73, 0x2e)), /'epoch' is 3, not a tensor; expected a state dict/],
    ['persistent id of a module', inZip(raw(0x8c, 6, 'module', 0x85, 0x51, 0x2e)), /persistent id \("module"\): expected a 5-tuple/],
    ['offset past the storage', ok([{ name: 'w', numel: 4, size: [2, 2], offset: 1 }]), /tensor 'w' \(FloatStorage, size \[2, 2\], stride \[2, 1\], offset 1\): reaches element 4 of a storage of 4/],
    ['stride past the storage', ok([{ name: 'w', numel: 4, size: [2, 2], stride: [3, 1] }]), /reaches element 4 of a storage of 4/],
    ['zero stride (an expanded view)', ok([{ name: 'w', numel: 4, size: [2, 4], stride: [0, 1] }]), /has overlapping elements \(a zero or too small stride\)/],
    ['size and stride of different lengths', ok([{ name: 'w', numel: 4, size: [4], stride: [1, 1] }]), /size \(4\) and stride \(1, 1\) differ in length/],
    ['a storage named with two types', zipPth(statePickle([{ name: 'a', numel: 4, size: [4], key: 's' }, { name: 'b', storage: 'IntStorage', numel: 4, size: [4], key: 's' }]), { s: f32([1, 2, 3, 4]) }), /storage 's' is named as FloatStorage of 4 and as IntStorage of 4/],
    ['int16 storage', zipPth(statePickle([{ name: 'w', storage: 'ShortStorage', numel: 2, size: [2] }]), { 0: Buffer.alloc(4) }), /tensor 'w' .*has dtype ShortStorage, which vggnet does not read/],
    ['tensors claiming far more elements than the file', zipPth(statePickle(Array.from({ length: 200 }, (_, i) => ({ name: `t${i}`, key: '0', numel: 4096, size: [4096] }))), { 0: Buffer.alloc(16384) }), /its tensors claim 819200 elements from a file of \d+ bytes/],
    ['legacy: wrong magic', legacyPth(statePickle([], true), [], { magic: 12345n }), /not a PyTorch file: it starts with a pickle of 12345, not torch\.save's magic number/],
    ['legacy: protocol 1000', legacyPth(statePickle([], true), [], { protocol: 1000 }), /legacy torch\.save protocol version 1000; only 1001 is read/],
    ['legacy: big-endian', legacyPth(statePickle([], true), [], { littleEndian: false }), /does not say little_endian=True; only little-endian files are read/],
    ['legacy: storage data cut short', legacyPth(statePickle([{ name: 'w', numel: 4, size: [4] }], true), [['0', 4, f32([1, 2])]]), /storage '0' needs bytes \[\d+, \d+\), the file has \d+ \(truncated\?\)/],
    ['legacy: count disagrees with the pickle', legacyPth(statePickle([{ name: 'w', numel: 4, size: [4] }], true), [['0', 3, f32([1, 2, 3, 4])]]), /storage '0' at byte \d+ says 3 elements, the pickle 4/],
    ['legacy: storage never listed', legacyPth(statePickle([{ name: 'w', numel: 4, size: [4] }], true), []), /storage '0' is used but its data is not in the file/],
    ['legacy: trailing bytes', Buffer.concat([legacyPth(statePickle([{ name: 'w', numel: 1, size: [1] }], true), [['0', 1, f32([1])]]), Buffer.alloc(3)]), /3 bytes after the last storage/],
  ];
  test.each(cases)('%s', (_name, buf, msg) => {
    const rss0 = process.memoryUsage().rss;
    let err: unknown;
    try {
      parsePth(buf, 'hostile.pth');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^hostile\.pth: /);
    expect((err as Error).message).toMatch(msg);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(256 << 20);
  });

  test('the hand-made files are valid when nothing is wrong (zip and legacy), views and offsets included', () => {
    const entries: Entry[] = [{ name: 'w', numel: 6, size: [2, 2], offset: 2 }, { name: 't', numel: 6, size: [3, 2], stride: [1, 3], key: '0' }];
    const a = parsePth(zipPth(statePickle(entries), { 0: f32([0, 1, 2, 3, 4, 5]) }), 'a.pth').tensors;
    const b = parsePth(legacyPth(statePickle(entries, true), [['0', 6, f32([0, 1, 2, 3, 4, 5])]]), 'b.pth').tensors;
    for (const r of [a, b]) {
      expect((r.w as Tensor).toNumbers()).toEqual([2, 3, 4, 5]);
      expect((r.t as Tensor).toNumbers()).toEqual([0, 3, 1, 4, 2, 5]);
      for (const v of Object.values(r)) (v as Tensor).dispose();
    }
  });

  test('loadStateDict of a .pth that does not match the model names the tensors; a missing file is an error naming it', () => {
    const f = path.join(tmp, 'other.pth');
    fs.writeFileSync(f, ok());
    const m = new VGGNet([4, 'M', 4, 'M', 4, 'M', 4, 'M', 4, 'M'], { numClasses: 2, hiddenFeatures: 4, device: 'cpu' });
    expect(() => m.loadStateDict(f)).toThrow(/other\.pth: state dict does not match the model \(missing: features\.0\.weight, .*; unexpected: w\)/);
    expect(() => m.loadStateDict(tmp + '/x.pth')).toThrow(/x\.pth: cannot read \(ENOENT\)/);
  });
});

describe('SGD hyper-parameters set after construction', () => {
  // The constructor refused opt.lr = -5, the setter took it (and step then climbed the loss, or wrote NaN weights).
  test('every setter checks what the constructor checks, with the same message and error class', () => {
    const opt = sgd({ lr: 0.1, momentum: 0.9 });
    const cases: [() => void, ErrorConstructor, RegExp][] = [
      [() => (opt.lr = -5), RangeError, /^sgd: invalid lr -5 \(expected a finite number >= 0\)$/],
      [() => (opt.lr = NaN), RangeError, /^sgd: invalid lr NaN/],
      [() => (opt.lr = Infinity), RangeError, /^sgd: invalid lr Infinity/],
      [() => (opt.lr = '0.1' as never), TypeError, /^sgd: lr must be a number, got string$/],
      [() => (opt.momentum = -0.1), RangeError, /^sgd: invalid momentum -0\.1/],
      [() => (opt.weightDecay = NaN), RangeError, /^sgd: invalid weightDecay NaN/],
      [() => (opt.dampening = -1), RangeError, /^sgd: invalid dampening -1/],
      [() => (opt.nesterov = 1 as never), TypeError, /^sgd: nesterov must be a boolean, got number$/],
      [() => (opt.stepCount = -1), RangeError, /^sgd: invalid stepCount -1 \(expected an integer >= 0\)$/],
      [() => (opt.stepCount = 1.5), RangeError, /^sgd: invalid stepCount 1\.5/],
      [() => sgd({ lr: -5 }), RangeError, /^sgd: invalid lr -5 \(expected a finite number >= 0\)$/],
      [() => sgd(null as never), TypeError, /^sgd: expected options/],
    ];
    for (const [run, cls, msg] of cases) {
      expect(run).toThrow(cls);
      expect(run).toThrow(msg);
    }
    // Nothing was changed by the refused values.
    expect([opt.lr, opt.momentum, opt.weightDecay, opt.dampening, opt.nesterov, opt.stepCount]).toEqual([0.1, 0.9, 0, 0, false, 0]);
    // Nesterov's condition holds both ways round.
    opt.nesterov = true;
    expect(() => (opt.momentum = 0)).toThrow(/^sgd: nesterov needs momentum > 0 and dampening 0$/);
    expect(() => (opt.dampening = 0.5)).toThrow(/^sgd: nesterov needs momentum > 0 and dampening 0$/);
    opt.lr = 0.01;
    opt.momentum = 0.5;
    expect([opt.lr, opt.momentum, opt.nesterov]).toEqual([0.01, 0.5, true]);
  });

  test('a scheduler state from a checkpoint is checked in full and leaves the scheduler as it was when bad', () => {
    const sc = reduceLROnPlateau();
    sc.attach(0.1);
    const good = sc.state();
    for (const [edit, msg] of [
      [{ lr: -1 }, /reduceLROnPlateau\.loadState: 'lr' must be a finite number >= 0, got -1/],
      [{ numBadEpochs: 'x' }, /'numBadEpochs' must be an integer >= 0, got "x"/],
      [{ best: 'NaN' }, /'best' must be a number or "Infinity"\/"-Infinity", got "NaN"/],
      [{ type: 'stepLR' }, /the state is of a 'stepLR' scheduler/],
    ] as [Record<string, unknown>, RegExp][]) {
      expect(() => sc.loadState({ ...good, ...edit })).toThrow(msg);
      expect(sc.state()).toEqual(good);
    }
    const w = linearWarmup({ epochs: 2 });
    w.attach(0.1);
    expect(() => w.loadState({ type: 'linearWarmup', baseLr: 0.1, epoch: 1 })).toThrow(/constant\.loadState: expected a state object, got undefined/);
    expect(() => w.loadState(null as never)).toThrow(/linearWarmup\.loadState: expected a state object, got null/);
  });
});

describe('wrong types and values into the public API', () => {
  // Each a TypeError (wrong type) or RangeError (value out of range) naming the function and what it got, instead
  // of "Cannot read properties of null" from inside, or a value taken and silently misused (precision 'fp16').
  const m = new VGGNet([4, 'M', 4, 'M', 4, 'M', 4, 'M', 4, 'M'], { numClasses: 2, hiddenFeatures: 4, device: 'cpu' });
  afterAll(() => m.dispose());
  const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
    ['VGGNet.forward(null)', () => m.forward(null as never), TypeError, /^VGGNet\.forward: expected a Tensor, got null$/],
    ['VGGNet.forward([..])', () => m.forward([1, 2] as never), TypeError, /^VGGNet\.forward: expected a Tensor, got an array$/],
    ['VGGNet.backward(undefined)', () => m.backward(undefined as never), TypeError, /^VGGNet\.backward: expected a Tensor, got undefined$/],
    ['VGGNet.predict({})', () => m.predict({} as never), TypeError, /^VGGNet\.predict: expected a Tensor, got a Object$/],
    ['crossEntropy(null, ...)', () => crossEntropy(null as never, null as never), TypeError, /^crossEntropy: logits: expected a Tensor, got null$/],
    ['Linear.forward(5)', () => new Linear(2, 2).forward(5 as never), TypeError, /^Linear\.forward: expected a Tensor, got number$/],
    ['VGGNet precision fp16', () => new VGGNet([4, 'M'], { precision: 'fp16' as never, device: 'cpu', hiddenFeatures: 4 }), RangeError, /^VGGNet: precision must be 'fp32', 'tf32' or 'bf16', got 'fp16'$/],
    ['VGGNet inChannels 0', () => new VGGNet([4, 'M'], { inChannels: 0, device: 'cpu', hiddenFeatures: 4 }), RangeError, /^VGGNet: inChannels must be a positive integer, got 0$/],
    ['VGGNet hiddenFeatures 2.5', () => new VGGNet([4, 'M'], { hiddenFeatures: 2.5, device: 'cpu' }), RangeError, /^VGGNet: hiddenFeatures must be a positive integer, got 2\.5$/],
    ['VGGNet config a string', () => new VGGNet('A' as never, { device: 'cpu' }), TypeError, /^VGGNet: expected a config array/],
    ['BatchNorm2d momentum NaN', () => new BatchNorm2d(4, { momentum: NaN }), RangeError, /^BatchNorm2d: momentum must be in \[0, 1\], got NaN$/],
    ['BatchNorm2d eps 0', () => new BatchNorm2d(4, { eps: 0 }), RangeError, /^BatchNorm2d: eps must be a finite number > 0, got 0$/],
    ['Conv2d 1.5 channels', () => new Conv2d(3, 1.5, 3), RangeError, /^Conv2d: outChannels must be an integer >= 1, got 1\.5$/],
    ['MaxPool2d(0)', () => new MaxPool2d(0), RangeError, /^MaxPool2d: kernelSize must be an integer >= 1, got 0$/],
    ['MaxPool2d padding over half', () => new MaxPool2d(2, 2, 2), RangeError, /^MaxPool2d: padding must be at most half the kernel size/],
    ['DataLoader(null)', () => new DataLoader(null as never), TypeError, /^DataLoader: expected a dataset/],
    ['readSafetensors(5)', () => readSafetensors(5 as never), TypeError, /^readSafetensors: expected a file path, got number$/],
    ['loadCheckpoint(undefined)', () => loadCheckpoint(undefined as never), TypeError, /^loadCheckpoint: expected a file path, got undefined$/],
    ['saveStateDict(null)', () => m.saveStateDict(null as never), TypeError, /^writeStateDict: expected a file path, got null$/],
  ];
  test.each(cases)('%s', (_name, run, cls, msg) => {
    expect(run).toThrow(cls);
    expect(run).toThrow(msg);
  });
});
