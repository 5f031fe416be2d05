// Classify image files with a checkpoint written by train.ts, finetune.ts or `vggnet train`: the top-3 classes
// with their probabilities, using the checkpoint's class names and image size.
//
//   node predict.js example-output/checkpoint/best.safetensors cat.jpg dog.png
import { modelFromCheckpoint, ImageFiles, DataLoader, transforms as T } from 'vggnet';
import { run } from './settings';

async function main(): Promise<void> {
  const [checkpoint, ...files] = process.argv.slice(2);
  if (!checkpoint || files.length === 0) throw new Error('usage: node predict.js CHECKPOINT IMAGE...');
  const { model, meta } = modelFromCheckpoint(checkpoint, { device: 'auto' });
  const size = Number(meta.config.imageSize ?? 224);
  const classes = meta.classes ?? [];
  const images = new ImageFiles(files, T.compose([T.evalTransform(size), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]));
  for await (const batch of new DataLoader(images, { batchSize: 16 })) {
    const x = batch.images.to(model.device);
    const probabilities = model.predict(x); // softmax rows, in eval mode
    probabilities.forEach((p, i) => {
      const top = Array.from(p.keys()).sort((a, b) => p[b] - p[a]).slice(0, 3);
      console.log(`${files[batch.indices[i]]}: ${top.map((k) => `${classes[k] ?? k} ${(100 * p[k]).toFixed(1)}%`).join(', ')}`);
    });
    for (const t of new Set([x, batch.images, batch.labels])) t.dispose();
  }
  model.dispose();
}

run(main);
