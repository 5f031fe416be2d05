// TensorBoard event files read back with a decoder of our own (test/helpers/protowire.ts): the TFRecord framing with
// both masked CRC-32Cs checked, the file version event, scalars and a PNG image; CRC-32C and CRC-32 against their
// published check values; and a short Trainer run whose log folder holds the per-step train loss, every per-epoch
// scalar and the test confusion matrix as an image.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { crc32, crc32c, maskedCrc32c } from '../../lib/io/crc';
import { TensorBoardWriter } from '../../lib/io/tensorboard';
import { confusionPng } from '../../lib/train/logs';
import { VGGNet, sgd } from '../../lib';
import { STL10, DataLoader, transforms as T, generateSampleStl10 } from '../../lib/data';
import { Trainer } from '../../lib/train/index';
import { decodeMessage, num, str, sub, Message } from '../helpers/protowire';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-tb-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** CRC-32C bit by bit (no table), the reference for the library's table form. */
function crc32cBitwise(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}
const mask = (c: number) => ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;

/** The events of a TFRecord file; throws on a bad length or data CRC. */
function readEvents(file: string): Message[] {
  const b = fs.readFileSync(file);
  const out: Message[] = [];
  let p = 0;
  while (p < b.length) {
    const lenBytes = b.subarray(p, p + 8);
    if (b.readUInt32LE(p + 8) !== mask(crc32cBitwise(lenBytes))) throw new Error(`record at ${p}: length CRC mismatch`);
    const n = Number(b.readBigUInt64LE(p));
    const data = b.subarray(p + 12, p + 12 + n);
    if (b.readUInt32LE(p + 12 + n) !== mask(crc32cBitwise(data))) throw new Error(`record at ${p}: data CRC mismatch`);
    out.push(decodeMessage(data));
    p += 16 + n;
  }
  return out;
}
/** Event.summary.value entries as { step, tag, simple_value | image }. */
function values(events: Message[]) {
  return events.flatMap((e) => sub(e, 5).flatMap((s) => sub(s, 1).map((v) => ({
    step: num(e, 2) ?? 0, tag: str(v, 1)!, value: num(v, 2), image: sub(v, 4)[0],
  }))));
}

test('CRC-32C and CRC-32 check values; the masked form', () => {
  const check = Buffer.from('123456789');
  expect(crc32c(check)).toBe(0xe3069283); // the CRC-32C check value (RFC 3720's polynomial)
  expect(crc32(check)).toBe(0xcbf43926); // the CRC-32 check value
  expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43); // RFC 3720 B.4: 32 bytes of ones
  for (const s of ['', 'a', 'TensorBoard', 'x'.repeat(1000)]) {
    expect(crc32c(Buffer.from(s))).toBe(crc32cBitwise(Buffer.from(s)));
    expect(maskedCrc32c(Buffer.from(s))).toBe(mask(crc32cBitwise(Buffer.from(s))));
  }
  expect(crc32(Buffer.from('world'), crc32(Buffer.from('hello ')))).toBe(crc32(Buffer.from('hello world')));
});

test('writer: file version first, then scalars and a PNG image, every record CRC-checked', async () => {
  const dir = path.join(tmp, 'w');
  const w = new TensorBoardWriter(dir);
  w.addScalar('loss/train', 2.5, 10, 1000.5);
  w.addScalars({ 'top1/test': 0.25, skipped: NaN }, 20);
  const img = await confusionPng([[3, 1], [0, 4]], 8);
  w.addImage('confusion/test', img.png, { width: img.width, height: img.height }, 20);
  w.close();
  expect(path.basename(w.file)).toMatch(/^events\.out\.tfevents\.\d+\./);
  const events = readEvents(w.file);
  expect(str(events[0], 3)).toBe('brain.Event:2');
  expect(events[0].get(1)![0].value).toBeGreaterThan(1e9); // wall_time (double)
  const v = values(events);
  expect(v.map((x) => [x.step, x.tag])).toEqual([[10, 'loss/train'], [20, 'top1/test'], [20, 'confusion/test']]);
  expect(v[0].value).toBe(2.5);
  expect(events[1].get(1)![0].value).toBe(1000.5);
  expect(v[1].value).toBe(0.25);
  const image = v[2].image;
  expect([num(image, 1), num(image, 2), num(image, 3)]).toEqual([19, 19, 3]); // 2 cells of 8 + 3 grid lines
  const png = image.get(4)![0].value as Buffer;
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  expect([info.width, info.height, info.channels]).toEqual([19, 19, 3]);
  const at = (x: number, y: number) => Array.from(data.subarray((y * 19 + x) * 3, (y * 19 + x) * 3 + 3));
  expect(at(0, 0)).toEqual([0xc0, 0xc0, 0xc0]); // grid
  expect(at(14, 14)).toEqual([8, 48, 107]); // row 1 is all predicted as 1: the darkest shade
  expect(at(5, 14)).toEqual([255, 255, 255]); // nothing of class 1 predicted as 0
  expect(at(5, 5)).toEqual([Math.round(255 - 0.75 * 247), Math.round(255 - 0.75 * 207), Math.round(255 - 0.75 * 148)]);
  // A cut-off last record is detected, not misread.
  const cut = path.join(dir, 'cut');
  fs.writeFileSync(cut, fs.readFileSync(w.file).subarray(0, fs.statSync(w.file).size - 3));
  expect(() => readEvents(cut)).toThrow();
});

test('a Trainer run with a log folder writes the TensorBoard file: per-step loss, per-epoch scalars, confusion image', async () => {
  const root = path.join(tmp, 'data');
  generateSampleStl10(path.join(root, 'stl10_binary'), { train: 96, test: 32, unlabeled: 0, seed: 1 });
  const tf = T.compose([T.evalTransform(32), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]);
  const train = new DataLoader(new STL10({ root, split: 'train', transform: tf }), { batchSize: 16, shuffle: true, seed: 1, workers: 1 });
  const test = new DataLoader(new STL10({ root, split: 'test', transform: tf }), { batchSize: 32, workers: 1 });
  const model = new VGGNet([8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'], { numClasses: 10, hiddenFeatures: 16, seed: 1, device: 'cpu' });
  const logDir = path.join(tmp, 'logs');
  const trainer = new Trainer(model, { optimizer: sgd({ lr: 0.01, momentum: 0.9 }), logDir, logEvery: 4, output: null });
  const losses: number[] = [];
  trainer.options.onStep = (s) => { losses.push(s.loss); };
  const r = await trainer.fit(train, { epochs: 2, validation: test });
  const files = fs.readdirSync(logDir).filter((f) => f.startsWith('events.out.tfevents.'));
  expect(files).toHaveLength(1);
  const v = values(readEvents(path.join(logDir, files[0])));
  // 6 steps an epoch: the train loss at steps 4, 8 and 12, equal to what onStep saw (float32 in the file).
  const stepLoss = v.filter((x) => x.tag === 'loss/train_step');
  expect(stepLoss.map((x) => x.step)).toEqual([4, 8, 12]);
  expect(stepLoss.map((x) => x.value)).toEqual([losses[3], losses[7], losses[11]].map(Math.fround));
  for (const [epoch, step] of [[1, 6], [2, 12]]) {
    const rec = r.history[epoch - 1];
    const at = Object.fromEntries(v.filter((x) => x.step === step && x.value !== undefined && x.tag !== 'loss/train_step').map((x) => [x.tag, x.value]));
    expect(at).toEqual({
      'loss/train': Math.fround(rec['train.loss']), 'loss/test': Math.fround(rec['val.loss']),
      'top1/train': Math.fround(rec['train.top1']), 'top1/test': Math.fround(rec['val.top1']),
      'top5/train': Math.fround(rec['train.top5']), 'top5/test': Math.fround(rec['val.top5']),
      lr: Math.fround(rec.lr), img_per_s: Math.fround(rec.img_per_s), epoch,
    });
    const image = v.find((x) => x.step === step && x.tag === 'confusion/test')!.image;
    expect(num(image, 1)).toBe(10 * 32 + 11); // 10 classes, 32-pixel cells
  }
});
