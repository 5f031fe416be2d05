// Seeded random-mutation fuzzing of the readers, bounded for CI: thousands of mutated safetensors files (bit flips,
// byte overwrites, truncations, insertions, edits of the JSON header), PyTorch .pth files (the zip archive as bytes,
// its pickle re-zipped with valid CRCs, and the legacy stream written by PyTorch), checkpoint metadata, and STL10 label and fold
// files. Every outcome must be a successful parse or a thrown Error naming the source — never a crash of the process
// (a native crash kills the jest worker and fails the run); for the training CLI's argument parser, valid options or
// exit 0/2 with a message. Same seed, same cases: a failure is reproducible from the
// case number printed with it. VGGNET_FUZZ_SCALE=10 runs ten times as many cases.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor } from '../../lib/tensor';
import { parseSafetensors, serializeSafetensors } from '../../lib/io/safetensors';
import { decodeMeta, encodeMeta, modelSpec, readCheckpointMeta, CHECKPOINT_FORMAT, CheckpointMeta } from '../../lib/train/checkpoint';
import { Trainer } from '../../lib/train/trainer';
import { VGGNet } from '../../lib/models/vgg';
import { Dropout } from '../../lib/nn/layers';
import { sgd } from '../../lib/optim/sgd';
import { linearWarmup, reduceLROnPlateau } from '../../lib/optim/schedulers';
import { STL10 } from '../../lib/data';
import { tinyStl10 } from '../helpers/data_fixtures';
import { mulberry32 } from '../ref/random';
import { parsePth, serializePth } from '../../lib/io/pth';
import { readZipDirectory } from '../../lib/io/zip';
import { zipPth } from '../helpers/pth_build';
import { buildProgram as buildTrainProgram, parseTrainArgs } from '../../lib/cli/train';
import { UsageError, applySamplePreset, mergeResume } from '../../lib/cli/train_plan';

const SCALE = Number(process.env.VGGNET_FUZZ_SCALE ?? 1);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** mulberry32 with integer and choice helpers. */
function rng(seed: number) {
  const next = mulberry32(seed);
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  return { next, int, pick };
}
type Rng = ReturnType<typeof rng>;

const INTERESTING_BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x22 /* " */, 0x7b /* { */, 0x7d /* } */, 0x5b, 0x5d, 0x2c, 0x3a, 0x5c /* \ */, 0x2d /* - */, 0x39];
const INTERESTING_VALUES: unknown[] = [
  0, -1, 1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e308, -0, null, true, '', 'F32', 'I64', 'BF16', 'x',
  [], [0], [1, 2], [-1], [2 ** 31, 2 ** 31, 2 ** 31], [0, 2 ** 60], {}, { a: 1 }, '__proto__', 'NaN',
];

function mutateBytes(r: Rng, src: Buffer, headerEnd: number): Buffer {
  let b = Buffer.from(src);
  const rounds = 1 + r.int(4);
  for (let k = 0; k < rounds; k++) {
    // Most mutations land in the 8-byte length or the JSON header, where the parser's decisions are.
    const at = () => (r.next() < 0.8 ? r.int(Math.max(1, Math.min(headerEnd, b.length))) : r.int(Math.max(1, b.length)));
    switch (r.int(7)) {
      case 0: if (b.length) { const i = at(); b[i] ^= 1 << r.int(8); } break;
      case 1: if (b.length) b[at()] = r.pick(INTERESTING_BYTES); break;
      case 2: b = b.subarray(0, r.int(b.length + 1)); break;
      case 3: { const i = at(); b = Buffer.concat([b.subarray(0, i), Buffer.from([r.pick(INTERESTING_BYTES)]), b.subarray(i)]); break; }
      case 4: { const i = at(); b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + r.int(8))]); break; }
      case 5: if (b.length >= 8) { // the header length
        const v = r.pick([0n, 1n, 7n, BigInt(headerEnd - 8 + r.int(17) - 8), BigInt(b.length), 1n << 32n, 1n << 63n, (1n << 64n) - 1n]);
        b.writeBigUInt64LE(v < 0n ? 0n : v, 0);
      } break;
      default: b = Buffer.concat([b, Buffer.alloc(r.int(64), r.int(256))]);
    }
  }
  return b;
}

function mutateJson(r: Rng, header: Record<string, unknown>): string {
  const h = JSON.parse(JSON.stringify(header)) as Record<string, Record<string, unknown>>;
  const names = Object.keys(h);
  const rounds = 1 + r.int(3);
  let dup: string | null = null;
  for (let k = 0; k < rounds; k++) {
    const name = r.pick(names);
    const e = h[name];
    switch (r.int(6)) {
      case 0: if (e && typeof e === 'object') e[r.pick(['dtype', 'shape', 'data_offsets', 'extra'])] = r.pick(INTERESTING_VALUES); break;
      case 1: if (e && typeof e === 'object') delete e[r.pick(['dtype', 'shape', 'data_offsets'])]; break;
      case 2: if (e && Array.isArray(e.data_offsets)) (e.data_offsets as number[])[r.int(2)] += r.pick([-8, -4, -1, 1, 4, 8, 2 ** 40]); break;
      case 3: if (e && Array.isArray(e.shape) && e.shape.length) (e.shape as number[])[r.int(e.shape.length)] = r.pick([0, 1, 3, 2 ** 20, 2 ** 31, 2 ** 53]); break;
      case 4: h[r.pick(names)] = r.pick(INTERESTING_VALUES) as never; break;
      default: dup = name;
    }
  }
  let json = JSON.stringify(h);
  if (dup !== null && json.length > 2) json = json.slice(0, -1) + `,${JSON.stringify(dup)}:${JSON.stringify(h[dup] ?? null)}}`;
  return json;
}

function withHeader(json: string, data: Buffer): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), data]);
}

/** Runs one case: a parse that succeeds (its tensors freed) or an Error whose message starts with the source. */
function expectParseOrError(run: () => void, source: string, caseId: string): 'ok' | 'error' {
  try {
    run();
    return 'ok';
  } catch (e) {
    // Errors thrown by the addon come from the outer realm (not jest's), so test the brand rather than instanceof.
    const isError = Object.prototype.toString.call(e) === '[object Error]';
    if (!isError || !(e as Error).message.startsWith(source)) {
      throw new Error(`${caseId}: expected an Error starting with '${source}', got ${isError ? `${(e as Error).name}: ${(e as Error).message}` : String(e)}`);
    }
    return 'error';
  }
}

describe('fuzz', () => {
  const seedFile = (): { buf: Buffer; header: Record<string, unknown>; data: Buffer } => {
    const tensors = {
      'features.0.weight': Tensor.from(Float32Array.from({ length: 24 }, (_, i) => i / 7), [2, 3, 2, 2]),
      'features.0.bias': Tensor.from(new Float32Array([1, -1]), [2]),
      'features.1.num_batches_tracked': 5n,
      'labels': Tensor.from(new Int32Array([3, 1, 4]), [3]),
      'mask': Tensor.from(new Uint8Array([1, 0, 1, 1]), [2, 2]),
    };
    const buf = Buffer.concat(serializeSafetensors(tensors, { format: 'pt', note: 'seed' }));
    for (const t of Object.values(tensors)) if (t instanceof Tensor) t.dispose();
    const n = Number(buf.readBigUInt64LE(0));
    return { buf, header: JSON.parse(buf.subarray(8, 8 + n).toString()), data: buf.subarray(8 + n) };
  };

  test('safetensors: mutated files parse or throw an Error naming the file', () => {
    const { buf, header, data } = seedFile();
    const headerEnd = 8 + Number(buf.readBigUInt64LE(0));
    const r = rng(0x5eed);
    const tally = { ok: 0, error: 0 };
    const N = 6000 * SCALE;
    for (let i = 0; i < N; i++) {
      const bytes = r.next() < 0.6 ? mutateBytes(r, buf, headerEnd) : withHeader(mutateJson(r, header), r.next() < 0.8 ? data : mutateBytes(r, data, 0));
      tally[expectParseOrError(() => {
        const { tensors } = parseSafetensors(bytes, 'fuzz.safetensors');
        for (const t of Object.values(tensors)) if (t instanceof Tensor) t.dispose();
      }, 'fuzz.safetensors: ', `safetensors case ${i}`)]++;
    }
    // Both outcomes occur: the mutations are neither all fatal nor all harmless.
    expect(tally.ok).toBeGreaterThan(50);
    expect(tally.error).toBeGreaterThan(N / 2);
  });

  test('checkpoint metadata: mutated fields decode or throw an Error naming the file', () => {
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT, packageVersion: '0.1.0', epoch: 3, batchInEpoch: 2, step: 40, lr: 0.05,
      model: { name: 'tiny', config: [4, 'M', 8, 'M'], numClasses: 5, batchNorm: true, dropout: 0.5, hiddenFeatures: 12, inChannels: 3, precision: 'fp32', seed: 1 },
      config: { epochs: 8 }, hyperParameters: { momentum: 0.9 }, scheduler: { type: 'cosine', t: 3 }, rng: { dropout: [{ seed: 1, calls: 9 }], loader: null },
      metrics: { 'val.loss': 1.2 }, partial: { lossSum: 3, correct1: 1, correct5: 2, samples: 4 }, history: [{ epoch: 1 }], best: { top1: 0.5, epoch: 2 },
      classes: ['a', 'b', 'c', 'd', 'e'], created: 'now',
    };
    const base = encodeMeta(meta);
    const keys = Object.keys(base);
    const r = rng(0xc4ec);
    const tally = { ok: 0, error: 0 };
    const N = 4000 * SCALE;
    for (let i = 0; i < N; i++) {
      const m: Record<string, string> = { ...base };
      for (let k = 1 + r.int(3); k > 0; k--) {
        const key = r.pick(keys);
        const v = m[key] ?? '';
        switch (r.int(5)) {
          case 0: delete m[key]; break;
          case 1: m[key] = v.slice(0, r.int(v.length + 1)); break;
          case 2: { const j = r.int(v.length + 1); m[key] = v.slice(0, j) + String.fromCharCode(r.pick(INTERESTING_BYTES)) + v.slice(j + 1); break; }
          case 3: m[key] = JSON.stringify(r.pick(INTERESTING_VALUES)) ?? 'undefined'; break;
          default: m[key] = String(r.pick(INTERESTING_VALUES));
        }
      }
      tally[expectParseOrError(() => decodeMeta(m, 'fuzz-ck.safetensors'), 'fuzz-ck.safetensors: ', `metadata case ${i}`)]++;
    }
    expect(tally.ok).toBeGreaterThan(50);
    expect(tally.error).toBeGreaterThan(N / 4);

    // The same through the file reader (header read only), on mutated whole files.
    const f = path.join(tmp, 'ck.safetensors');
    const file = Buffer.concat(serializeSafetensors({ 'features.0.bias': 7n }, base));
    const headerEnd = 8 + Number(file.readBigUInt64LE(0));
    for (let i = 0; i < 500 * SCALE; i++) {
      fs.writeFileSync(f, mutateBytes(r, file, headerEnd));
      expectParseOrError(() => readCheckpointMeta(f), `${f}: `, `checkpoint file case ${i}`);
    }
  });

  test('STL10: mutated label and fold files open or throw an Error naming the file; opened sets read back', () => {
    const root = tinyStl10({ train: 20, test: 4, unlabeled: 2 });
    const dir = path.join(root, 'stl10_binary');
    const y0 = fs.readFileSync(path.join(dir, 'train_y.bin'));
    const fold0 = fs.readFileSync(path.join(dir, 'fold_indices.txt'), 'utf8');
    const xSize = fs.statSync(path.join(dir, 'train_X.bin')).size;
    const xCopy = path.join(tmp, 'train_X.bin');
    fs.copyFileSync(path.join(dir, 'train_X.bin'), xCopy);
    const r = rng(0x57110);
    const tally = { ok: 0, error: 0 };
    const N = 1500 * SCALE;
    try {
      for (let i = 0; i < N; i++) {
        let y: Buffer = Buffer.from(y0);
        let folds = fold0;
        const what = r.int(4);
        if (what === 0 || what === 3) y = mutateBytes(r, y, y.length);
        if (what >= 1) {
          const lines = folds.split('\n');
          for (let k = 1 + r.int(3); k > 0; k--) {
            const li = r.int(lines.length);
            const toks = lines[li].split(' ');
            switch (r.int(5)) {
              case 0: toks[r.int(toks.length)] = String(r.pick(['-1', '20', '19', '0', '1e1', '0x1', 'NaN', '', '  ', '3.0', '99999999999999999999', '\t7'])); break;
              case 1: lines.splice(li, 1); break;
              case 2: lines.splice(li, 0, toks.join(' ')); break;
              case 3: toks.length = r.int(toks.length + 1); break;
              default: lines[li] = lines[li].slice(0, r.int(lines[li].length + 1)) + String.fromCharCode(r.pick(INTERESTING_BYTES));
            }
            if (li < lines.length && r.int(5) !== 1) lines[li] = toks.join(' ');
          }
          folds = lines.join('\n');
        }
        fs.writeFileSync(path.join(dir, 'train_y.bin'), y);
        fs.writeFileSync(path.join(dir, 'fold_indices.txt'), folds);
        const truncateX = r.int(10) === 0;
        if (truncateX) fs.truncateSync(path.join(dir, 'train_X.bin'), r.int(xSize));
        tally[expectParseOrError(() => {
          const split = r.pick(['train', 'train+unlabeled'] as const);
          const ds = new STL10({ root, split, folds: r.int(3) === 0 ? undefined : r.int(10) });
          const lowest = split === 'train' ? 0 : -1; // -1: the unlabeled images
          for (const l of ds.labels()) if (!(l >= lowest && l <= 9)) throw new Error(`case ${i}: label ${l} out of ${lowest}..9 was accepted`);
          const img = ds.get(r.int(ds.length)).image;
          expect(img.shape).toEqual([3, 96, 96]);
          img.dispose();
        }, 'STL10: ', `STL10 case ${i}`)]++;
        if (truncateX) fs.copyFileSync(xCopy, path.join(dir, 'train_X.bin'));
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
    expect(tally.ok).toBeGreaterThan(20);
    expect(tally.error).toBeGreaterThan(N / 4);
  });

  test('PyTorch .pth: mutated zip archives, pickles and legacy streams parse or throw an Error naming the file', () => {
    const tensors = {
      'features.0.weight': Tensor.from(Float32Array.from({ length: 24 }, (_, i) => i / 7), [2, 3, 2, 2]),
      'features.1.num_batches_tracked': 5n,
      labels: Tensor.from(new Int32Array([3, 1, 4]), [3]),
      big: Tensor.from(new BigInt64Array([1n, -2n]), [2]),
    };
    const zip = Buffer.concat(serializePth(tensors));
    for (const t of Object.values(tensors)) if (t instanceof Tensor) t.dispose();
    const dir = readZipDirectory(zip, 'seed');
    const entry = (n: string) => { const e = dir.get(n)!; return zip.subarray(e.start, e.start + e.size); };
    const pkl = entry('archive/data.pkl');
    const storages = Object.fromEntries([...dir.keys()].filter((n) => n.startsWith('archive/data/')).map((n) => [n.slice(13), entry(n)]));
    const legacy = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'pth', 'state_legacy.pth'));
    const legacyHeaderEnd = legacy.indexOf(Buffer.from('little_endian')) + 64; // mutate mostly the pickles, not the data
    const r = rng(0x9e7);
    const tally = { ok: 0, error: 0 };
    const N = 3000 * SCALE;
    for (let i = 0; i < N; i++) {
      const kind = r.int(3);
      const bytes = kind === 0 ? mutateBytes(r, zip, pkl.length + 64)
        : kind === 1 ? zipPth(mutateBytes(r, pkl, pkl.length), storages)
          : mutateBytes(r, legacy, Math.max(legacyHeaderEnd, legacy.length - 200));
      tally[expectParseOrError(() => {
        const { tensors: got } = parsePth(bytes, 'fuzz.pth');
        for (const t of Object.values(got)) if (t instanceof Tensor) t.dispose();
      }, 'fuzz.pth: ', `pth case ${i} (kind ${kind})`)]++;
    }
    // Both outcomes occur (the format is strict, so most mutations are errors: ~40 of 3000 parse).
    expect(tally.ok).toBeGreaterThan(20);
    expect(tally.error).toBeGreaterThan(N / 2);
  });

  test('checkpoint metadata, nested fields: what decodes resumes a Trainer; anything else is an Error naming the file', () => {
    // The metadata reader's users read nested fields (the model description, RNG and scheduler state, running
    // metrics): a mutation deep inside a field must be refused by decodeMeta with the field's path, or be usable.
    const model = new VGGNet([4, 'M', 4, 'M'], { numClasses: 3, hiddenFeatures: 6, dropout: 0.5, device: 'cpu', seed: 2 });
    const weights = model.stateDict();
    const trainerFor = () => new Trainer(model, { optimizer: sgd({ lr: 0.1, momentum: 0.9 }), scheduler: linearWarmup({ epochs: 2 }, reduceLROnPlateau()), output: null });
    const seed = trainerFor();
    seed.epoch = 3;
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT, packageVersion: '0.1.0', epoch: 3, batchInEpoch: 2, step: 40, lr: 0.05, model: modelSpec(model),
      config: { epochs: 8, imageSize: 32 }, hyperParameters: { momentum: 0.9 },
      scheduler: (() => { const sc = linearWarmup({ epochs: 2 }, reduceLROnPlateau()); sc.attach(0.1); sc.step({ 'val.loss': 1 }); return sc.state(); })(),
      rng: { dropout: [{ seed: 1, calls: 9 }, { seed: 2, calls: 9 }], loader: { seed: 1, epoch: 3, batch: 2, shuffle: true } },
      metrics: { 'val.loss': 1.2 }, partial: { lossSum: 3, correct1: 1, correct5: 2, samples: 4 }, history: [{ epoch: 1, 'train.loss': 2 }],
      best: { top1: 0.5, epoch: 2 }, classes: ['a', 'b', 'c'], created: 'now',
    };
    const r = rng(0xdee9);
    /** Every [parent, key] inside a JSON value (objects and arrays), for a mutation to land on. */
    const slots = (v: unknown, out: [Record<string, unknown>, string][] = []): [Record<string, unknown>, string][] => {
      if (v && typeof v === 'object') {
        for (const k of Object.keys(v)) {
          out.push([v as Record<string, unknown>, k]);
          slots((v as Record<string, unknown>)[k], out);
        }
      }
      return out;
    };
    const tally = { ok: 0, error: 0 };
    const N = 1500 * SCALE;
    for (let i = 0; i < N; i++) {
      const m = JSON.parse(JSON.stringify(meta)) as Record<string, unknown>;
      for (let k = 1 + r.int(3); k > 0; k--) {
        const all = slots(m).filter(([, key]) => !['format'].includes(key));
        const [parent, key] = r.pick(all);
        if (r.int(4) === 0) delete parent[key];
        else parent[key] = r.pick([...INTERESTING_VALUES, 'M', 'bf16', 'stepLR', 'NaN', -5, 1e9, [4, 'M'], { type: 'reduceLROnPlateau' }]);
      }
      const source = 'fuzz-nested.safetensors';
      tally[expectParseOrError(() => {
        const decoded = decodeMeta(encodeMeta(m as unknown as CheckpointMeta), source);
        const t = trainerFor();
        t.resume({ source, meta: decoded, model: weights, optimizer: {}, dispose: () => undefined });
        // What resumed is usable: the LR it schedules and the dropout offsets it will draw.
        if (!Number.isFinite(t.optimizer.lr) || t.optimizer.lr < 0) throw new Error(`case ${i}: resumed with lr ${t.optimizer.lr}`);
        for (const d of model.classifier.layers) if (d instanceof Dropout) Dropout.offsetOf(d.calls);
      }, 'fuzz-nested.safetensors: ', `nested metadata case ${i}`)]++;
    }
    model.dispose();
    expect(tally.ok).toBeGreaterThan(20);
    expect(tally.error).toBeGreaterThan(N / 4);
  });

  // The training CLI's argument parser and option rules (lib/cli/train_plan.ts): random argv, built from the real
  // flags, hostile values and stray words, either parses to options inside each flag's range or ends with exit 0
  // (--help/--version) or 2 and a message; a parse then goes through the sample preset and the resume rules against
  // a saved run, which accept it or refuse it with a UsageError, nothing else. Nothing trains.
  test('train CLI: random argv parses to valid options or exits 0/2 with a message; the resume rules accept or refuse', () => {
    const program = buildTrainProgram({ stdout: { write: () => true }, stderr: { write: () => true } });
    const flags = program.options.flatMap((o) => [o.long!, ...(o.short ? [o.short] : [])]);
    const words = ['--help', '-h', '--version', '--', '--bogus', '--lr=0.1', '--epochs=', '-x', 'extra', 'last.safetensors', '', ' ', '--no-batch-norm'];
    const values = ['0', '1', '-1', '2', '0.5', '1e-3', '1e309', '-0', 'NaN', 'Infinity', '0x10', '1.5', '', ' ', 'abc', '3 ', '9007199254740993',
      'vgg11', 'vgg19', 'auto', 'cpu', 'cuda', 'cosine', 'plateau', 'sample', 'stl10', 'folder', 'bf16', 'vgg16_bn', './data', '--lr', '-'];
    const saved: Record<string, unknown> = {
      model: 'vgg11', batchNorm: true, width: 0.25, hiddenFeatures: 256, epochs: 8, batchSize: 32, lr: 0.05, momentum: 0.9, weightDecay: 5e-4,
      imageSize: 32, cropScale: 0.35, data: './data', dataset: 'sample', seed: 1, scheduler: 'cosine', warmup: 1, patience: 3, factor: 0.1,
      stepSize: 30, checkpointDir: './checkpoint', saveEvery: 0, logDir: './logs',
    };
    const ranges: Record<string, (v: unknown) => boolean> = {
      epochs: (v) => Number.isSafeInteger(v) && (v as number) >= 1,
      batchSize: (v) => v === undefined || (Number.isSafeInteger(v) && (v as number) >= 1),
      imageSize: (v) => Number.isSafeInteger(v) && (v as number) >= 32,
      lr: (v) => Number.isFinite(v) && (v as number) >= 0,
      factor: (v) => Number.isFinite(v) && (v as number) >= 0 && (v as number) < 1,
      cropScale: (v) => Number.isFinite(v) && (v as number) > 0 && (v as number) <= 1,
      width: (v) => Number.isFinite(v) && (v as number) >= 0.01,
      dropout: (v) => Number.isFinite(v) && (v as number) >= 0 && (v as number) < 1,
      model: (v) => ['vgg11', 'vgg13', 'vgg16', 'vgg19'].includes(v as string),
    };
    const r = rng(0xc11);
    const tally = { ok: 0, usage: 0, help: 0, refused: 0 };
    const N = 3000 * SCALE;
    for (let i = 0; i < N; i++) {
      const argv: string[] = [];
      for (let k = r.int(7); k > 0; k--) {
        const u = r.next();
        if (u < 0.6) argv.push(r.pick(flags), r.pick(values));
        else if (u < 0.85) argv.push(r.pick(flags));
        else argv.push(r.pick(r.next() < 0.5 ? words : values));
      }
      const out: string[] = [];
      const err: string[] = [];
      const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } };
      const where = `cli case ${i}: ${JSON.stringify(argv)}`;
      let parsed: ReturnType<typeof parseTrainArgs>;
      try {
        parsed = parseTrainArgs(argv, io);
      } catch (e) {
        throw new Error(`${where}: the parser threw ${(e as Error).stack}`);
      }
      if (typeof parsed === 'number') {
        if (parsed === 0) {
          tally.help++;
          if (out.join('').trim() === '') throw new Error(`${where}: exit 0 with nothing on stdout`);
        } else {
          tally.usage++;
          if (parsed !== 2) throw new Error(`${where}: exit ${parsed}, expected 0 or 2`);
          if (!/error: /.test(err.join(''))) throw new Error(`${where}: exit 2 without an error message (stderr: ${JSON.stringify(err.join(''))})`);
        }
        continue;
      }
      for (const [k, ok] of Object.entries(ranges)) {
        if (!ok(parsed.options[k])) throw new Error(`${where}: parsed ${k} = ${JSON.stringify(parsed.options[k])}, out of its range`);
      }
      tally.ok++;
      const keys = [...new Set(parsed.program.options.map((o) => o.attributeName()))];
      const o = { ...parsed.options };
      try {
        applySamplePreset(o, parsed.explicit);
        mergeResume({ ...parsed.options }, parsed.explicit, saved, { epoch: r.int(9), batchInEpoch: r.int(3) }, keys, 'fuzz.safetensors');
      } catch (e) {
        if (!(e instanceof UsageError) || !(e as Error).message.startsWith('--')) throw new Error(`${where}: expected a UsageError naming the flag, got ${(e as Error).stack}`);
        tally.refused++;
      }
    }
    // every outcome occurs
    expect(tally.ok).toBeGreaterThan(N / 20);
    expect(tally.usage).toBeGreaterThan(N / 4);
    expect(tally.help).toBeGreaterThan(10);
    expect(tally.refused).toBeGreaterThan(10);
  });
});
