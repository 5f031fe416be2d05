// LR sequences of the schedulers against torch.optim.lr_scheduler on scripted metric sequences. The expected arrays
// were produced once with PyTorch 1.13 (Debian python3-torch) and checked by hand against its documented rules; the
// test itself needs no PyTorch.
import {
  reduceLROnPlateau, stepLR, cosineAnnealing, linearWarmup, ReduceLROnPlateau, Scheduler,
} from '../../lib/optim/schedulers';

function expectSeq(got: number[], want: number[]): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(g).toBeCloseTo(want[i], 12));
}

/** LR after each step on the metric sequence (PyTorch: scheduler.step(m) then read param_groups[0]['lr']). */
function plateauRun(s: ReduceLROnPlateau, metrics: number[], lr = 1): number[] {
  s.attach(lr);
  return metrics.map((m) => s.step({ [s.monitor]: m }));
}

/** LR of epoch 0, then after each of n steps. */
function closedRun(s: Scheduler, n: number, lr = 0.1): number[] {
  const out = [s.attach(lr)];
  for (let i = 0; i < n; i++) out.push(s.step({}));
  return out;
}

describe('reduceLROnPlateau', () => {
  test('min mode, rel threshold, patience 2 (torch defaults otherwise)', () => {
    const m = [10, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 8, 7.9999, 7.9999, 7.9999, 7.9999];
    // 9 stays bad for 3 epochs (> patience 2) -> halve; 7.9999 is not better than 8·(1-1e-4) -> still bad.
    const want = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125, 0.0625, 0.0625];
    expectSeq(plateauRun(reduceLROnPlateau({ mode: 'min', factor: 0.5, patience: 2 }), m), want);
  });

  test('max mode, abs threshold, cooldown 2, minLr', () => {
    const m = [0.1, 0.2, 0.2, 0.25, 0.25, 0.25, 0.25, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3];
    const want = [1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005];
    const s = reduceLROnPlateau({ monitor: 'val.top1', factor: 0.1, patience: 1, threshold: 0.01, thresholdMode: 'abs', cooldown: 2, minLr: 0.005 });
    expect(s.mode).toBe('max'); // inferred from the accuracy monitor
    expectSeq(plateauRun(s, m), want);
  });

  test('eps: a reduction smaller than eps is skipped', () => {
    const m = [5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4];
    const want = [1, 1, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25];
    expectSeq(plateauRun(reduceLROnPlateau({ mode: 'min', factor: 0.5, patience: 0, minLr: 0.24, eps: 0.02 }), m), want);
  });

  test('state()/loadState() continue exactly; Infinity survives JSON', () => {
    const m = [10, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 8];
    const a = reduceLROnPlateau({ factor: 0.5, patience: 2 });
    const full = plateauRun(a, m);
    const b = reduceLROnPlateau({ factor: 0.5, patience: 2 });
    b.attach(1);
    const fresh = reduceLROnPlateau({ factor: 0.5, patience: 2 });
    fresh.loadState(JSON.parse(JSON.stringify(b.state()))); // best = Infinity before any step
    const first = m.slice(0, 5).map((v) => fresh.step({ 'val.loss': v }));
    const c = reduceLROnPlateau({ factor: 0.5, patience: 2 });
    c.loadState(JSON.parse(JSON.stringify(fresh.state())));
    const rest = m.slice(5).map((v) => c.step({ 'val.loss': v }));
    expectSeq([...first, ...rest], full);
  });

  test('bad options and a missing metric are clear errors', () => {
    expect(() => reduceLROnPlateau({ factor: 1 })).toThrow(/factor should be < 1.0/);
    expect(() => reduceLROnPlateau({ mode: 'up' as 'min' })).toThrow(/mode must be 'min' or 'max'/);
    const s = reduceLROnPlateau({ monitor: 'val.loss' });
    s.attach(0.1);
    expect(() => s.step({ 'train.loss': 1 })).toThrow(/'val.loss' is not among this epoch's metrics \(train.loss\)/);
   });

  test("monitor is one of the Trainer's metric names: a typo fails to compile, and in JavaScript fails at once", () => {
    // @ts-expect-error 'val_loss' is not a MonitorMetric (the type checker catches the typo; ts-jest fails if it did not)
    const typo = () => reduceLROnPlateau({ monitor: 'val_loss' });
    expect(typo).toThrow(/monitor must be one of val.loss, val.top1, val.top5, train.loss, train.top1, train.top5; got 'val_loss'/);
    expect(reduceLROnPlateau({ monitor: 'train.top5' }).mode).toBe('max');
    expect(reduceLROnPlateau({ monitor: 'train.loss' }).mode).toBe('min');
  });
});

describe('closed-form schedulers', () => {
  test('stepLR(3, 0.1)', () => {
    expectSeq(closedRun(stepLR({ stepSize: 3, gamma: 0.1 }), 10), [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 1e-4, 1e-4]);
  });

  test('cosineAnnealing(tMax 5, etaMin 0.001), past tMax too', () => {
    const want = [0.1, 0.0905463412215599, 0.06579634122155989, 0.035203658778440096, 0.010453658778440105, 0.001,
      0.010453658778440102, 0.03520365877844012, 0.06579634122155993, 0.09054634122155995, 0.1, 0.09054634122155998,
      0.06579634122155995];
    expectSeq(closedRun(cosineAnnealing({ tMax: 5, etaMin: 0.001 }), 12), want);
  });

  test('linear warm-up then cosine (SequentialLR(LinearLR(0.25, 4), CosineAnnealingLR(6)))', () => {
    const want = [0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.09330127018922195, 0.075, 0.05, 0.025, 0.006698729810778065, 0,
      0.006698729810778065, 0.025];
    expectSeq(closedRun(linearWarmup({ epochs: 4, startFactor: 0.25 }, cosineAnnealing({ tMax: 6 })), 12), want);
  });

  test('linear warm-up then stepLR, resumed from state halfway', () => {
    const want = [0.05, 0.075, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125];
    const mk = () => linearWarmup({ epochs: 2, startFactor: 0.5 }, stepLR({ stepSize: 2, gamma: 0.5 }));
    expectSeq(closedRun(mk(), 8), want);
    const a = mk();
    const got = [a.attach(0.1)];
    for (let i = 0; i < 3; i++) got.push(a.step());
    const b = mk();
    b.loadState(JSON.parse(JSON.stringify(a.state())));
    expect(b.lr).toBeCloseTo(got[3], 15);
    for (let i = 0; i < 5; i++) got.push(b.step());
    expectSeq(got, want);
  });

  test('linear warm-up then plateau: the plateau sees only the epochs after the warm-up', () => {
    const s = linearWarmup({ epochs: 2, startFactor: 0.5 }, reduceLROnPlateau({ factor: 0.5, patience: 0 }));
    const got = [s.attach(1)];
    for (const m of [5, 5, 5, 5, 4]) got.push(s.step({ 'val.loss': m }));
    // warm-up 0.5, 0.75; then plateau at 1: first metric 5 is the best so far, then two bad epochs halve twice.
    expectSeq(got, [0.5, 0.75, 1, 1, 0.5, 0.5]);
  });
});
