// One SGD training step on a batch, the loop body every benchmark and hand-written loop repeats.
import { Tensor } from '../tensor';
import { VGGNet } from '../models/vgg';
import { crossEntropy } from '../nn/loss';
import { SGD } from '../optim/sgd';

/** zeroGrad, forward, mean cross-entropy, backward, optimizer step; returns the batch's loss. */
export function trainStep(model: VGGNet, optimizer: SGD, images: Tensor, labels: Tensor): number {
  const params = model.parameters();
  optimizer.zeroGrad(params);
  const logits = model.forward(images);
  const { loss, grad } = crossEntropy(logits, labels);
  logits.dispose();
  model.backward(grad);
  grad.dispose();
  optimizer.step(params);
  return loss;
}
