// ImageFolder (torchvision semantics): root/<class>/<image>, class folders sorted by name -> indices 0..K-1, files
// sorted within a class. JPEG and PNG are decoded with sharp to RGB uint8 and kept in native memory (CHW), so the
// DataLoader's worker threads transform them; `await dataset.load()` decodes (the DataLoader calls it).
import * as fs from 'fs';
import * as path from 'path';
import { NativeDataset } from './dataset';
import { decodeToSource } from './image_files';
import { Transform } from './transforms';

export interface ImageFolderOptions {
  /** A folder with one subfolder per class (`root/<class>/*.jpg`); classes are the subfolder names, sorted. */
  root: string;
  /** Applied to every image (e.g. `T.compose([T.evalTransform(224), T.normalize(...)])`); none: uint8 CHW. */
  transform?: Transform;
  /** File extensions (lower case, with the dot) that are decoded; default .jpg .jpeg .png. */
  extensions?: string[];
  /** Decodes in flight at once (default 16). */
  concurrency?: number;
}

export class ImageFolder extends NativeDataset {
  readonly root: string;
  readonly classes: string[];
  readonly classToIdx: Record<string, number>;
  /** [path, classIndex] in index order. */
  readonly samples: [string, number][] = [];
  /** Files that were not images of a known extension. */
  readonly skipped: string[] = [];
  private readonly concurrency: number;
  private loading: Promise<void> | null = null;

  constructor(options: ImageFolderOptions) {
    super(options.transform);
    if (!options || typeof options.root !== 'string') throw new TypeError('ImageFolder: expected { root: string }');
    this.root = options.root;
    this.concurrency = options.concurrency ?? 16;
    const exts = (options.extensions ?? ['.jpg', '.jpeg', '.png']).map((e) => e.toLowerCase());
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(this.root, { withFileTypes: true });
    } catch (e) {
      throw new Error(`ImageFolder: ${this.root}: expected a folder of class folders, got ${(e as Error).message}`);
    }
    this.classes = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
    if (this.classes.length === 0) throw new Error(`ImageFolder: ${this.root}: expected class folders, found none`);
    this.classToIdx = Object.fromEntries(this.classes.map((c, i) => [c, i]));
    this.classes.forEach((cls, k) => {
      let files: string[];
      try {
        files = fs.readdirSync(path.join(this.root, cls), { withFileTypes: true }).map((e) => e.name).sort();
      } catch (e) {
        throw new Error(`ImageFolder: ${path.join(this.root, cls)}: expected a readable class folder, got ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      for (const f of files) {
        const p = path.join(this.root, cls, f);
        if (exts.includes(path.extname(f).toLowerCase()) && isFile(p)) this.samples.push([p, k]);
        else this.skipped.push(p);
      }
    });
    if (this.skipped.length) {
      const shown = this.skipped.slice(0, 3).join(', ');
      process.emitWarning(
        `ImageFolder: skipped ${this.skipped.length} file(s) that are not ${exts.join('/')} images: ${shown}${this.skipped.length > 3 ? ', ...' : ''}`,
      );
    }
    if (this.samples.length === 0) throw new Error(`ImageFolder: ${this.root}: expected ${exts.join('/')} images, found none`);
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
    this.source = await decodeToSource(this.samples.map(([f]) => f), Int32Array.from(this.samples, ([, k]) => k), 'ImageFolder', this.concurrency);
  }
}

/** A regular file (following links); false for folders, dangling links and unreadable entries. */
function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}
