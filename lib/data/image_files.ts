// Image files decoded with sharp into native memory: the decode ImageFolder and predict share, and ImageFiles, a
// dataset over a plain list of files (unlabeled), which is what predict runs its eval transform over.
import sharp from 'sharp';
import type { Metadata, OutputInfo } from 'sharp';
import { NativeDataset } from './dataset';
import { Transform } from './transforms';
import { memorySource, NativeSource } from './native_source';
import { NotRegularFileError, readRegularFile } from '../io/files';

/** An RGB image as sharp decodes it: interleaved (HWC) uint8. */
export interface DecodedImage {
  data: Uint8Array;
  height: number;
  width: number;
}

/**
 * The most pixels an image may decode to unless raised: PIL's decompression-bomb limit (2 × Image.MAX_IMAGE_PIXELS),
 * above which torchvision's loader refuses an image too. A 16000×16000 PNG of zeros is 746 KB on disk and 768 MB
 * decoded; this stops it at its header.
 */
export const DEFAULT_MAX_IMAGE_PIXELS = 178_956_970;

/** The pixel limit: `option`, else $VGGNET_MAX_IMAGE_PIXELS, else DEFAULT_MAX_IMAGE_PIXELS; validated. */
export function maxImagePixels(option?: number): number {
  if (option !== undefined && option !== null) {
    if (!Number.isSafeInteger(option) || option < 1) throw new RangeError(`maxPixels must be a positive integer, got ${option}`);
    return option;
  }
  const env = process.env.VGGNET_MAX_IMAGE_PIXELS;
  if (env === undefined || env === '') return DEFAULT_MAX_IMAGE_PIXELS;
  const n = /^\d+$/.test(env.trim()) ? Number(env.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`VGGNET_MAX_IMAGE_PIXELS must be a positive integer, got '${env}'`);
  return n;
}

/** sharp's message in one line: repeated decoder lines once each, its "Input ... has corrupt header:" prefix dropped. */
function decoderMessage(e: unknown): string {
  const lines = String((e as Error).message ?? e).split('\n').map((l) => l.replace(/^Input (file|buffer) has corrupt header:\s*/, '').trim());
  return [...new Set(lines.filter((l) => l.length > 0))].join('; ');
}

/**
 * How the bytes show that the file was cut short, or null: a JPEG without its end-of-image marker, a PNG without
 * its IEND chunk, a WebP shorter than its RIFF header says, a GIF without its trailer.
 */
function truncation(b: Buffer): string | null {
  const starts = (...sig: number[]) => sig.every((x, i) => b[i] === x);
  if (starts(0xff, 0xd8, 0xff)) {
    return b.length >= 4 && b[b.length - 2] === 0xff && b[b.length - 1] === 0xd9 ? null : 'the file ends without JPEG\'s end-of-image marker (FF D9)';
  }
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) {
    return b.length >= 20 && b.subarray(b.length - 8, b.length - 4).toString('latin1') === 'IEND' ? null : 'the file ends without PNG\'s IEND chunk';
  }
  if (b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') {
    const want = b.readUInt32LE(4) + 8;
    return b.length < want ? `the RIFF header says ${want} bytes` : null;
  }
  if (starts(0x47, 0x49, 0x46, 0x38)) return b[b.length - 1] === 0x3b ? null : 'the file ends without GIF\'s trailer (3B)';
  return null;
}

/** An image file's bytes, or an error naming it: not a regular file, unreadable, empty. */
async function imageBytes(file: string, who: string): Promise<Buffer> {
  let bytes: Buffer;
  try {
    bytes = await readRegularFile(file);
  } catch (e) {
    if (e instanceof NotRegularFileError) throw new Error(`${who}: ${file}: expected an image file, got ${e.kind}`);
    throw new Error(`${who}: ${(e as Error).message}`);
  }
  if (bytes.length === 0) throw new Error(`${who}: ${file}: expected an image, got an empty file (0 bytes)`);
  return bytes;
}

/**
 * Decodes `file` to 8-bit RGB; `who` prefixes the error ("ImageFolder", "predict"). Only regular files are opened;
 * an image whose header declares more than `maxPixels` pixels is refused before it is decoded. Errors name the file
 * and say what is wrong: not a regular file, empty, not an image, a corrupt header, truncated data, too many pixels.
 */
export async function decodeImageFile(file: string, who: string, maxPixels = maxImagePixels()): Promise<DecodedImage> {
  const bytes = await imageBytes(file, who);
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata(); // the header only
  } catch (e) {
    const msg = decoderMessage(e);
    if (/unsupported image format/i.test(msg)) {
      const head = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
      throw new Error(`${who}: ${file}: not an image (no JPEG, PNG, WebP, GIF, TIFF or AVIF signature; the file starts with ${head})`);
    }
    // The decoder's own words can be missing: libvips keeps them in one process-wide buffer, which a concurrent
    // decode may clear first.
    const cut = truncation(bytes);
    throw new Error(cut ? `${who}: ${file}: truncated image: ${cut} (${bytes.length} bytes; the header cannot be read${msg ? `: ${msg}` : ''})`
      : `${who}: ${file}: corrupt image header (${msg || 'the decoder gave no detail'})`);
  }
  const w = meta.width ?? 0, h = meta.height ?? 0;
  const what = `${meta.format ?? 'image'} ${w}×${h}`;
  if (w * h > maxPixels) {
    throw new RangeError(
      `${who}: ${file}: ${what} is ${w * h} pixels, over the limit of ${maxPixels} decoded pixels per image ` +
      '(raise it with the maxPixels option, VGGNET_MAX_IMAGE_PIXELS or --max-image-pixels)',
    );
  }
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'warning' }).removeAlpha().toColourspace('srgb').raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    // sharp says "Warning treated as error due to failOn setting" and appends the decoder's warnings when it has them
    // (libvips keeps them in one process-wide queue, so a concurrent decode can take them): the file itself says more.
    const detail = decoderMessage(String((e as Error).message ?? e).replace(/^Warning treated as error due to failOn setting$/m, ''));
    const cut = truncation(bytes);
    if (cut) throw new Error(`${who}: ${file}: truncated image: ${cut} (${what}, ${bytes.length} bytes${detail ? `; ${detail}` : ''})`);
    throw new Error(`${who}: ${file}: corrupt image data (${what}; ${detail || 'the decoder reported damaged data'})`);
  }
  const { width, height, channels } = out.info;
  if (channels !== 3 || out.data.length !== width * height * 3) {
    throw new Error(`${who}: ${file}: expected 8-bit RGB after conversion, got ${channels} channels, ${out.data.length} bytes for ${width}×${height}`);
  }
  return { data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength), height, width };
}

/** Decodes `files` (`concurrency` at a time) into a native memory source with these labels. */
export async function decodeToSource(files: string[], labels: Int32Array, who: string, concurrency = 16,
  maxPixels = maxImagePixels()): Promise<NativeSource> {
  const n = files.length;
  const images: Uint8Array[] = new Array(n);
  const shapes = new Int32Array(3 * n);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const img = await decodeImageFile(files[i], who, maxPixels);
      images[i] = img.data;
      shapes.set([3, img.height, img.width], 3 * i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return memorySource(images, shapes, labels, 'hwc');
}

export interface ImageFilesOptions {
  /** The most pixels one image may decode to (default: $VGGNET_MAX_IMAGE_PIXELS, else DEFAULT_MAX_IMAGE_PIXELS). */
  maxPixels?: number;
}

/** Unlabeled images from a list of files, in that order (label -1). */
export class ImageFiles extends NativeDataset {
  readonly classes: string[] = [];
  private readonly maxPixels: number;
  constructor(readonly files: string[], transform?: Transform, options: ImageFilesOptions = {}) {
    super(transform);
    if (!Array.isArray(files) || !files.every((f) => typeof f === 'string')) throw new TypeError('ImageFiles: expected an array of file paths');
    this.maxPixels = maxImagePixels(options.maxPixels);
  }
  async load(): Promise<void> {
    if (this.source) return;
    this.source = await decodeToSource(this.files, new Int32Array(this.files.length).fill(-1), 'predict', 16, this.maxPixels);
  }
  protected notReady(): Error {
    return new Error('ImageFiles: images are not decoded yet; call `await dataset.load()` first');
  }
}
