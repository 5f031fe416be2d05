// Train a VGG11 with batch norm on STL10, or on the bundled sample data when there is no STL10: the README's
// "Library" section as a program. Writes checkpoints (resumable) and the final weights with torchvision's names.
//
//   node train.js                         (compile first: npx tsc, see examples/README.md)
//   EXAMPLE_EPOCHS=1 EXAMPLE_HIDDEN=256 node train.js
import * as path from 'path';
import { vgg11, STL10, DataLoader, Trainer, sgd, reduceLROnPlateau, transforms as T, ensureSampleData } from 'vggnet';
import { outDir, run, setting } from './settings';

async function main(): Promise<void> {
  const epochs = setting('EPOCHS', 10);
  const size = setting('IMAGE_SIZE', 64);
  const samples = setting('SAMPLES', 1000);
  const root = process.env.STL10_ROOT ?? ensureSampleData(undefined, { train: samples, test: Math.ceil(samples / 2) });

  const model = vgg11({ numClasses: 10, batchNorm: true, seed: 1, hiddenFeatures: setting('HIDDEN', 4096) });
  const normalize = T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD);
  const train = new STL10({ root, split: 'train', transform: T.compose([
    T.randomResizedCrop(size), T.randomHorizontalFlip(), T.colorJitter(0.4, 0.4, 0.4), normalize]) });
  const test = new STL10({ root, split: 'test', transform: T.compose([T.evalTransform(size), normalize]) });

  const trainer = new Trainer(model, {
    optimizer: sgd({ lr: 0.01, momentum: 0.9, weightDecay: 5e-4 }),
    scheduler: reduceLROnPlateau({ monitor: 'val.loss', factor: 0.1, patience: 3 }),
    checkpointDir: path.join(outDir, 'checkpoint'),
    config: { imageSize: size }, // saved in the checkpoints: predict.ts reads it back
  });
  const result = await trainer.fit(new DataLoader(train, { batchSize: setting('BATCH', 64), shuffle: true, seed: 1 }),
    { epochs, validation: new DataLoader(test, { batchSize: 256 }) });

  const weights = path.join(outDir, 'vgg11_bn-sample.safetensors');
  model.saveStateDict(weights); // torchvision's names: loads into PyTorch, or into finetune.ts
  console.log(`weights: ${weights}; checkpoints: ${path.join(outDir, 'checkpoint')}`);
  if (result.validation) console.log(`test top1 ${(100 * result.validation.top1).toFixed(2)}%`);
}

run(main);
