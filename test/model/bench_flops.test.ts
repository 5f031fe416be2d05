// The benchmark's yardsticks: multiply-add counts against torchvision's published figures, and the CPU peak probe's
// argument checks. (Speed itself is never asserted: `npm run bench` prints it.)
import { cfgs } from '../../lib/models/vgg';
import { trainFlopsPerImage, vggMacs } from '../../lib/bench/flops';
import { cpuPeakGflops } from '../../lib/ops';

test('VGG multiply-adds at 224² match torchvision\'s model table (GFLOPS column = G multiply-adds)', () => {
  // torchvision.models docs: vgg11 7.61, vgg13 11.31, vgg16 15.47, vgg19 19.63 (rounded to 0.01 G)
  const table: [keyof typeof cfgs, number][] = [['A', 7.61], ['B', 11.31], ['D', 15.47], ['E', 19.63]];
  for (const [cfg, g] of table) expect(vggMacs(cfgs[cfg], 224).total / 1e9).toBeCloseTo(g, 2);
});

test('conv and classifier split, and a training step skips only the first conv\'s backward-data', () => {
  const m = vggMacs(cfgs.A, 32, 10);
  expect(m.firstConv).toBe(64 * 3 * 9 * 32 * 32);
  expect(m.classifier).toBe(512 * 49 * 4096 + 4096 * 4096 + 4096 * 10);
  expect(m.total).toBe(m.conv + m.classifier);
  expect(trainFlopsPerImage(m)).toBe(2 * (3 * m.total - m.firstConv));
});

test('cpuPeakGflops measures a positive rate and names the vector width; bad arguments are clear errors', () => {
  const p = cpuPeakGflops(1, 0.05);
  expect(p.gflops).toBeGreaterThan(0);
  expect(p.threads).toBe(1);
  expect(p.vector).toMatch(/fma|mul\+add/);
  expect(() => cpuPeakGflops(0, 0.1)).toThrow(/cpuPeakGflops: expected 1\.\.4096 threads, got 0/);
  expect(() => cpuPeakGflops(1, 0)).toThrow(/cpuPeakGflops: expected 0 < seconds <= 10, got 0/);
});
