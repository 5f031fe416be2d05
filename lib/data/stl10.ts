// STL10 (torchvision semantics): stl10_binary/{train,test,unlabeled}_X.bin, {train,test}_y.bin, class_names.txt,
// fold_indices.txt. The .bin files are read natively with positioned reads, one image at a time; only the labels are
// held in memory. Images are stored column-major per channel in the file and come out as row-major uint8 CHW.
import * as fs from 'fs';
import * as path from 'path';
import { NativeDataset } from './dataset';
import { downloadStl10, DownloadOptions } from './download';
import { Transform } from './transforms';
import { sourceLength, stl10Source } from './native_source';
import { fileKind, NotRegularFileError, readRegularFileSync } from '../io/files';

export type Stl10Split = 'train' | 'test' | 'unlabeled' | 'train+unlabeled';
export const STL10_SPLITS: Stl10Split[] = ['train', 'test', 'unlabeled', 'train+unlabeled'];
export const STL10_FOLDER = 'stl10_binary';

export interface Stl10Options {
  /** The folder holding stl10_binary/ (default ./data). */
  root?: string;
  /** 'train' (5000 labeled), 'test' (8000), 'unlabeled' (100000, label -1) or 'train+unlabeled' (default 'train'). */
  split?: Stl10Split;
  /** 0..9: keep only the training indices listed on that line of fold_indices.txt (train, train+unlabeled). */
  folds?: number;
  /** Download and extract the official archive when the files are missing (then `await dataset.load()`). */
  download?: boolean;
  /** Applied to every image (e.g. `T.compose([T.randomResizedCrop(224), T.normalize(...)])`); none: uint8 CHW. */
  transform?: Transform;
  /** Download options (url, md5); the URL can also come from VGGNET_STL10_URL. */
  downloadOptions?: DownloadOptions;
}

/** Whether `dir` holds STL10's train and test images (stl10_binary/{train,test}_X.bin). */
export function stl10Present(dir: string): boolean {
  return fs.existsSync(path.join(dir, STL10_FOLDER, 'train_X.bin')) && fs.existsSync(path.join(dir, STL10_FOLDER, 'test_X.bin'));
}

export class STL10 extends NativeDataset {
  readonly root: string;
  readonly split: Stl10Split;
  readonly folds?: number;
  readonly download: boolean;
  classes: string[] = [];
  private readonly downloadOptions: DownloadOptions;
  private loading: Promise<void> | null = null;

  /** Opens the files now when they are there; with `download: true` and no files, `await load()` fetches them. */
  constructor(options: Stl10Options = {}) {
    super(options.transform);
    this.root = options.root ?? './data';
    this.split = options.split ?? 'train';
    this.download = options.download ?? false;
    this.downloadOptions = options.downloadOptions ?? {};
    if (!STL10_SPLITS.includes(this.split)) {
      throw new RangeError(`STL10: split must be one of ${STL10_SPLITS.join(', ')}, got '${String(this.split)}'`);
    }
    if (options.folds !== undefined && options.folds !== null) {
      if (!Number.isInteger(options.folds) || options.folds < 0 || options.folds > 9) {
        throw new RangeError(`STL10: folds must be an integer in 0..9, got ${options.folds}`);
      }
      if (this.split !== 'train' && this.split !== 'train+unlabeled') {
        throw new Error(`STL10: folds select training indices; split '${this.split}' has none`);
      }
      this.folds = options.folds;
    }
    if (!this.download || fs.existsSync(path.join(this.dir, 'class_names.txt'))) this.open();
  }

  /** Resolves when the dataset is open; creates it (downloading if asked) when it is not. */
  static async create(options: Stl10Options = {}): Promise<STL10> {
    const ds = new STL10(options);
    await ds.load();
    return ds;
  }

  get dir(): string {
    return path.join(this.root, STL10_FOLDER);
  }

  async load(): Promise<void> {
    if (this.source) return;
    if (!this.loading) {
      this.loading = (async () => {
        await downloadStl10(this.root, this.downloadOptions);
        this.open();
      })();
      this.loading.catch(() => {
        this.loading = null;
      });
    }
    return this.loading;
  }

  protected notReady(): Error {
    return new Error(`STL10: ${this.dir} is not there yet; with download: true, call \`await dataset.load()\` first`);
  }

  private file(name: string): string {
    return path.join(this.dir, name);
  }

  private open(): void {
    const classFile = this.file('class_names.txt');
    if (!fs.existsSync(classFile)) {
      const hint = this.download ? '' : ' (pass download: true to fetch STL10)';
      throw new Error(`STL10: ${classFile}: expected the class names file, got missing file${hint}`);
    }
    this.classes = readText(classFile, 'the class names file').split('\n').map((s) => s.trim()).filter((s) => s.length > 0);
    if (this.classes.length !== 10) {
      throw new Error(`STL10: ${classFile}: expected 10 class names, got ${this.classes.length}`);
    }
    const train: [string, string | null] = [this.file('train_X.bin'), this.file('train_y.bin')];
    const test: [string, string | null] = [this.file('test_X.bin'), this.file('test_y.bin')];
    const unl: [string, string | null] = [this.file('unlabeled_X.bin'), null];
    const parts = { train: [train], test: [test], unlabeled: [unl], 'train+unlabeled': [train, unl] }[this.split];
    let subset: Int32Array | null = null;
    if (this.folds !== undefined) {
      const trainCount = sourceLength(stl10Source([train]));
      const fold = this.readFold(this.folds, trainCount);
      if (this.split === 'train') {
        subset = fold;
      } else {
        const unlCount = Math.floor(fileSize(unl[0]) / 27648); // a bad size is reported by the native reader below
        subset = new Int32Array(fold.length + unlCount);
        subset.set(fold);
        for (let i = 0; i < unlCount; i++) subset[fold.length + i] = trainCount + i;
      }
    }
    this.source = stl10Source(parts, subset);
  }

  private readFold(fold: number, trainCount: number): Int32Array {
    const f = this.file('fold_indices.txt');
    if (!fs.existsSync(f)) throw new Error(`STL10: ${f}: expected the fold indices file, got missing file`);
    const lines = readText(f, 'the fold indices file').split('\n').filter((l) => l.trim().length > 0);
    if (lines.length !== 10) throw new Error(`STL10: ${f}: expected 10 lines (folds 0..9), got ${lines.length}`);
    const tokens = lines[fold].trim().split(/\s+/);
    const idx = new Int32Array(tokens.length);
    tokens.forEach((t, k) => {
      const i = /^\d+$/.test(t) ? Number(t) : NaN;
      if (!(i >= 0 && i < trainCount)) {
        throw new Error(`STL10: ${f}: line ${fold + 1}: expected training indices in 0..${trainCount - 1}, got ${t.length > 20 ? t.slice(0, 20) + '...' : t}`);
      }
      idx[k] = i;
    });
    return idx;
  }
}

function readText(p: string, what: string): string {
  try {
    return readRegularFileSync(p, 64 << 20).toString('utf8');
  } catch (e) {
    if (e instanceof NotRegularFileError) throw new Error(`STL10: ${p}: expected ${what} (a regular file), got ${e.kind}`);
    throw new Error(`STL10: ${p}: expected ${what}, got ${(e as Error).message.replace(`${p}: `, '')}`);
  }
}

function fileSize(p: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new Error(`STL10: ${p}: expected a file of N*27648 bytes, got missing file`);
  }
  if (!st.isFile()) throw new Error(`STL10: ${p}: expected a file of N*27648 bytes, got ${fileKind(st)}`);
  return st.size;
}
