// Memory: 1000 training steps of a small VGG on the CPU keep RSS and the native allocator flat; tensors dropped
// without dispose() are reclaimed by the finaliser; a disposed tensor is a JS Error wherever it is used. The long
// runs are child processes (test/helpers/train_child.js, `node --expose-gc`) so jest's own heap is not measured.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { Tensor } from '../../lib/tensor';
import { generateSampleStl10 } from '../../lib/data';
import { tinyVgg } from '../helpers/tiny';
import { asanQuarantineMiB } from '../helpers/asan';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
const child = path.join(__dirname, '..', 'helpers', 'train_child.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-mem-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const MiB = 2 ** 20;

function runChild(args: string[]): Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const out = execFileSync(process.execPath, ['--expose-gc', child, ...args], { encoding: 'utf8', maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split('\n').pop()!);
}

if (!fs.existsSync(dist)) console.log(`skipping "memory (child processes)": ${dist} is not built (npm run build:ts)`);
(fs.existsSync(dist) ? describe : describe.skip)('memory (child processes)', () => {
  test('1000 training steps: RSS flat after warm-up (< 50 MiB growth, + the quarantine under ASan), native in-use bytes unchanged', () => {
    const root = path.join(tmp, 'data');
    generateSampleStl10(path.join(root, 'stl10_binary'), { train: 64, test: 4, unlabeled: 1 });
    const r = runChild(['steps', root, '1000']);
    expect(r.done).toBe(1000);
    const growth = (r.end.rss - r.warm.rss) / MiB;
    process.stdout.write(`memory: RSS ${(r.warm.rss / MiB).toFixed(1)} MiB at step 200 -> ${(r.end.rss / MiB).toFixed(1)} MiB at step 1000 ` +
      `(growth ${growth.toFixed(1)} MiB); every 100 steps: ${r.samples.map((x: number) => (x / MiB).toFixed(0)).join(' ')} MiB; ` +
      `native in use ${r.warm.inUse} -> ${r.end.inUse} bytes\n`);
    expect(growth).toBeLessThan(50 + asanQuarantineMiB());
    // The layers keep and reuse their buffers: the live native tensors are the same set at step 200 and 1000.
    expect(r.end.inUse).toBe(r.warm.inUse);
  });

  test('3000 undisposed 4 MiB tensors (12 GiB in all) are reclaimed by the finaliser', () => {
    const r = runChild(['finaliser']);
    process.stdout.write(`memory: finaliser: RSS ${(r.base.rss / MiB).toFixed(0)} MiB before, peak ${(r.peak / MiB).toFixed(0)} MiB, ` +
      `${(r.end.rss / MiB).toFixed(0)} MiB after; native in use at the end ${r.end.inUse} bytes\n`);
    expect(r.peak - r.base.rss).toBeLessThan(1024 * MiB);
    expect(r.end.inUse).toBe(0);
  });

  test('tensors made and freed inside deferringMemoryReports cost V8 no full collection; outside, V8 is told of each', () => {
    // Outside a scope each 96 MiB tensor is told to V8, which then collects (the finaliser's reclaiming relies on
    // it); a training step runs inside one and its churn nets out, so V8 hears nothing and runs no collection.
    const r = runChild(['external']);
    process.stdout.write(`memory: full collections while 96 MiB tensors churn 40 times: ${r.plain} told each time, ${r.deferred} deferred\n`);
    expect(r.plain).toBeGreaterThanOrEqual(1);
    expect(r.deferred).toBe(0);
  });
});

describe('disposed tensors', () => {
  test('every use of a disposed tensor is a JS Error saying so; dispose() twice is fine', () => {
    const t = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const other = Tensor.zeros([2, 2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(String(t)).toBe('Tensor(disposed)');
    const uses: [string, () => unknown][] = [
      ['toArray', () => t.toArray()],
      ['shape', () => t.shape],
      ['dtype', () => t.dtype],
      ['view', () => t.view([4])],
      ['clone', () => t.clone()],
      ['to', () => t.to('cpu')],
      ['copy_ into it', () => t.copy_(other)],
      ['copy_ from it', () => other.copy_(t)],
    ];
    for (const [name, use] of uses) {
      let err: unknown;
      try {
        use();
      } catch (e) {
        err = e;
      }
      expect({ name, brand: Object.prototype.toString.call(err) }).toEqual({ name, brand: '[object Error]' });
      expect((err as Error).message).toMatch(/tensor was disposed/);
    }
    other.dispose();
  });

  test('a disposed input to a layer or the model is an Error, and the model still works afterwards', () => {
    const m = tinyVgg({ seed: 2 });
    const x = Tensor.zeros([2, 3, 32, 32]);
    x.dispose();
    expect(() => m.forward(x)).toThrow(/tensor was disposed/);
    const ok = Tensor.zeros([2, 3, 32, 32]);
    const y = m.forward(ok);
    expect(y.shape).toEqual([2, 5]);
    y.dispose();
    ok.dispose();
    m.dispose();
    // A disposed model's parameters are disposed tensors too.
    expect(() => m.forward(Tensor.zeros([2, 3, 32, 32]))).toThrow(/disposed/);
  });
});
