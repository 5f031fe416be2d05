// Finds a Python that has PyTorch, for side-by-side benchmarks: $VGGNET_PYTHON, then python3 on PATH, then
// /usr/bin/python3 (Debian's python3-torch lives there even when another python3 comes first on PATH).
import { spawnSync } from 'child_process';

export function pythonWith(module: string): string | undefined {
  const candidates = [process.env.VGGNET_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => !!c);
  for (const py of candidates) {
    const r = spawnSync(py, ['-c', `import ${module}`], { stdio: 'ignore' });
    if (r.status === 0) return py;
  }
  return undefined;
}
