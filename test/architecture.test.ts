// The layering ARCHITECTURE.md describes, checked on the source: who may reach the addon, where N-API code lives, the
// op families both backends share, and no import cycles in lib/.
import * as fs from 'fs';
import * as path from 'path';

const root = path.join(__dirname, '..');
function files(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(rel, ext));
    else if (ext.test(e.name)) out.push(rel);
  }
  return out.sort();
}
const read = (f: string) => fs.readFileSync(path.join(root, f), 'utf8');
/** The relative modules a TypeScript file imports, resolved to lib/... paths without extension. */
function importsOf(f: string): string[] {
  const src = read(f);
  const out: string[] = [];
  // Type-only imports are erased at run time: they make no cycle.
  for (const m of src.replace(/^import type [^;]*;$/gm, '').matchAll(/(?:from|import|require\()\s*'(\.[^']*)'/g)) {
    let p = path.normalize(path.join(path.dirname(f), m[1]));
    if (fs.existsSync(path.join(root, p + '.ts'))) out.push(p);
    else if (fs.existsSync(path.join(root, p, 'index.ts'))) out.push(path.join(p, 'index'));
    else out.push(p);
  }
  return out;
}

test('only tensor, ops, backend, the data layer\'s native_source and dist\'s native_dist reach the addon (lib/native.ts)', () => {
  const allowed = ['lib/backend.ts', 'lib/data/native_source.ts', 'lib/dist/native_dist.ts', 'lib/ops.ts', 'lib/tensor.ts'];
  const users = files('lib', /\.ts$/).filter((f) => f !== 'lib/native.ts' && importsOf(f).includes('lib/native'));
  expect(users).toEqual(allowed);
  const loaders = files('lib', /\.ts$/).filter((f) => /require\('node-gyp-build'\)/.test(read(f)));
  expect(loaders).toEqual(['lib/native.ts']);
});

test('N-API code lives in native/bindings/ and nowhere else', () => {
  const napi = files('native', /\.(cc|h|cu|cuh)$/).filter((f) => /#include <napi\.h>|Napi::/.test(read(f)));
  expect(napi.length).toBeGreaterThan(0);
  for (const f of napi) expect(f.startsWith('native/bindings/')).toBe(true);
});

test('both backends define each op family in a file of the same stem', () => {
  const families = ['conv', 'linear', 'pool', 'batchnorm', 'activation', 'loss', 'sgd', 'tensor_ops'];
  for (const dir of ['native/cpu', 'native/cuda']) {
    for (const fam of families) {
      const f = `${dir}/${fam}.cc`;
      expect(fs.existsSync(path.join(root, f))).toBe(true);
      expect(read(f)).toMatch(/(CpuBackend|CudaBackend)::\w+\(/);
    }
  }
  // Each Backend method (ops.h) is defined once per backend.
  const methods = [...read('native/ops.h').matchAll(/virtual [\w:<>&* ]+? (\w+)\(/g)].map((m) => m[1]).filter((m) => m !== 'name');
  expect(methods.length).toBeGreaterThan(20);
  for (const [dir, cls] of [['native/cpu', 'CpuBackend'], ['native/cuda', 'CudaBackend']]) {
    const src = files(dir, /\.cc$/).map(read).join('\n');
    for (const m of methods) expect([m, (src.match(new RegExp(`\\b${cls}::${m}\\(`, 'g')) ?? []).length]).toEqual([m, 1]);
  }
});

test('lib/ has no import cycles', () => {
  const graph = new Map(files('lib', /\.ts$/).map((f) => [f.replace(/\.ts$/, ''), importsOf(f)]));
  const state = new Map<string, 'open' | 'done'>();
  const cycle: string[] = [];
  const visit = (n: string, stack: string[]): boolean => {
    if (state.get(n) === 'done') return false;
    if (state.get(n) === 'open') {
      cycle.push(...stack.slice(stack.indexOf(n)), n);
      return true;
    }
    state.set(n, 'open');
    for (const m of graph.get(n) ?? []) if (graph.has(m) && visit(m, [...stack, n])) return true;
    state.set(n, 'done');
    return false;
  };
  for (const n of graph.keys()) if (visit(n, [])) break;
  expect(cycle).toEqual([]);
});
