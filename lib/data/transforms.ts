// Transforms with torchvision's names and semantics. Each call returns a plain, JSON-able description; the native
// data pipeline (native/data/transforms.cc) executes it on worker threads. The image enters as uint8 CHW and is
// converted to float32 in [0, 1] first (torchvision's ToTensor), then every op runs on float32 CHW — torchvision's
// float tensor path, so nothing is rounded between ops. Resampling is bilinear without antialiasing
// (torch.nn.functional.interpolate, align_corners=False; torchvision's `antialias=False`).

/** A number: a square of that side (or, for resize, the shorter edge); [h, w]: exactly that. */
export type Size = number | [number, number];

export interface ResizeOptions {
  /** The longer edge is at most this after a shorter-edge resize (torchvision's max_size); unset: no bound. */
  maxSize?: number;
}
export interface RandomResizedCropOptions {
  /** Range of the crop's area as a fraction of the image's, [min, max] (default [0.08, 1], torchvision's). */
  scale?: [number, number];
  /** Range of the crop's aspect ratio w/h, drawn log-uniformly, [min, max] (default [3/4, 4/3]). */
  ratio?: [number, number];
}

export interface ResizeOp {
  type: 'resize';
  /** A number resizes the shorter edge to it (aspect kept); [h, w] resizes to exactly that. */
  size: number | [number, number];
  /** See ResizeOptions.maxSize. */
  maxSize?: number;
}
export interface CenterCropOp {
  type: 'centerCrop';
  /** Output [h, w]. */
  size: [number, number];
}
export interface RandomResizedCropOp {
  type: 'randomResizedCrop';
  /** Output [h, w]. */
  size: [number, number];
  /** See RandomResizedCropOptions. */
  scale: [number, number];
  /** See RandomResizedCropOptions. */
  ratio: [number, number];
}
export interface RandomHorizontalFlipOp {
  type: 'randomHorizontalFlip';
  /** Probability of a flip. */
  p: number;
}
export interface ColorJitterOp {
  type: 'colorJitter';
  /** Factor ranges [lo, hi]; null when the factor is off. */
  brightness: [number, number] | null;
  contrast: [number, number] | null;
  saturation: [number, number] | null;
  hue: [number, number] | null;
}
export interface NormalizeOp {
  type: 'normalize';
  /** Per-channel mean (RGB), of the [0, 1] image. */
  mean: [number, number, number];
  /** Per-channel standard deviation (RGB). */
  std: [number, number, number];
}
export type TransformOp =
  | ResizeOp
  | CenterCropOp
  | RandomResizedCropOp
  | RandomHorizontalFlipOp
  | ColorJitterOp
  | NormalizeOp;
export interface ComposeOp {
  type: 'compose';
  /** Applied in order. */
  transforms: Transform[];
}
export type Transform = TransformOp | ComposeOp;

export const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];

function posInt(v: number, what: string): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${what}: expected a positive integer, got ${v}`);
  return v;
}
function hw(size: Size, what: string): [number, number] {
  if (typeof size === 'number') return [posInt(size, what), posInt(size, what)];
  if (!Array.isArray(size) || size.length !== 2) throw new TypeError(`${what}: expected a number or [h, w]`);
  return [posInt(size[0], what), posInt(size[1], what)];
}

/** torchvision Resize(size): a number matches the shorter edge (aspect kept), [h, w] is exact. Bilinear. */
export function resize(size: Size, options: ResizeOptions = {}): ResizeOp {
  const op: ResizeOp = { type: 'resize', size: typeof size === 'number' ? posInt(size, 'resize') : hw(size, 'resize') };
  if (options.maxSize !== undefined) op.maxSize = posInt(options.maxSize, 'resize: maxSize');
  return op;
}

/** torchvision CenterCrop(size): pads with zeros where the crop is larger than the image. */
export function centerCrop(size: Size): CenterCropOp {
  return { type: 'centerCrop', size: hw(size, 'centerCrop') };
}

/** torchvision RandomResizedCrop(size, scale, ratio): 10 sampling attempts, then a central crop; bilinear. */
export function randomResizedCrop(
  size: Size,
  options: RandomResizedCropOptions = {},
): RandomResizedCropOp {
  const scale = options.scale ?? [0.08, 1.0];
  const ratio = options.ratio ?? [3 / 4, 4 / 3];
  if (scale[0] > scale[1] || ratio[0] > ratio[1]) throw new RangeError('randomResizedCrop: scale and ratio should be of kind (min, max)');
  if (!(ratio[0] > 0) || !(scale[1] > 0) || scale[0] < 0) throw new RangeError('randomResizedCrop: scale and ratio must be positive');
  return { type: 'randomResizedCrop', size: hw(size, 'randomResizedCrop'), scale: [scale[0], scale[1]], ratio: [ratio[0], ratio[1]] };
}

/** torchvision RandomHorizontalFlip(p): flips when uniform() < p. */
export function randomHorizontalFlip(p = 0.5): RandomHorizontalFlipOp {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`randomHorizontalFlip: p must be in [0, 1], got ${p}`);
  return { type: 'randomHorizontalFlip', p };
}

type Jitter = number | [number, number];
function jitterRange(v: Jitter, name: string, center: number, bound: [number, number], clipFirst: boolean): [number, number] | null {
  let r: [number, number];
  if (typeof v === 'number') {
    if (v < 0) throw new RangeError(`colorJitter: if ${name} is a single number, it must be non negative, got ${v}`);
    r = [center - v, center + v];
    if (clipFirst) r[0] = Math.max(r[0], 0);
  } else if (Array.isArray(v) && v.length === 2) {
    r = [v[0], v[1]];
  } else {
    throw new TypeError(`colorJitter: ${name} should be a single number or a list/tuple with length 2`);
  }
  if (!(bound[0] <= r[0] && r[0] <= r[1] && r[1] <= bound[1])) {
    throw new RangeError(`colorJitter: ${name} values should be between [${bound}], got [${r}]`);
  }
  return r[0] === center && r[1] === center ? null : r;
}

/**
 * torchvision ColorJitter(brightness, contrast, saturation, hue): factors drawn uniformly from [max(0, 1 - x), 1 + x]
 * (hue from [-h, h], h <= 0.5), applied in a random order per sample. Brightness blends with black, contrast with
 * the mean of the grayscale image, saturation with the per-pixel grayscale, hue shifts H in HSV.
 */
export function colorJitter(brightness: Jitter = 0, contrast: Jitter = 0, saturation: Jitter = 0, hue: Jitter = 0): ColorJitterOp {
  return {
    type: 'colorJitter',
    brightness: jitterRange(brightness, 'brightness', 1, [0, Infinity], true),
    contrast: jitterRange(contrast, 'contrast', 1, [0, Infinity], true),
    saturation: jitterRange(saturation, 'saturation', 1, [0, Infinity], true),
    hue: jitterRange(hue, 'hue', 0, [-0.5, 0.5], false),
  };
}

/** torchvision Normalize(mean, std): (x - mean) / std per channel, on the [0, 1] float image. */
export function normalize(mean: number[], std: number[]): NormalizeOp {
  if (mean.length !== 3 || std.length !== 3) throw new Error('normalize: expected 3 means and 3 stds');
  if (std.some((s) => s === 0)) throw new RangeError('normalize: std evaluated to zero, leading to division by zero');
  return { type: 'normalize', mean: [mean[0], mean[1], mean[2]], std: [std[0], std[1], std[2]] };
}

export function compose(list: Transform[]): ComposeOp {
  if (!Array.isArray(list)) throw new TypeError('compose: expected an array of transforms');
  return { type: 'compose', transforms: list };
}

/** Evaluation preprocessing: resize the shorter edge to round(size / 0.875), then center-crop size (224 -> 256). */
export function evalTransform(size: number): ComposeOp {
  return compose([resize(Math.round(size / 0.875)), centerCrop(size)]);
}

/** The flat op list the native pipeline runs. */
export function flatten(t: Transform | Transform[] | undefined | null): TransformOp[] {
  if (!t) return [];
  if (Array.isArray(t)) return t.flatMap((x) => flatten(x));
  if (t.type === 'compose') return t.transforms.flatMap((x) => flatten(x));
  const known = ['resize', 'centerCrop', 'randomResizedCrop', 'randomHorizontalFlip', 'colorJitter', 'normalize'];
  if (!known.includes((t as TransformOp).type)) throw new TypeError(`transforms: unknown transform ${JSON.stringify(t)}`);
  return [t];
}
