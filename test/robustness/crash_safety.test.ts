// Crash safety of checkpoints: a training process killed with SIGKILL at random moments of its checkpoint writes
// (a 3.7 MB checkpoint after every one-batch epoch; the kill follows the temporary file's creation by 0-15 ms) always
// leaves a `last.safetensors` that loads and resumes; a disk that fills up (a file-size limit, and a tiny tmpfs where
// mounting works) gives a clear error and keeps the previous checkpoint byte for byte. The child is
// test/helpers/train_child.js on the compiled dist/.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { VGGNet } from '../../lib/models/vgg';
import { Tensor } from '../../lib/tensor';
import { writeSafetensors } from '../../lib/io/safetensors';
import { sgd } from '../../lib/optim/sgd';
import { STL10, DataLoader, generateSampleStl10, transforms as T } from '../../lib/data';
import { Trainer, loadCheckpoint, readCheckpointMeta } from '../../lib/train/index';
import { mulberry32 } from '../ref/random';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
const child = path.join(__dirname, '..', 'helpers', 'train_child.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-crash-'));
const dataRoot = path.join(tmp, 'data');
generateSampleStl10(path.join(dataRoot, 'stl10_binary'), { train: 8, test: 4, unlabeled: 1 });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function model(hidden: number): VGGNet {
  return new VGGNet([8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'], { numClasses: 10, hiddenFeatures: hidden, dropout: 0.5, seed: 1, device: 'cpu', precision: 'fp32' }, `crash-${hidden}`);
}
function loader(): DataLoader {
  const ds = new STL10({ root: dataRoot, split: 'train', transform: T.compose([T.evalTransform(32), T.normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)]) });
  return new DataLoader(ds, { batchSize: 8, shuffle: true, seed: 3, workers: 1 });
}

/**
 * Starts the child and SIGKILLs it during a checkpoint write: once it has written `last` twice, the checkpoint folder
 * is watched (inotify) and the kill comes a random 0-15 ms after the next temporary file appears, i.e. while the
 * write is in progress or just after its rename. Resolves with the last epoch the child reported as saved.
 */
function killDuringWrite(dir: string, hidden: number, r: () => number): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, 'train', dataRoot, dir, String(hidden), '1000000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let saved = -1;
    let err = '';
    let watcher: fs.FSWatcher | null = null;
    p.stderr.on('data', (d) => (err += d));
    p.stdout.on('data', (d: Buffer) => {
      for (const m of d.toString().matchAll(/saved (\d+)/g)) saved = Math.max(saved, Number(m[1]));
      if (saved >= 2 && !watcher) {
        watcher = fs.watch(dir, (_ev, name) => {
          if (!name || !String(name).includes('.tmp-') || !watcher) return;
          watcher.close();
          setTimeout(() => p.kill('SIGKILL'), r() * 15);
          watcher = null as unknown as fs.FSWatcher; // fire once
        });
      }
    });
    p.on('exit', (code, sig) => {
      (watcher as fs.FSWatcher | null)?.close();
      if (sig === 'SIGKILL') resolve(saved);
      else reject(new Error(`the training child exited (${code}) before it was killed: ${err}`));
    });
  });
}

if (!fs.existsSync(dist)) console.log(`skipping "crash safety": ${dist} is not built (npm run build:ts)`);
(fs.existsSync(dist) ? describe : describe.skip)('crash safety', () => {
  test('SIGKILL at random moments: last.safetensors always loads, is not older than reported, and resumes', async () => {
    const r = mulberry32(0xdead); // seeded: the kill moments are the same on every run
    const trials = 12;
    let midWrite = 0;
    for (let t = 0; t < trials; t++) {
      const dir = path.join(tmp, `kill-${t}`);
      const reported = await killDuringWrite(dir, 512, r);
      const names = fs.readdirSync(dir);
      if (names.some((n) => n.includes('.tmp-'))) midWrite++;
      const last = path.join(dir, 'last.safetensors');
      const meta = readCheckpointMeta(last);
      // The kill may land after a rename but before its "saved" line reached us: never older, at most one newer.
      expect(meta.epoch).toBeGreaterThanOrEqual(reported);
      expect(meta.epoch).toBeLessThanOrEqual(reported + 1);
      const ck = loadCheckpoint(last);
      expect(Object.keys(ck.optimizer).length).toBeGreaterThan(0);
      ck.dispose();
      // Resume in this process and train one more epoch: a new `last`, and the killed writer's temporary is swept.
      const m = model(512);
      const trainer = new Trainer(m, { optimizer: sgd({ lr: 0.01, momentum: 0.9 }), checkpointDir: dir, output: null });
      trainer.resume(last);
      const res = await trainer.fit(loader(), { epochs: meta.epoch + 1 });
      expect(res.epochs).toBe(meta.epoch + 1);
      expect(readCheckpointMeta(last).epoch).toBe(meta.epoch + 1);
      expect(fs.readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
      m.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // How many kills landed inside a write (a temporary was left) rather than just after its rename: informative.
    process.stdout.write(`crash safety: ${trials} kills, ${midWrite} of them during a checkpoint write\n`);
  });

  function runChild(shellPrefix: string, dir: string, hidden: number): { code: number | null; stderr: string; stdout: string } {
    const cmd = `${shellPrefix} exec "${process.execPath}" "${child}" train "${dataRoot}" "${dir}" ${hidden} 1`;
    const p = spawnSync('bash', ['-c', cmd], { encoding: 'utf8' });
    return { code: p.status, stderr: p.stderr, stdout: p.stdout };
  }

  test('file size limit (ulimit -f): a clear EFBIG error, the previous checkpoint intact, no temporary left', () => {
    const dir = path.join(tmp, 'fsize');
    // 2 MiB per file: the hidden-16 model's checkpoint (~60 KB) fits, the hidden-1024 one (~12 MB) does not.
    // SIGXFSZ is ignored so the write fails with EFBIG instead of killing the process.
    const limit = "ulimit -f 2048; trap '' XFSZ;";
    const first = runChild(limit, dir, 16);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const before = fs.readFileSync(path.join(dir, 'last.safetensors'));
    const second = runChild(limit, dir, 1024);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/error: .*last\.safetensors: could not write \(EFBIG\); the previous file, if any, is unchanged/);
    expect(fs.readFileSync(path.join(dir, 'last.safetensors')).equals(before)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['last.safetensors']);
    expect(readCheckpointMeta(path.join(dir, 'last.safetensors')).model.hiddenFeatures).toBe(16);
  });

  // A real full disk: a 4 MiB tmpfs (needs root and mount; skipped where the container does not allow it).
  const mnt = path.join(tmp, 'tmpfs');
  fs.mkdirSync(mnt);
  const mount = () => spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]).status === 0;
  const canMount = process.getuid?.() === 0 && mount() && spawnSync('umount', [mnt]).status === 0;
  if (!canMount) console.log('skipping the full-disk test: mounting a tmpfs needs root and a mount-capable sandbox');
  (canMount ? test : test.skip)('full disk (4 MiB tmpfs): refused before training; a write that fills it is a clear ENOSPC, the previous checkpoint intact', () => {
    expect(mount()).toBe(true);
    try {
      const dir = path.join(mnt, 'ck');
      const first = runChild('', dir, 16);
      expect(first.code).toBe(0);
      const before = fs.readFileSync(path.join(dir, 'last.safetensors'));
      // The 12 MB checkpoint cannot fit: the Trainer says so before its first step (it used to train a whole epoch).
      const second = runChild('', dir, 1024);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(/error: Trainer: checkpoint folder .*ck: not enough free space: a checkpoint needs about 1[0-9]\.\d MiB, [0-4]\.\d MiB are free/);
      expect(second.stdout).not.toMatch(/step/);
      // A write that runs out of space on the way (past the check) fails cleanly and keeps the previous file.
      const big = Tensor.from(new Float32Array(2 << 20), [2 << 20]);
      expect(() => writeSafetensors(path.join(dir, 'last.safetensors'), { big })).toThrow(/last\.safetensors: could not write \(ENOSPC\); the previous file, if any, is unchanged/);
      big.dispose();
      expect(fs.readFileSync(path.join(dir, 'last.safetensors')).equals(before)).toBe(true);
      expect(fs.readdirSync(dir)).toEqual(['last.safetensors']);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
