// The checkpoint and log folders are checked before training starts: a read-only folder, a read-only mount where
// the folder's parents are missing (reported as ENOENT by fs.mkdirSync's recursive form; the cause is EROFS), a file
// where a folder is needed, and a folder too full for one checkpoint are each a clear error naming the folder before
// the first step — they used to be found when the first checkpoint was saved, after a whole epoch. Read-only and
// full filesystems are real mounts made in a private mount namespace (unshare -rm, no root needed where user
// namespaces are allowed); without one those cases skip with the reason printed. The child is
// test/helpers/train_child.js on the compiled dist/.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { VGGNet } from '../../lib/models/vgg';
import { sgd } from '../../lib/optim/sgd';
import { Trainer } from '../../lib/train/index';
import { DataLoader, generateSampleStl10, STL10, transforms as T } from '../../lib/data';
import { makeDirs } from '../../lib/io/files';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
const child = path.join(__dirname, '..', 'helpers', 'train_child.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-ckdir-'));
const dataRoot = path.join(tmp, 'data');
generateSampleStl10(path.join(dataRoot, 'stl10_binary'), { train: 8, test: 4, unlabeled: 1 });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs the training child with `mounts` (shell) done first in a private user+mount namespace. */
function inNamespace(mounts: string, dir: string, hidden: number): { code: number | null; stdout: string; stderr: string } {
  const script = `${mounts} && exec "${process.execPath}" "${child}" train "${dataRoot}" "${dir}" ${hidden} 1`;
  const p = spawnSync('unshare', ['-rm', 'sh', '-c', script], { encoding: 'utf8', timeout: 120_000 });
  return { code: p.status, stdout: p.stdout, stderr: p.stderr };
}
const nsReason = ((): string | null => {
  if (!fs.existsSync(dist)) return `${dist} is not built (npm run build:ts)`;
  const probe = path.join(tmp, 'ns-probe');
  fs.mkdirSync(probe);
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o ro,size=64k tmpfs "${probe}"`], { encoding: 'utf8' });
  return r.status === 0 ? null : `no private mount namespace here (unshare -rm: ${(r.stderr || r.error?.message || '').trim() || `exit ${r.status}`})`;
})();
if (nsReason) console.log(`skipping the read-only and full filesystem cases: ${nsReason}`);
const nsTest = nsReason ? test.skip : test;

describe('checkpoint folder checked before training', () => {
  nsTest('a read-only mount with the folder\'s parents missing: EROFS at the folder where it happened, before any step', () => {
    const ro = path.join(tmp, 'ro');
    fs.mkdirSync(ro);
    const dir = path.join(ro, 'runs', 'a', 'ck');
    const r = inNamespace(`mount -t tmpfs -o ro,size=1m tmpfs "${ro}"`, dir, 16);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: Trainer: checkpoint folder ${dir}: cannot create the folder (EROFS at ${path.join(ro, 'runs')})\n`);
    expect(r.stdout).not.toMatch(/step/);
  });

  nsTest('a read-only folder that exists: EROFS on the probe write, before any step', () => {
    const ro = path.join(tmp, 'ro2');
    fs.mkdirSync(path.join(ro, 'ck'), { recursive: true });
    const dir = path.join(ro, 'ck');
    const r = inNamespace(`mount --bind "${ro}" "${ro}" && mount -o remount,bind,ro "${ro}"`, dir, 16);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: Trainer: checkpoint folder ${dir}: cannot write there (EROFS)\n`);
    expect(r.stdout).not.toMatch(/step/);
  });

  nsTest('a folder with less free space than one checkpoint: refused before any step, saying how much is needed', () => {
    const full = path.join(tmp, 'full');
    fs.mkdirSync(full);
    const r = inNamespace(`mount -t tmpfs -o size=256k tmpfs "${full}"`, path.join(full, 'ck'), 1024);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: Trainer: checkpoint folder .*full\/ck: not enough free space: a checkpoint needs about \d+\.\d MiB, 0\.\d MiB are free \(ENOSPC would come at the first save\)\n$/);
    expect(r.stdout).not.toMatch(/step/);
    // One that fits trains and saves.
    const ok = inNamespace(`mount -t tmpfs -o size=4m tmpfs "${full}"`, path.join(full, 'ck'), 16);
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toMatch(/saved 1/);
  });

  test('a file where the folder (or one of its parents) should be: refused before any step, naming it', async () => {
    const file = path.join(tmp, 'plain-file');
    fs.writeFileSync(file, 'x');
    const m = new VGGNet([8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'], { numClasses: 10, hiddenFeatures: 8, device: 'cpu' });
    const loader = new DataLoader(new STL10({ root: dataRoot, transform: T.compose([T.evalTransform(32)]) }), { batchSize: 8 });
    let steps = 0;
    try {
      for (const [opts, msg] of [
        [{ checkpointDir: path.join(file, 'ck') }, `Trainer: checkpoint folder ${path.join(file, 'ck')}: cannot create the folder: ${file} is a regular file, not a folder`],
        [{ checkpointDir: file }, `Trainer: checkpoint folder ${file}: cannot create the folder: ${file} is a regular file, not a folder`],
        [{ logDir: path.join(file, 'logs') }, `Trainer: log folder ${path.join(file, 'logs')}: cannot create the folder: ${file} is a regular file, not a folder`],
      ] as const) {
        const t = new Trainer(m, { optimizer: sgd({ lr: 0.01 }), output: null, onStep: () => void steps++, ...opts });
        await expect(t.fit(loader, { epochs: 1 })).rejects.toThrow(msg);
      }
      expect(steps).toBe(0);
      // A folder that can be made is made, and the probe leaves nothing behind.
      const fine = path.join(tmp, 'new', 'deep', 'ck');
      const t = new Trainer(m, { optimizer: sgd({ lr: 0.01 }), output: null, checkpointDir: fine });
      await t.fit(loader, { epochs: 1 });
      expect(fs.readdirSync(fine)).toEqual(['last.safetensors']);
    } finally {
      m.dispose();
    }
  });

  test('makeDirs creates missing parents one by one and names the one that failed', () => {
    const base = path.join(tmp, 'mk');
    makeDirs(path.join(base, 'a', 'b', 'c'));
    expect(fs.statSync(path.join(base, 'a', 'b', 'c')).isDirectory()).toBe(true);
    makeDirs(path.join(base, 'a', 'b', 'c')); // exists: fine
    fs.writeFileSync(path.join(base, 'f'), '');
    expect(() => makeDirs(path.join(base, 'f', 'g'))).toThrow(`${path.join(base, 'f', 'g')}: cannot create the folder: ${path.join(base, 'f')} is a regular file, not a folder`);
  });
});
