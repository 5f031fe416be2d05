// Starting a model from torchvision's weights: the state dict (.pth/.pt from torch.save or torchvision's hub, or
// .safetensors) loads by torchvision's names, and the classifier's last layer is kept fresh when the class count
// differs (fine-tuning on another dataset). Where the file comes from (a name, a URL, a path): lib/io/hub.ts.
import { StateRecord } from '../io/safetensors';
import { readStateDict } from '../io/state_dict';
import { Tensor } from '../tensor';
import { VGGNet } from './vgg';

/** Loads `source` (a path or a record) into `model`; says what it did through `say`; returns what was replaced. */
export function loadPretrained(model: VGGNet, source: string | StateRecord, say: (s: string) => void = () => {}): { replaced: string[] } {
  const tensors = typeof source === 'string' ? readStateDict(source) : source;
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
    const from = typeof source === 'string' ? source : 'a state dict';
    say(`loaded pretrained weights from ${from}${replaced.length ? `; replaced the last layer for ${model.options.numClasses} classes (${replaced.join(', ')})` : ''}`);
    return { replaced };
  } finally {
    if (typeof source === 'string') for (const v of Object.values(tensors)) if (v instanceof Tensor) v.dispose();
  }
}
