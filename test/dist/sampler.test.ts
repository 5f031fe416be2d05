// DistributedSampler: torch's semantics (PyTorch 1.13's own DistributedSampler, fed our permutation in place of
// torch.randperm, is the reference), every sample exactly once per epoch (plus torch's padding), world size 1 equal
// to the single-process order, N ranks' step k together equal to one process's step k with N times the batch, and
// the DataLoader driven by it.
import { DataLoader, permutation, generateSampleStl10, STL10, transforms as T } from '../../lib/data';
import { DistributedSampler } from '../../lib/dist';
import { testWithTorch } from '../helpers/python';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ds = (n: number) => ({ length: n });

testWithTorch('each rank\'s indices are those of torch.utils.data.DistributedSampler given the same permutation', (py) => {
  const cases: { n: number; w: number; seed: number; epoch: number; dropLast: boolean; shuffle: boolean }[] = [];
  for (const n of [1, 5, 16, 17, 31, 100]) {
    for (const w of [1, 2, 3, 4, 7]) {
      for (const dropLast of [false, true]) {
        if (dropLast && n < w) continue; // torch's num_samples is 0 there
        cases.push({ n, w, seed: 7, epoch: n % 3, dropLast, shuffle: n % 2 === 0 });
      }
    }
  }
  const input = cases.map((c) => ({ ...c, perm: Array.from(permutation(c.n, c.seed, c.epoch)) }));
  const script = `
import json, sys, torch
from torch.utils.data.distributed import DistributedSampler
out = []
for c in json.loads(sys.stdin.read()):
    perm = torch.tensor(c['perm'], dtype=torch.int64)
    torch.randperm = lambda n, generator=None, perm=perm: perm.clone()
    ranks = []
    for r in range(c['w']):
        s = DistributedSampler(range(c['n']), num_replicas=c['w'], rank=r, shuffle=c['shuffle'], seed=c['seed'], drop_last=c['dropLast'])
        s.set_epoch(c['epoch'])
        ranks.append([int(i) for i in s])
    out.append(ranks)
print(json.dumps(out))
`;
  const { spawnSync } = require('child_process') as typeof import('child_process');
  const r = spawnSync(py, ['-c', script], { input: JSON.stringify(input), encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  const ref = JSON.parse(r.stdout) as number[][][];
  cases.forEach((c, k) => {
    for (let rank = 0; rank < c.w; rank++) {
      const s = new DistributedSampler(ds(c.n), { numReplicas: c.w, rank, shuffle: c.shuffle, seed: c.seed, dropLast: c.dropLast });
      expect([JSON.stringify(c), rank, Array.from(s.indices(c.epoch))]).toEqual([JSON.stringify(c), rank, ref[k][rank]]);
      expect(s.length).toBe(ref[k][rank].length);
    }
  });
});

test('every sample once per epoch: padded shards add only torch\'s padding, pad: false shards add nothing', () => {
  for (const n of [1, 2, 9, 64, 65, 101]) {
    for (const w of [1, 2, 3, 8]) {
      for (const epoch of [0, 1, 5]) {
        const counts = new Array(n).fill(0);
        const exact = new Array(n).fill(0);
        let lengths = new Set<number>();
        for (let r = 0; r < w; r++) {
          const s = new DistributedSampler(ds(n), { numReplicas: w, rank: r, seed: 11 });
          const idx = s.indices(epoch);
          lengths.add(idx.length);
          for (const i of idx) counts[i]++;
          for (const i of new DistributedSampler(ds(n), { numReplicas: w, rank: r, seed: 11, pad: false }).indices(epoch)) exact[i]++;
        }
        expect(exact).toEqual(new Array(n).fill(1));
        // Padded: every rank the same number of samples (same number of steps); the extra ones are the order's head.
        expect(lengths.size).toBe(1);
        const total = Math.ceil(n / w) * w;
        expect(counts.reduce((a, b) => a + b, 0)).toBe(total);
        const order = permutation(n, 11, epoch);
        const extra = new Array(n).fill(0);
        for (let i = 0; i < total - n; i++) extra[order[i % n]]++;
        expect(counts).toEqual(extra.map((e) => e + 1));
        lengths = new Set();
      }
    }
  }
});

test('one rank is the single-process order; N ranks x batch b make up one process\'s batches of N*b', () => {
  const n = 96, seed = 3;
  for (const epoch of [0, 2]) {
    expect(Array.from(new DistributedSampler(ds(n), { numReplicas: 1, rank: 0, seed }).indices(epoch))).toEqual(Array.from(permutation(n, seed, epoch)));
    for (const w of [2, 3, 4]) {
      const b = 4;
      const single = permutation(n, seed, epoch);
      const shards = Array.from({ length: w }, (_, r) => new DistributedSampler(ds(n), { numReplicas: w, rank: r, seed }).indices(epoch));
      for (let k = 0; k * b * w < n; k++) {
        const together = shards.flatMap((s) => Array.from(s.subarray(k * b, (k + 1) * b))).sort((x, y) => x - y);
        const one = Array.from(single.subarray(k * b * w, (k + 1) * b * w)).sort((x, y) => x - y);
        expect(together).toEqual(one);
      }
    }
  }
});

test('the DataLoader takes its order from the sampler; bad sampler options are errors', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-sampler-'));
  try {
    generateSampleStl10(path.join(root, 'stl10_binary'), { train: 10, test: 2, unlabeled: 0 });
    const set = await STL10.create({ root, split: 'train', transform: T.compose([T.evalTransform(32)]) });
    const s = new DistributedSampler(set, { numReplicas: 3, rank: 1, seed: 5 });
    const loader = new DataLoader(set, { batchSize: 2, sampler: s, workers: 1 });
    expect(loader.length).toBe(2); // ceil(10 / 3) = 4 samples, 2 batches
    const seen: number[] = [];
    for await (const b of loader.iterate(4)) {
      seen.push(...b.indices);
      b.images.dispose();
      b.labels.dispose();
    }
    expect(seen).toEqual(Array.from(s.indices(4)));
    const same = new DataLoader(set, { batchSize: 5, shuffle: true, seed: 5, workers: 1 });
    expect(Array.from(same.withSampler(new DistributedSampler(set, { numReplicas: 1, rank: 0, seed: 5 })).order(2))).toEqual(Array.from(same.order(2)));
    expect(() => new DataLoader(set, { sampler: s, shuffle: true })).toThrow(/sampler and shuffle: true exclude each other/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  expect(() => new DistributedSampler(ds(4), { numReplicas: 2, rank: 2 })).toThrow(/rank must be an integer in \[0, 2\), got 2/);
  expect(() => new DistributedSampler(ds(4), { numReplicas: 2, rank: 2 })).toThrow(RangeError);
  expect(() => new DistributedSampler(ds(4), { numReplicas: 0, rank: 0 })).toThrow(/numReplicas must be an integer >= 1/);
  expect(() => new DistributedSampler(ds(4), { numReplicas: 2, rank: 0, pad: false, dropLast: true })).toThrow(/contradict/);
  const saved = { ...process.env };
  delete process.env.WORLD_SIZE;
  delete process.env.RANK;
  try {
    expect(() => new DistributedSampler(ds(4))).toThrow(/numReplicas not given, and no process group/);
  } finally {
    Object.assign(process.env, saved);
  }
});
