// `npm run bench -- data`: images/s of the data pipeline on STL10-shaped input (96x96 uint8 from the sample data's
// train_X.bin) -> randomResizedCrop(224) + randomHorizontalFlip + colorJitter(0.4, 0.4, 0.4) + normalize, batches of
// 64, and the same pipeline in torchvision (scripts/bench_torchvision_data.py, DataLoader with 2 workers) when
// `python3 -c 'import torchvision'` works.
import { spawnSync } from 'child_process';
import { pythonWith } from './python';
import * as os from 'os';
import * as path from 'path';
import { DataLoader, STL10, ensureSampleData, defaultDataRoot, transforms as T } from '../data';

export interface DataBenchRow {
  name: string;
  imagesPerSecond: number;
}

async function measure(loader: DataLoader, images: number): Promise<number> {
  let n = 0;
  let t0 = 0;
  let epoch = 0;
  let first = true;
  while (n < images) {
    for await (const b of loader.iterate(epoch++)) {
      const k = b.images.shape[0];
      b.images.dispose();
      b.labels.dispose();
      if (first) {
        first = false; // warm-up batch (threads, caches)
        t0 = performance.now();
        continue;
      }
      n += k;
      if (n >= images) break;
    }
  }
  return n / ((performance.now() - t0) / 1000);
}

function torchvisionRow(xPath: string, images: number): DataBenchRow | string {
  const py = pythonWith('torchvision');
  if (!py) return 'torchvision not installed (no python3 with torchvision; set VGGNET_PYTHON): skipped';
  const script = path.resolve(__dirname, '..', '..', 'scripts', 'bench_torchvision_data.py');
  const r = spawnSync(py, [script, '--x', xPath, '--images', String(images), '--workers', '2'], { encoding: 'utf8' });
  if (r.status !== 0) return `torchvision bench failed: ${(r.stderr || '').trim().split('\n').slice(-1)[0]}`;
  const line = r.stdout.trim().split('\n').pop() ?? '{}';
  const res = JSON.parse(line);
  return { name: `torchvision ${res.torch ?? ''} (PIL, DataLoader 2 workers)`.replace('  ', ' '), imagesPerSecond: res.images_per_s };
}

export async function benchData(options: { images?: number; root?: string } = {}): Promise<DataBenchRow[]> {
  const images = options.images ?? Number(process.env.VGGNET_BENCH_DATA_IMAGES ?? 2048);
  const root = ensureSampleData(options.root ?? defaultDataRoot());
  const transform = T.compose([
    T.randomResizedCrop(224),
    T.randomHorizontalFlip(),
    T.colorJitter(0.4, 0.4, 0.4),
    T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD),
  ]);
  const ds = new STL10({ root, split: 'train', transform });
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const rows: DataBenchRow[] = [];
  for (const workers of Array.from(new Set([1, 2, cores]))) {
    const loader = new DataLoader(ds, { batchSize: 64, shuffle: true, seed: 1, workers, dropLast: true });
    rows.push({ name: `vggnet DataLoader (${workers} thread${workers > 1 ? 's' : ''}/batch, prefetch 2)`, imagesPerSecond: await measure(loader, images) });
  }
  const tv = torchvisionRow(path.join(root, 'stl10_binary', 'train_X.bin'), images);
  const notes: string[] = [];
  if (typeof tv === 'string') notes.push(tv);
  else rows.push(tv);
  const ref = typeof tv === 'string' ? null : tv.imagesPerSecond;
  console.log(`data pipeline: STL10-shaped 96x96 -> randomResizedCrop(224)+flip+colorJitter(0.4,0.4,0.4)+normalize, batch 64, ${cores} cores, ${images} images`);
  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`${'pipeline'.padEnd(w)} | ${'img/s'.padStart(8)} | vs torchvision`);
  console.log(`${'-'.repeat(w)}-|-${'-'.repeat(8)}-|---------------`);
  for (const r of rows) {
    const ratio = ref ? `${(r.imagesPerSecond / ref).toFixed(2)}x` : '-';
    console.log(`${r.name.padEnd(w)} | ${r.imagesPerSecond.toFixed(0).padStart(8)} | ${ratio}`);
  }
  for (const n of notes) console.log(n);
  return rows;
}
