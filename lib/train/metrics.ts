// Classification metrics accumulated over batches: mean loss, top-1, top-5, per-class accuracy and the confusion
// matrix, all counted over the real number of samples (the last, smaller batch included).
export interface EvalResult {
  /** Mean cross-entropy over the samples. */
  loss: number;
  /** Fractions in [0, 1]. */
  top1: number;
  top5: number;
  samples: number;
  /** Accuracy per true class (NaN for a class with no samples). */
  perClass: number[];
  /** confusion[true][predicted] = count. */
  confusion: number[][];
}

export class MetricAccumulator {
  lossSum = 0;
  correct1 = 0;
  correct5 = 0;
  samples = 0;
  readonly confusion: number[][];

  constructor(readonly numClasses: number) {
    this.confusion = Array.from({ length: numClasses }, () => new Array(numClasses).fill(0));
  }

  /** logits: row-major (n, C); labels: n class indices; meanLoss: the batch's mean loss. */
  add(logits: Float32Array, labels: Int32Array, meanLoss: number): void {
    const n = labels.length;
    const c = this.numClasses;
    if (logits.length !== n * c) throw new Error(`metrics: expected ${n}×${c} logits, got ${logits.length}`);
    const k = Math.min(5, c);
    for (let i = 0; i < n; i++) {
      const y = labels[i];
      if (!(y >= 0 && y < c)) throw new RangeError(`metrics: label ${y} is outside 0..${c - 1}`);
      const row = logits.subarray(i * c, (i + 1) * c);
      let arg = 0;
      for (let j = 1; j < c; j++) if (row[j] > row[arg]) arg = j;
      // rank of the true class: how many logits beat it (ties broken by index, like a stable sort)
      let rank = 0;
      for (let j = 0; j < c; j++) if (row[j] > row[y] || (row[j] === row[y] && j < y)) rank++;
      if (arg === y) this.correct1++;
      if (rank < k) this.correct5++;
      this.confusion[y][arg]++;
    }
    this.lossSum += meanLoss * n;
    this.samples += n;
  }

  get loss(): number {
    return this.samples ? this.lossSum / this.samples : NaN;
  }
  get top1(): number {
    return this.samples ? this.correct1 / this.samples : NaN;
  }
  get top5(): number {
    return this.samples ? this.correct5 / this.samples : NaN;
  }

  result(): EvalResult {
    const perClass = this.confusion.map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0);
      return total ? row[i] / total : NaN;
    });
    return {
      loss: this.loss, top1: this.top1, top5: this.top5, samples: this.samples, perClass,
      confusion: this.confusion.map((r) => r.slice()),
    };
  }

  /** For mid-epoch checkpoints (the running training metrics). */
  state(): { lossSum: number; correct1: number; correct5: number; samples: number } {
    return { lossSum: this.lossSum, correct1: this.correct1, correct5: this.correct5, samples: this.samples };
  }
  loadState(s: { lossSum: number; correct1: number; correct5: number; samples: number }): void {
    Object.assign(this, { lossSum: s.lossSum, correct1: s.correct1, correct5: s.correct5, samples: s.samples });
  }
}

/** A confusion matrix as aligned text, with per-class accuracy. */
export function formatConfusion(r: EvalResult, classes?: string[]): string {
  const names = r.confusion.map((_, i) => classes?.[i] ?? String(i));
  const w = Math.max(5, ...names.map((n) => n.length), ...r.confusion.flat().map((v) => String(v).length)) + 1;
  const pad = (s: string) => s.padStart(w);
  const lines = [`${'true \\ pred'.padEnd(w)}${names.map((n) => pad(n.slice(0, w - 1))).join('')}${pad('acc')}`];
  r.confusion.forEach((row, i) => {
    const acc = Number.isNaN(r.perClass[i]) ? '-' : `${(100 * r.perClass[i]).toFixed(1)}%`;
    lines.push(`${names[i].padEnd(w)}${row.map((v) => pad(String(v))).join('')}${pad(acc)}`);
  });
  return lines.join('\n');
}
