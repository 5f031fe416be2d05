// Image files decoded with sharp into native memory: the decode ImageFolder and predict share, and ImageFiles, a
// dataset over a plain list of files (unlabeled), which is what predict runs its eval transform over.
import sharp from 'sharp';
import { NativeDataset } from './dataset';
import { Transform } from './transforms';
import { memorySource, NativeSource } from './native_source';

/** An RGB image as sharp decodes it: interleaved (HWC) uint8. */
export interface DecodedImage {
  data: Uint8Array;
  height: number;
  width: number;
}

/** Decodes `file` to 8-bit RGB; `who` prefixes the error ("ImageFolder", "predict"). */
export async function decodeImageFile(file: string, who: string): Promise<DecodedImage> {
  let out: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    out = await sharp(file).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new Error(`${who}: ${file}: expected a readable image (JPEG, PNG, WebP, ...), got: ${(e as Error).message}`);
  }
  const { width, height, channels } = out.info;
  if (channels !== 3) throw new Error(`${who}: ${file}: expected 3 channels after conversion, got ${channels}`);
  return { data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength), height, width };
}

/** Decodes `files` (`concurrency` at a time) into a native memory source with these labels. */
export async function decodeToSource(files: string[], labels: Int32Array, who: string, concurrency = 16): Promise<NativeSource> {
  const n = files.length;
  const images: Uint8Array[] = new Array(n);
  const shapes = new Int32Array(3 * n);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const img = await decodeImageFile(files[i], who);
      images[i] = img.data;
      shapes.set([3, img.height, img.width], 3 * i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return memorySource(images, shapes, labels, 'hwc');
}

/** Unlabeled images from a list of files, in that order (label -1). */
export class ImageFiles extends NativeDataset {
  readonly classes: string[] = [];
  constructor(readonly files: string[], transform?: Transform) {
    super(transform);
  }
  async load(): Promise<void> {
    if (this.source) return;
    this.source = await decodeToSource(this.files, new Int32Array(this.files.length).fill(-1), 'predict');
  }
  protected notReady(): Error {
    return new Error('ImageFiles: images are not decoded yet; call `await dataset.load()` first');
  }
}
