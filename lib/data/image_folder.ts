// ImageFolder (torchvision semantics): root/<class>/**/<image>, class folders sorted by name -> indices 0..K-1, each
// class folder walked like os.walk(followlinks=True) (folders in path order, files sorted within a folder), images
// chosen by extension. Links are followed, to class folders as well (Dirent.isDirectory() is false for a link, which
// used to drop them silently), with loop detection: a link back to a folder on its own path is reported, not walked
// forever. Only regular files are decoded; anything else with an image's extension (FIFO, socket, device, dangling
// link) is skipped with a warning, as are files of other extensions. A class folder without images is an error, as in
// torchvision. JPEG and PNG are decoded with sharp to RGB uint8 and kept in native memory (CHW), so the DataLoader's
// worker threads transform them; `await dataset.load()` decodes (the DataLoader calls it).
import * as fs from 'fs';
import * as path from 'path';
import { NativeDataset } from './dataset';
import { decodeToSource, maxImagePixels } from './image_files';
import { Transform } from './transforms';
import { fileKind } from '../io/files';

export interface ImageFolderOptions {
  /** A folder with one subfolder per class (`root/<class>/*.jpg`); classes are the subfolder names, sorted. */
  root: string;
  /** Applied to every image (e.g. `T.compose([T.evalTransform(224), T.normalize(...)])`); none: uint8 CHW. */
  transform?: Transform;
  /** File extensions (lower case, with the dot) that are decoded; default .jpg .jpeg .png. */
  extensions?: string[];
  /** Decodes in flight at once (default 16). */
  concurrency?: number;
  /** The most pixels one image may decode to (default: $VGGNET_MAX_IMAGE_PIXELS, else DEFAULT_MAX_IMAGE_PIXELS). */
  maxPixels?: number;
}

export class ImageFolder extends NativeDataset {
  readonly root: string;
  readonly classes: string[];
  readonly classToIdx: Record<string, number>;
  /** [path, classIndex] in index order. */
  readonly samples: [string, number][] = [];
  /** Files that were not decoded: other extensions, and files with an image's extension that are not regular files. */
  readonly skipped: string[] = [];
  private readonly concurrency: number;
  private readonly maxPixels: number;
  private loading: Promise<void> | null = null;

  constructor(options: ImageFolderOptions) {
    if (!options || typeof options.root !== 'string') throw new TypeError('ImageFolder: expected { root: string }');
    super(options.transform);
    this.root = options.root;
    this.concurrency = options.concurrency ?? 16;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new RangeError(`ImageFolder: concurrency must be an integer >= 1, got ${options.concurrency}`);
    this.maxPixels = maxImagePixels(options.maxPixels);
    const exts = (options.extensions ?? ['.jpg', '.jpeg', '.png']).map((e) => e.toLowerCase());
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(this.root, { withFileTypes: true });
    } catch (e) {
      throw new Error(`ImageFolder: ${this.root}: expected a folder of class folders, got ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    // Like os.scandir's is_dir(): links are followed (a dangling one is no class).
    this.classes = entries.filter((e) => e.isDirectory() || (e.isSymbolicLink() && statOrNull(path.join(this.root, e.name))?.isDirectory()))
      .map((e) => e.name).sort();
    if (this.classes.length === 0) throw new Error(`ImageFolder: ${this.root}: expected class folders, found none`);
    this.classToIdx = Object.fromEntries(this.classes.map((c, i) => [c, i]));
    const special: string[] = [];
    const loops: string[] = [];
    const empty: string[] = [];
    this.classes.forEach((cls, k) => {
      const before = this.samples.length;
      for (const [dir, names] of walk(path.join(this.root, cls), loops).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        for (const name of names.sort()) {
          const p = path.join(dir, name);
          if (!exts.includes(path.extname(name).toLowerCase())) {
            this.skipped.push(p);
            continue;
          }
          const st = statOrNull(p);
          if (st?.isFile()) {
            this.samples.push([p, k]);
          } else {
            this.skipped.push(p);
            special.push(`${p} (${st ? fileKind(st) : 'a dangling link'})`);
          }
        }
      }
      if (this.samples.length === before) empty.push(path.join(this.root, cls));
    });
    const list = (xs: string[]) => `${xs.slice(0, 3).join(', ')}${xs.length > 3 ? `, ... (${xs.length} in all)` : ''}`;
    if (loops.length) process.emitWarning(`ImageFolder: not following ${loops.length} link(s) that lead back into their own path (a loop): ${list(loops)}`);
    if (special.length) process.emitWarning(`ImageFolder: skipped ${special.length} entr${special.length === 1 ? 'y' : 'ies'} named like images that are not regular files: ${list(special)}`);
    const others = this.skipped.length - special.length;
    if (others) {
      const shown = this.skipped.filter((p) => exts.includes(path.extname(p).toLowerCase()) === false);
      process.emitWarning(`ImageFolder: skipped ${others} file(s) that are not ${exts.join('/')} images: ${list(shown)}`);
    }
    if (empty.length) {
      throw new Error(`ImageFolder: ${empty.length === 1 ? 'class folder' : 'class folders'} without ${exts.join('/')} images: ${empty.join(', ')} ` +
        '(every class needs at least one image, as in torchvision; remove the folder or add images)');
    }
  }

  static async create(options: ImageFolderOptions): Promise<ImageFolder> {
    const ds = new ImageFolder(options);
    await ds.load();
    return ds;
  }

  override get length(): number {
    return this.samples.length;
  }

  protected notReady(): Error {
    return new Error('ImageFolder: images are not decoded yet; call `await dataset.load()` first');
  }

  /** Decodes every image (sharp, `concurrency` at a time) into native memory. Idempotent. */
  async load(): Promise<void> {
    if (this.source) return;
    if (!this.loading) {
      this.loading = this.decodeAll();
      this.loading.catch(() => {
        this.loading = null;
      });
    }
    return this.loading;
  }

  private async decodeAll(): Promise<void> {
    this.source = await decodeToSource(this.samples.map(([f]) => f), Int32Array.from(this.samples, ([, k]) => k), 'ImageFolder', this.concurrency,
      this.maxPixels);
  }
}

/** The file's stat (links followed), or null when it cannot be read (missing, dangling link, no permission). */
function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}

/**
 * [folder, names of its non-folder entries] for `top` and every folder below it, links to folders followed (as
 * os.walk(followlinks=True)). A folder already on the path from `top` (same device and inode) is a loop: it is
 * recorded in `loops` and not entered again. Unreadable folders are errors naming them.
 */
function walk(top: string, loops: string[]): [string, string[]][] {
  const out: [string, string[]][] = [];
  const visit = (dir: string, ancestors: Set<string>): void => {
    const st = statOrNull(dir);
    const id = st ? `${st.dev}:${st.ino}` : dir;
    if (ancestors.has(id)) {
      loops.push(dir);
      return;
    }
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      throw new Error(`ImageFolder: ${dir}: expected a readable folder, got ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const names: string[] = [];
    const subdirs: string[] = [];
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() || (e.isSymbolicLink() && statOrNull(p)?.isDirectory())) subdirs.push(p);
      else names.push(e.name);
    }
    out.push([dir, names]);
    const inner = new Set(ancestors).add(id);
    for (const d of subdirs) visit(d, inner);
  };
  visit(top, new Set());
  return out;
}
