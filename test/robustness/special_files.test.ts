// Special files where a file is expected — a FIFO, a socket, a character device (a link to /dev/zero, which never
// ends, and /dev/null), a folder — given to every reader of user-named files: images (predict's ImageFiles and
// ImageFolder), safetensors, .pth, checkpoints (metadata and full load), state dicts and STL10's files. Each is a clear
// error naming the file and what it is (ImageFolder skips them with a warning instead), never a hang: a plain open()
// of a FIFO blocks until a writer comes, and sharp read a FIFO forever. Synchronous readers run in a child process
// with a time limit, so a regression fails as "hung" instead of freezing the test run. Then links and empty folders
// in ImageFolder, which follows links (with loop detection) as torchvision does.
import { spawnSync, execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { ImageFiles, ImageFolder } from '../../lib/data';
import { tinyStl10 } from '../helpers/data_fixtures';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-special-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');

type Kind = 'fifo' | 'socket' | 'dev-zero' | 'dev-null' | 'folder';
const KIND_TEXT: Record<Kind, string> = {
  fifo: 'a FIFO \\(named pipe\\)', socket: 'a socket', 'dev-zero': 'a character device', 'dev-null': 'a character device', folder: 'a folder',
};
/** Makes `p` a special file of this kind. */
function makeSpecial(p: string, kind: Kind): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  if (kind === 'fifo') execFileSync('mkfifo', [p]);
  else if (kind === 'socket') spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.exit(0))`]);
  else if (kind === 'dev-zero') fs.symlinkSync('/dev/zero', p);
  else if (kind === 'dev-null') fs.symlinkSync('/dev/null', p);
  else fs.mkdirSync(p);
}
const KINDS: Kind[] = ['fifo', 'socket', 'dev-zero', 'dev-null', 'folder'];

/** Runs `body` (JS using `lib`, the compiled package, and `p`) in a child; returns what it printed, or 'hung'. */
function inChild(body: string, p: string): string {
  const code = `const lib = require(${JSON.stringify(dist)}); const p = ${JSON.stringify(p)};
    const tryIt = (f) => { try { f(); return 'no error'; } catch (e) { return e.message; } };
    ${body}`;
  const r = spawnSync(process.execPath, ['-e', code], { timeout: 60_000, encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') return 'hung';
  if (r.status !== 0) return `exit ${r.status}: ${r.stderr}`;
  return r.stdout.trim();
}

describe.each(KINDS)('%s where a file is expected', (kind) => {
  const what = KIND_TEXT[kind];

  test('safetensors, .pth, checkpoint metadata and loads, state dicts: an error naming the file and what it is', () => {
    const dir = fs.mkdtempSync(path.join(tmp, `st-${kind}-`));
    for (const name of ['w.safetensors', 'w.pth', 'ck.safetensors']) makeSpecial(path.join(dir, name), kind);
    const out = inChild(`
      const d = require('path').dirname(p);
      const m = new lib.VGGNet([4, 'M', 4, 'M', 4, 'M', 4, 'M', 4, 'M'], { numClasses: 2, hiddenFeatures: 4, device: 'cpu' });
      console.log(JSON.stringify([
        tryIt(() => lib.readSafetensors(d + '/w.safetensors')),
        tryIt(() => lib.readStateDict(d + '/w.pth')),
        tryIt(() => m.loadStateDict(d + '/w.safetensors')),
        tryIt(() => lib.readCheckpointMeta(d + '/ck.safetensors')),
        tryIt(() => lib.loadCheckpoint(d + '/ck.safetensors')),
      ]));`, path.join(dir, 'x'));
    expect(out).not.toBe('hung');
    const msgs = JSON.parse(out) as string[];
    const names = ['w.safetensors', 'w.pth', 'w.safetensors', 'ck.safetensors', 'ck.safetensors'];
    msgs.forEach((m, i) => expect(m).toMatch(new RegExp(`${names[i].replace('.', '\\.')}: expected a regular file, got ${what}`)));
  });

  test('STL10: each of its files as a special file is an error naming it', () => {
    const root = tinyStl10({ train: 4, test: 2, unlabeled: 1 });
    const dir = path.join(root, 'stl10_binary');
    const cases: [string, RegExp][] = [
      ['train_X.bin', new RegExp(`train_X\\.bin: expected a file of N\\*27648 bytes .*got ${what}`)],
      ['train_y.bin', new RegExp(`train_y\\.bin: expected a labels file, got ${what}`)],
      ['class_names.txt', new RegExp(`class_names\\.txt: expected the class names file \\(a regular file\\), got ${what}`)],
      ['fold_indices.txt', new RegExp(`fold_indices\\.txt: expected the fold indices file \\(a regular file\\), got ${what}`)],
    ];
    try {
      for (const [name, msg] of cases) {
        const f = path.join(dir, name);
        const saved = path.join(root, `${name}.saved`);
        fs.renameSync(f, saved);
        makeSpecial(f, kind);
        const out = inChild(`console.log(JSON.stringify(tryIt(() => new lib.STL10({ root: ${JSON.stringify(root)}, split: 'train', folds: 1 }))));`, f);
        fs.rmSync(f, { recursive: true, force: true });
        fs.renameSync(saved, f);
        expect([name, out === 'hung' ? 'hung' : JSON.parse(out)]).toEqual([name, expect.stringMatching(msg)]);
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('predict\'s ImageFiles: load() rejects naming the file; ImageFolder skips it with a warning', async () => {
    const root = fs.mkdtempSync(path.join(tmp, `img-${kind}-`));
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer();
    fs.mkdirSync(path.join(root, 'cat'));
    fs.writeFileSync(path.join(root, 'cat', 'ok.png'), png);
    const special = path.join(root, 'cat', 'x.jpg');
    makeSpecial(special, kind);
    const files = new ImageFiles([path.join(root, 'cat', 'ok.png'), special]);
    const hang = new Promise<string>((r) => setTimeout(() => r('hung'), 30_000).unref());
    const result = await Promise.race([files.load().then(() => 'loaded', (e: Error) => e.message), hang]);
    expect(result).toMatch(new RegExp(`^predict: ${special.replace(/[.]/g, '\\.')}: expected an image file, got ${what}$`));
    if (kind === 'folder') return; // a folder inside a class folder is walked into, as torchvision's os.walk does
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const ds = new ImageFolder({ root });
      expect(ds.samples.map(([p]) => p)).toEqual([path.join(root, 'cat', 'ok.png')]);
      expect(ds.skipped).toEqual([special]);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(new RegExp(`skipped 1 entry named like images that are not regular files: ${special.replace(/[.]/g, '\\.')} \\(${what}\\)`)));
      await ds.load();
      expect(ds.length).toBe(1);
    } finally {
      warn.mockRestore();
    }
  });
});

describe('ImageFolder: links and empty folders', () => {
  let png: Buffer;
  beforeAll(async () => {
    png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#345678' } }).png().toBuffer();
  });
  const quiet = () => jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  afterEach(() => jest.restoreAllMocks());
  function tree(files: string[]): string {
    const root = fs.mkdtempSync(path.join(tmp, 'links-'));
    for (const f of files) {
      fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
      fs.writeFileSync(path.join(root, f), png);
    }
    return root;
  }
  const rel = (root: string, ds: ImageFolder) => ds.samples.map(([p, k]) => [path.relative(root, p), k]);

  test('a linked class folder is a class (it was dropped silently); its images are read through the link', async () => {
    const root = tree(['cat/a.png', 'elsewhere/dogs/b.png', 'elsewhere/dogs/c.png']);
    fs.mkdirSync(path.join(root, 'data'));
    for (const c of ['cat']) fs.renameSync(path.join(root, c), path.join(root, 'data', c));
    fs.symlinkSync(path.join(root, 'elsewhere', 'dogs'), path.join(root, 'data', 'dog'));
    const ds = new ImageFolder({ root: path.join(root, 'data') });
    expect(ds.classes).toEqual(['cat', 'dog']);
    expect(rel(path.join(root, 'data'), ds)).toEqual([['cat/a.png', 0], ['dog/b.png', 1], ['dog/c.png', 1]]);
    await ds.load();
    expect(ds.get(2).label).toBe(1);
  });

  test('images in sub-folders and linked sub-folders are found in torchvision\'s order (folders by path, then names)', () => {
    const root = tree(['c/z.png', 'c/sub/b.png', 'c/sub/a.png', 'c/a b/x.png', 'shared/s.png']);
    fs.symlinkSync(path.join(root, 'shared'), path.join(root, 'c', 'linked'));
    fs.renameSync(path.join(root, 'shared'), path.join(root, 'shared_'));
    fs.rmSync(path.join(root, 'c', 'linked'));
    fs.symlinkSync(path.join(root, 'shared_'), path.join(root, 'c', 'linked'));
    const ds = new ImageFolder({ root, extensions: ['.png'] });
    // os.walk order, sorted by folder path: "c" < "c/a b" < "c/linked" < "c/sub".
    expect(ds.classes).toEqual(['c', 'shared_']);
    expect(rel(root, ds).filter(([, k]) => k === 0)).toEqual([['c/z.png', 0], ['c/a b/x.png', 0], ['c/linked/s.png', 0], ['c/sub/a.png', 0], ['c/sub/b.png', 0]]);
  });

  test('a link back into its own path is a loop: reported once with a warning, not walked forever', () => {
    const warn = quiet();
    const root = tree(['cat/a.png', 'cat/deep/b.png', 'dog/c.png']);
    fs.symlinkSync(path.join(root, 'cat'), path.join(root, 'cat', 'deep', 'up'));
    fs.symlinkSync('.', path.join(root, 'dog', 'self'));
    const ds = new ImageFolder({ root });
    expect(rel(root, ds)).toEqual([['cat/a.png', 0], ['cat/deep/b.png', 0], ['dog/c.png', 1]]);
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/not following 2 link\(s\) that lead back into their own path \(a loop\): .*cat\/deep\/up, .*dog\/self/));
  });

  test('a dangling link is no class; links to files are read', () => {
    const root = tree(['cat/a.png', 'files/real.png']);
    fs.symlinkSync(path.join(root, 'gone'), path.join(root, 'ghost'));
    fs.symlinkSync(path.join(root, 'files', 'real.png'), path.join(root, 'cat', 'linked.png'));
    fs.rmSync(path.join(root, 'files'), { recursive: true });
    fs.mkdirSync(path.join(root, 'files'));
    fs.writeFileSync(path.join(root, 'files', 'real.png'), png);
    const ds = new ImageFolder({ root, extensions: ['.png'] });
    expect(ds.classes).toEqual(['cat', 'files']);
    expect(rel(root, ds)).toEqual([['cat/a.png', 0], ['cat/linked.png', 0], ['files/real.png', 1]]);
  });

  test('an empty class folder (or one without images) is an error naming it, as in torchvision', () => {
    quiet();
    const root = tree(['cat/a.png', 'dog/notes.txt']);
    fs.rmSync(path.join(root, 'dog', 'notes.txt'));
    fs.mkdirSync(path.join(root, 'bird'));
    fs.writeFileSync(path.join(root, 'dog', 'notes.txt'), 'x');
    expect(() => new ImageFolder({ root })).toThrow(new RegExp(`ImageFolder: class folders without \\.jpg/\\.jpeg/\\.png images: ${path.join(root, 'bird')}, ${path.join(root, 'dog')} \\(every class needs at least one image`));
  });
});
