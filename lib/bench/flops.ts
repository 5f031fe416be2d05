// Multiply-add counts of a VGG at a given input size, shared by the CPU and GPU benchmarks.
import type { VGGConfig } from '../models/vgg';

export interface VggMacs {
  /** all 3×3 convolutions of one forward pass of one image */
  conv: number;
  /** the first convolution alone (its input needs no gradient, so a training step skips its backward-data) */
  firstConv: number;
  /** the classifier (7×7×C → 4096 → 4096 → classes) */
  classifier: number;
  total: number;
}

/** Multiply-adds of one image's forward pass: convs 3×3 pad 1 from the config table, then the classifier. */
export function vggMacs(cfg: VGGConfig, size: number, numClasses = 1000): VggMacs {
  let c = 3;
  let s = size;
  let conv = 0;
  let firstConv = 0;
  for (const v of cfg) {
    if (v === 'M') {
      s = Math.floor(s / 2);
    } else {
      const m = v * c * 9 * s * s;
      if (conv === 0) firstConv = m;
      conv += m;
      c = v;
    }
  }
  const classifier = c * 49 * 4096 + 4096 * 4096 + 4096 * numClasses;
  return { conv, firstConv, classifier, total: conv + classifier };
}

/**
 * FLOPs of one training step per image (2 per multiply-add): forward, backward-data (all layers but the first
 * conv) and backward-weights.
 */
export function trainFlopsPerImage(m: VggMacs): number {
  return 2 * (3 * m.total - m.firstConv);
}
