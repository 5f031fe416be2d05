// Softmax cross-entropy with mean reduction (torch.nn.functional.cross_entropy).
import { Tensor } from '../tensor';
import * as ops from '../ops';
import { markGradientOf, tensorArg } from './module';

/** loss: the mean over the batch (read back to the host); grad: d loss / d logits, float32 (N, C). */
export function crossEntropy(logits: Tensor, labels: Tensor): { loss: number; grad: Tensor } {
  tensorArg(logits, 'crossEntropy: logits');
  tensorArg(labels, 'crossEntropy: labels');
  if (labels.dtype !== 'int32') throw new TypeError(`crossEntropy: labels must be int32, got ${labels.dtype}`);
  const r = ops.crossEntropy(logits, labels);
  const loss = r.loss.item();
  r.loss.dispose();
  markGradientOf(r.dlogits, logits); // so a backward can tell which forward's output this is the gradient of
  return { loss, grad: r.dlogits };
}
