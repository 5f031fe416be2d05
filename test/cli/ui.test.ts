// What a person sees around training: the progress bar fits an 80-column terminal (and the terminal's own width when
// known) with every field kept; big configurations on a CPU announce the silent first step, small ones do not.
import { Progress, formatLr } from '../../lib/train/progress';
import { cfgs } from '../../lib/models/vgg';
import { firstStepNote } from '../../lib/cli/train';

function drawn(columns: number | undefined, state: Parameters<Progress['update']>[0], elapsed = 5): string {
  const writes: string[] = [];
  const p = new Progress({ write: (s: string) => writes.push(s), isTTY: true, columns }, { tty: true });
  const now = jest.spyOn(Date, 'now');
  try {
    now.mockReturnValue(1_000_000);
    p.start(0);
    now.mockReturnValue(1_000_000 + elapsed * 1000);
    p.update(state, true);
  } finally {
    now.mockRestore();
  }
  expect(writes.length).toBe(1);
  expect(writes[0].startsWith('\r')).toBe(true);
  expect(writes[0].endsWith('\x1b[K')).toBe(true);
  return writes[0].slice(1, -3);
}

test('the progress bar fits 80 columns (and the terminal\'s width) without losing a field', () => {
  // [state, seconds elapsed]: the sample preset's first epoch; a long run; ImageNet-sized epochs of many hours
  const cases: [Parameters<Progress['update']>[0], number][] = [
    [{ epoch: 1, epochs: 12, batch: 3, batches: 32, samples: 96, loss: 2.302585, acc: 0.1, lr: 0.002 }, 1.5],
    [{ epoch: 100, epochs: 100, batch: 1249, batches: 1250, samples: 79936, loss: 12.345678, acc: 0.999, lr: 0.000123456 }, 600],
    [{ epoch: 90, epochs: 90, batch: 4003, batches: 40037, samples: 128096, loss: 6.907755, acc: 0.001, lr: 1e-4 }, 5025],
  ];
  for (const [s, el] of cases) {
    for (const cols of [undefined, 80, 100, 200]) {
      const line = drawn(cols, s, el);
      expect(line.length).toBeLessThanOrEqual((cols ?? 80) - 1);
      expect(line).toMatch(new RegExp(`^epoch ${s.epoch}/${s.epochs} `));
      expect(line).toMatch(new RegExp(` ${s.batch}/${s.batches} ((\\d+:)?\\d\\d:\\d\\d<|eta )(\\d+:)?\\d\\d:\\d\\d `));
      expect(line).toMatch(/ loss \d+\.\d{4} acc [\d.]+% lr [\d.e-]+ [\d.]+ img\/s$/);
    }
  }
  // the usual case has room for a bar at 80 columns; a wide terminal gets a longer one (at most 30)
  const bar = (l: string) => /\[([=> ]*)\]/.exec(l)?.[1].length ?? 0;
  expect(bar(drawn(80, cases[0][0]))).toBeGreaterThanOrEqual(5);
  expect(bar(drawn(200, cases[0][0]))).toBe(30);
  // absurd numbers and narrow terminals: the line is cut, never wrapped
  const absurd = { epoch: 12345, epochs: 99999, batch: 999999, batches: 1000000, samples: 1e9, loss: 1234.5678, acc: 1, lr: 1.5e-7 };
  for (const cols of [40, 80]) expect(drawn(cols, absurd).length).toBeLessThanOrEqual(cols - 1);
  expect(formatLr(0.05)).toBe('0.05');
  expect(formatLr(0.0024812)).toBe('0.00248');
  expect(formatLr(1.234e-4)).toBe('1.23e-4');
  expect(formatLr(1e-4)).toBe('1e-4');
  expect(formatLr(0)).toBe('0');
});

test('a big configuration on the CPU says the first step will take a while; a small one says nothing', () => {
  const vgg19 = cfgs.E;
  const note = firstStepNote(vgg19, 224, 4096, 10, 32, 2)!;
  // vgg19 at 224: 19.6 G multiply-adds per image in the convolutions; a training step is ~3 forward passes
  const tflop = Number(/~([\d.]+) TFLOP/.exec(note)![1]);
  expect(tflop).toBeGreaterThan(3.5);
  expect(tflop).toBeLessThan(4.0);
  expect(note).toMatch(/expect ~\d+ s per step on 2 CPU thread\(s\) before the first progress update/);
  const small = cfgs.A.map((v) => (v === 'M' ? 'M' : Math.round(v / 4)));
  expect(firstStepNote(small, 32, 256, 10, 32, 2)).toBeNull();
});
