// Augmentation of uint8 batches after they left the loader: the DataLoader (iterate(..., { deferAugment: true }))
// ships the source images and each sample's drawn parameters, and augmentBatch runs the transform where the images
// are — on the GPU for CUDA tensors (native/cuda/augment.cu), on the host for CPU ones. Either way the result is the
// CPU pipeline's for the same (seed, epoch, index): the parameters are drawn by the same native code, and the
// per-pixel arithmetic is shared (native/data/augment_math.h).
import { DType, Layout, Tensor } from '../tensor';
import { TransformOp } from './transforms';
import { augmentRaw } from './native_source';

export interface DeferredAugment {
  /** float32 [N, 16]: each sample's crop window, flip, jitter order and factors (opaque; on the images' device). */
  params: Tensor;
  /** The transform to run (the loader's dataset transform, flattened). */
  ops: TransformOp[];
}

export interface AugmentOptions {
  /** Output dtype (default float32); bfloat16 rounds the float32 result. */
  dtype?: Extract<DType, 'float32' | 'bfloat16'>;
  /** Output layout (default 'nchw'); 'nhwc' is what a CUDA model in bf16/tf32 runs. */
  layout?: Extract<Layout, 'nchw' | 'nhwc'>;
}

/**
 * The transformed batch [N, 3, oh, ow] from uint8 images [N, 3, h, w] and `augment` (both on one device; move them
 * with `.to('cuda', { nonBlocking: true })` first to augment on the GPU). Does not dispose its inputs.
 */
export function augmentBatch(images: Tensor, augment: DeferredAugment, options: AugmentOptions = {}): Tensor {
  return augmentRaw(images, augment.params, augment.ops, options.dtype ?? 'float32', options.layout ?? 'nchw');
}
