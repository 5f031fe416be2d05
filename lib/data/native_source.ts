// The data layer's native side (native/data/, bound in native/bindings/bind_data.cc): sources of samples (STL10 files
// read with pread, or decoded images in memory), single samples, batches assembled on worker threads, and the
// deferred augmentation of uint8 batches. The rest of lib/data/ goes through these functions.
import { addon, NativeSource, NativeTransformOp } from '../native';
import { DType, Layout, Tensor } from '../tensor';
import { TransformOp } from './transforms';

export type { NativeSource } from '../native';

const opsOf = (ops: TransformOp[]) => ops as unknown as NativeTransformOp[];

/** STL10 binary files: [images.bin, labels.bin | null] per part, optionally restricted to `subset` (fold indices). */
export function stl10Source(parts: [string, string | null][], subset: Int32Array | null = null): NativeSource {
  return addon().dataStl10Source(parts, subset);
}
/** Images copied into native memory: `shapes` holds [c, h, w] per image; `order` says how the bytes are laid out. */
export function memorySource(images: Uint8Array[], shapes: Int32Array, labels: Int32Array, order: 'chw' | 'hwc'): NativeSource {
  return addon().dataMemorySource(images, shapes, labels, order === 'hwc');
}
export function sourceLength(src: NativeSource): number {
  return addon().dataSourceLength(src);
}
export function sourceLabels(src: NativeSource): Int32Array {
  return addon().dataSourceLabels(src);
}
/** Sample `index` as stored (uint8 CHW), or transformed with (seed, epoch) when `ops` is not empty (float32 CHW). */
export function sourceGet(src: NativeSource, index: number, ops: TransformOp[], seed: number, epoch: number): { image: Tensor; label: number } {
  const r = ops.length === 0 ? addon().dataGet(src, index) : addon().dataGetTransformed(src, index, opsOf(ops), seed, epoch);
  return { image: Tensor.fromNative(r.image), label: r.label };
}
/** One uint8 CHW image through `ops`, as sample `index` of (seed, epoch) would be (tests and tools). */
export function transformImage(u8: Uint8Array, shape: number[], ops: TransformOp[], seed: number, epoch: number, index: number): { data: Float32Array; shape: number[] } {
  return addon().dataTransformImage(u8, shape, opsOf(ops), seed, epoch, index);
}

export interface NativeBatch {
  images: Tensor;
  labels: Tensor;
  /** With `raw`: each sample's drawn augmentation parameters (float32 [n, 16]); images are then uint8. */
  params?: Tensor;
}
/** Assembles the samples `indices` on `threads` worker threads, off the JS thread. */
export async function loadBatch(src: NativeSource, indices: Int32Array, ops: TransformOp[], seed: number, epoch: number, threads: number,
  raw: boolean): Promise<NativeBatch> {
  const r = await addon().dataLoadBatch(src, indices, opsOf(ops), seed, epoch, threads, raw);
  return { images: Tensor.fromNative(r.images), labels: Tensor.fromNative(r.labels), params: r.params ? Tensor.fromNative(r.params) : undefined };
}
/** Null when uint8 batches of this source can be augmented by augmentRaw with `ops`; else the reason. */
export function augmentSupport(src: NativeSource, ops: TransformOp[]): string | null {
  return addon().dataAugmentSupport(src, opsOf(ops));
}
/** Runs `ops` over a uint8 batch with its drawn parameters, where the tensors are (GPU or host). */
export function augmentRaw(images: Tensor, params: Tensor, ops: TransformOp[], dtype: DType, layout: Layout): Tensor {
  return Tensor.fromNative(addon().dataAugmentBatch(images.native, params.native, opsOf(ops), dtype, layout));
}
