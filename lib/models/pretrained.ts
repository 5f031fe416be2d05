// Starting a model from torchvision's weights: the state dict loads by torchvision's names, and the classifier's last
// layer is kept fresh when the class count differs (fine-tuning on another dataset).
import { readSafetensors } from '../io/safetensors';
import { Tensor } from '../tensor';
import { VGGNet } from './vgg';

/** Loads `file` (safetensors) into `model`; says what it did through `say`. */
export function loadPretrained(model: VGGNet, file: string, say: (s: string) => void = () => {}): void {
  const { tensors } = readSafetensors(file);
  try {
    const own = model.stateDict();
    const record = { ...tensors };
    const last = model.classifier.layers.length - 1;
    const replaced: string[] = [];
    for (const k of [`classifier.${last}.weight`, `classifier.${last}.bias`]) {
      const a = record[k], b = own[k];
      if (a instanceof Tensor && b instanceof Tensor && a.shape.join() !== b.shape.join()) {
        replaced.push(`${k} [${a.shape.join(', ')}] -> [${b.shape.join(', ')}]`);
        record[k] = b;
      }
    }
    model.loadStateDict(record, { strict: true });
    say(`loaded pretrained weights from ${file}${replaced.length ? `; replaced the last layer for ${model.options.numClasses} classes (${replaced.join(', ')})` : ''}`);
  } finally {
    for (const v of Object.values(tensors)) if (v instanceof Tensor) v.dispose();
  }
}
