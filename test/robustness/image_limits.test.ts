// The decoded-pixel bound per image. A 16000×16000 PNG of zeros is 746 KB on disk and used to decode to a 2.3 GB peak;
// an image whose header declares more pixels than the limit (default: PIL's decompression-bomb limit, 178956970) is
// refused from its header, before any decoding, with an error naming the image, its size and the limit, and the limit
// can be raised (maxPixels on ImageFolder/ImageFiles/predictFiles, VGGNET_MAX_IMAGE_PIXELS, predict's
// --max-image-pixels) or lowered.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { ImageFiles, ImageFolder, DEFAULT_MAX_IMAGE_PIXELS, maxImagePixels } from '../../lib/data';
import { crc32 } from '../../lib/io/crc';
import { main as predictMain, predictFiles } from '../../lib/cli/predict';
import { saveCheckpoint, modelSpec, CHECKPOINT_FORMAT, packageVersion } from '../../lib/train/checkpoint';
import { VGGNet } from '../../lib/models/vgg';
import { asanQuarantineMiB } from '../helpers/asan';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-pixels-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A PNG whose header declares width × height RGB pixels, with one short IDAT: what a decoder sees first. */
function pngHeader(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, no filter, no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
}
const writeFile = (rel: string, b: Buffer) => {
  const p = path.join(tmp, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, b);
  return p;
};
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('decoded pixels per image', () => {
  let small: Buffer; // 64×48 = 3072 pixels
  beforeAll(async () => {
    small = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#204060' } }).png().toBuffer();
  });
  afterEach(() => {
    delete process.env.VGGNET_MAX_IMAGE_PIXELS;
  });

  test('a 16000×16000 PNG is refused from its header: RangeError naming the image, its pixels and the limit; no decode', async () => {
    const bomb = writeFile('bomb/cls/bomb.png', pngHeader(16000, 16000));
    writeFile('bomb/cls/ok.png', small);
    const rss0 = process.memoryUsage().rss;
    const ds = new ImageFolder({ root: path.join(tmp, 'bomb') });
    let err: unknown;
    await ds.load().catch((e) => (err = e));
    expect(err).toBeInstanceOf(RangeError);
    expect((err as Error).message).toBe(
      `ImageFolder: ${bomb}: png 16000×16000 is 256000000 pixels, over the limit of ${DEFAULT_MAX_IMAGE_PIXELS} decoded pixels per image ` +
      '(raise it with the maxPixels option, VGGNET_MAX_IMAGE_PIXELS or --max-image-pixels)',
    );
    // Nothing near the 768 MB the pixels would take was allocated.
    expect(process.memoryUsage().rss - rss0).toBeLessThan((200 + asanQuarantineMiB()) * 2 ** 20);
  });

  test('maxPixels lowers and raises the limit (ImageFolder, ImageFiles); the limit itself is allowed', async () => {
    writeFile('opt/cls/a.png', small);
    await expect(new ImageFolder({ root: path.join(tmp, 'opt'), maxPixels: 3071 }).load()).rejects.toThrow(/a\.png: png 64×48 is 3072 pixels, over the limit of 3071 decoded pixels per image/);
    const ok = new ImageFolder({ root: path.join(tmp, 'opt'), maxPixels: 3072 });
    await ok.load();
    expect(ok.get(0).image.shape).toEqual([3, 48, 64]);
    const files = new ImageFiles([path.join(tmp, 'opt/cls/a.png')], undefined, { maxPixels: 100 });
    await expect(files.load()).rejects.toThrow(/^predict: .*a\.png: png 64×48 is 3072 pixels, over the limit of 100 /);
    // Raised above the default, a header-only bomb gets past the check and fails as the broken image it is.
    const bomb = writeFile('big/cls/b.png', pngHeader(16000, 16000));
    await expect(new ImageFiles([bomb], undefined, { maxPixels: 2 ** 30 }).load()).rejects.toThrow(/b\.png: (corrupt image data|truncated image)/);
  });

  test('VGGNET_MAX_IMAGE_PIXELS sets the default; a bad value or option is a RangeError naming it', async () => {
    writeFile('env/cls/a.png', small);
    process.env.VGGNET_MAX_IMAGE_PIXELS = '3000';
    expect(maxImagePixels()).toBe(3000);
    await expect(new ImageFolder({ root: path.join(tmp, 'env') }).load()).rejects.toThrow(/over the limit of 3000 decoded pixels/);
    expect(maxImagePixels(5000)).toBe(5000); // the option wins
    for (const bad of ['abc', '0', '-5', '1e9', '99999999999999999999']) {
      process.env.VGGNET_MAX_IMAGE_PIXELS = bad;
      expect(() => maxImagePixels()).toThrow(new RangeError(`VGGNET_MAX_IMAGE_PIXELS must be a positive integer, got '${bad}'`));
      expect(() => new ImageFolder({ root: path.join(tmp, 'env') })).toThrow(/VGGNET_MAX_IMAGE_PIXELS must be a positive integer/);
    }
    delete process.env.VGGNET_MAX_IMAGE_PIXELS;
    for (const bad of [0, -1, 1.5, NaN]) expect(() => maxImagePixels(bad)).toThrow(RangeError);
  });

  describe('predict', () => {
    let ck: string;
    beforeAll(() => {
      const m = new VGGNet([4, 'M', 4, 'M', 4, 'M', 4, 'M', 4, 'M'], { numClasses: 2, hiddenFeatures: 4, device: 'cpu', seed: 1 });
      ck = path.join(tmp, 'ck.safetensors');
      saveCheckpoint(ck, m.stateDict(), {}, {
        format: CHECKPOINT_FORMAT, packageVersion: packageVersion(), epoch: 1, batchInEpoch: 0, step: 1, lr: 0.1, model: modelSpec(m),
        config: { imageSize: 32 }, hyperParameters: {}, scheduler: null, rng: { dropout: [{ seed: 1, calls: 0 }, { seed: 2, calls: 0 }], loader: null },
        metrics: null, partial: null, history: [], best: null, classes: ['a', 'b'], created: 'now',
      });
      m.dispose();
    });
    const io = () => {
      let out = '', err = '';
      return { io: { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) } } as never, out: () => out, err: () => err };
    };

    test('predictFiles takes maxPixels; --max-image-pixels sets it on the command line', async () => {
      const img = writeFile('pred/a.png', small);
      await expect(predictFiles(ck, [img], { maxPixels: 3000 })).rejects.toThrow(new RegExp(`^predict: ${esc(img)}: png 64×48 is 3072 pixels, over the limit of 3000 `));
      expect((await predictFiles(ck, [img], { maxPixels: 3072 }))[0].top.length).toBe(2);
      const c = io();
      expect(await predictMain(['--checkpoint', ck, '--max-image-pixels', '3000', img], c.io)).not.toBe(0);
      expect(c.err()).toMatch(/a\.png: png 64×48 is 3072 pixels, over the limit of 3000 decoded pixels per image/);
      const d = io();
      expect(await predictMain(['--checkpoint', ck, '--max-image-pixels', '0', img], d.io)).not.toBe(0);
      expect(d.err()).toMatch(/--max-image-pixels must be a positive integer, got '0'/);
      const e = io();
      expect(await predictMain(['--checkpoint', ck, '--max-image-pixels', '4000', img], e.io)).toBe(0);
      expect(e.out()).toMatch(/a\.png/);
    });
  });
});
