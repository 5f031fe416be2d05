// Fine-tune pretrained weights on STL10 (or the sample data): torchvision's ImageNet VGG11-BN by name (downloaded
// once into ~/.cache/vggnet/weights), or any .pth/.safetensors state dict with the same architecture, such as the one
// train.ts writes. The last layer is replaced when the class counts differ (1000 ImageNet classes -> 10).
//
//   node finetune.js                                   (WEIGHTS=vgg11_bn)
//   WEIGHTS=example-output/vgg11_bn-sample.safetensors EXAMPLE_HIDDEN=256 node finetune.js
import * as path from 'path';
import {
  vgg11, STL10, DataLoader, Trainer, sgd, cosineAnnealing, transforms as T, ensureSampleData, loadPretrained, resolvePretrained,
} from 'vggnet';
import { outDir, run, setting } from './settings';

async function main(): Promise<void> {
  const epochs = setting('EPOCHS', 5);
  const size = setting('IMAGE_SIZE', 96);
  const samples = setting('SAMPLES', 1000);
  const root = process.env.STL10_ROOT ?? ensureSampleData(undefined, { train: samples, test: Math.ceil(samples / 2) });

  // torchvision's vgg11_bn has 4096 hidden features; a file of your own may have fewer (EXAMPLE_HIDDEN).
  const model = vgg11({ numClasses: 10, batchNorm: true, seed: 1, hiddenFeatures: setting('HIDDEN', 4096) });
  const weights = await resolvePretrained(process.env.WEIGHTS ?? 'vgg11_bn'); // a name, a URL or a path
  const { replaced } = loadPretrained(model, weights, (line) => console.log(line));
  if (replaced.length) console.log('the new last layer starts from its own initialisation');

  const normalize = T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD);
  const train = new STL10({ root, split: 'train', transform: T.compose([T.randomResizedCrop(size, { scale: [0.5, 1] }), T.randomHorizontalFlip(), normalize]) });
  const test = new STL10({ root, split: 'test', transform: T.compose([T.evalTransform(size), normalize]) });
  const trainer = new Trainer(model, {
    // A tenth of training-from-scratch's learning rate, annealed: the pretrained features move little.
    optimizer: sgd({ lr: 0.001, momentum: 0.9, weightDecay: 5e-4 }),
    scheduler: cosineAnnealing({ tMax: epochs }),
    checkpointDir: path.join(outDir, 'finetune'),
    config: { imageSize: size },
  });
  const result = await trainer.fit(new DataLoader(train, { batchSize: setting('BATCH', 32), shuffle: true, seed: 2 }),
    { epochs, validation: new DataLoader(test, { batchSize: 128 }) });
  console.log(`best checkpoint: ${path.join(outDir, 'finetune', 'best.safetensors')}`);
  if (result.validation) console.log(`test top1 ${(100 * result.validation.top1).toFixed(2)}%`);
}

run(main);
