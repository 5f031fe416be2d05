// A Python with PyTorch for reference checks (Debian's python3-torch where installed; CI has none): `testWithTorch`
// is `test` there and `test.skip` elsewhere, with the reason printed.
import { spawnSync } from 'child_process';
import { pythonWith } from '../../lib/bench/python';

export const torchPython: string | undefined = pythonWith('torch');

export function testWithTorch(name: string, fn: (py: string) => void | Promise<void>, timeout?: number): void {
  if (!torchPython) {
    // eslint-disable-next-line no-console
    console.log(`skipping "${name}": no Python with torch here (python3-torch not installed)`);
    test.skip(name, () => undefined);
    return;
  }
  test(name, async () => {
    await fn(torchPython!);
  }, timeout);
}

/** Runs a Python script with arguments; throws with its stderr when it fails; returns stdout. */
export function runPython(py: string, script: string, args: string[] = []): string {
  const r = spawnSync(py, ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}
