#!/usr/bin/env node
// Makes the prebuilt binary the npm package ships, so that `npm install vggnet` works where install scripts are
// blocked (npm 11's allowScripts policy) and nothing needs to be installed beside it:
//   prebuilds/linux-x64/node.napi.glibc.node   prebuildify's layout and name (N-API, glibc), found by node-gyp-build
//   prebuilds/linux-x64/lib*.so.*               oneDNN and the libraries it needs that a machine may lack (the OpenMP
//                                               runtime, the OpenCL ICD loader), and gloo (distributed training's CPU
//                                               engine) with its own (hiredis, ibverbs, libnl), found through the
//                                               binary's $ORIGIN rpath (CMake option VGGNET_PREBUILD)
//   prebuilds/linux-x64/licenses/               their copyright files
// CPU-only (the CUDA backend is built from source: README). Checks the result with ldd: every bundled library must
// resolve to its copy beside the binary, and nothing else may be needed but glibc and the C++ runtime.
// Why not prebuildify itself: it drives node-gyp (there is no binding.gyp: CMake is the one build description) and
// copies no shared libraries. Usage: npm run build:prebuild [-- --keep-build].
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const buildDir = 'build-prebuild';
const dest = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const BINARY = 'node.napi.glibc.node';
// Bundled: not part of a bare Linux with Node.js. Expected from the system: glibc's libraries and GCC's C++ runtime
// (Node.js itself needs them). Anything else ldd shows is an error: the prebuild would not load everywhere.
const BUNDLE = /^(libdnnl|libgomp|libOpenCL|libgloo|libhiredis|libibverbs|libnl-3|libnl-route-3)\.so(\.\d+)*$/;
const SYSTEM = /^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s)\.so(\.\d+)*$/;

function fail(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, ...opts });
  if (r.error) fail(`${cmd}: ${r.error.message}`);
  return r;
}
/** ldd's "name => path" lines as [name, path|null]. */
function ldd(file) {
  const r = run('ldd', [file]);
  if (r.status !== 0) fail(`ldd ${file} failed: ${r.stderr || r.stdout}`);
  return r.stdout.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const m = /^(\S+)(?: => (not found|\S+))?/.exec(l);
    const name = path.basename(m[1]);
    return [name, m[2] === 'not found' ? null : (m[2] ?? (m[1].startsWith('/') ? m[1] : null))];
  });
}

if (process.platform !== 'linux' || process.arch !== 'x64') fail(`prebuilds are made for linux-x64 only (this is ${process.platform}-${process.arch}); elsewhere vggnet builds from source`);

// 1. Build: CPU-only, rpath $ORIGIN.
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--out', buildDir, '--directory', root, '--CDVGGNET_CUDA=OFF', '--CDVGGNET_PREBUILD=ON'];
if (run('ninja', ['--version']).status === 0) args.push('--generator', 'Ninja');
const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require('os').availableParallelism?.() ?? 2);
const b = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: parallel } });
if (b.status !== 0) fail('the build failed (it needs cmake, g++ and libdnnl-dev)');
const built = path.join(root, buildDir, 'Release', 'vggnet.node');
if (!fs.existsSync(built)) fail(`${built} is missing after the build`);

// 2. The binary, stripped, and the libraries it needs.
fs.rmSync(dest, { recursive: true, force: true });
fs.mkdirSync(path.join(dest, 'licenses'), { recursive: true });
const binary = path.join(dest, BINARY);
fs.copyFileSync(built, binary);
if (run('strip', ['--strip-unneeded', binary]).status !== 0) console.warn('prebuild: strip failed; the binary keeps its symbols');
const bundled = [];
for (const [name, where] of ldd(built)) {
  if (SYSTEM.test(name)) continue;
  if (!BUNDLE.test(name)) fail(`the addon needs ${name} (${where ?? 'not found'}), which is neither bundled nor part of every Linux; add it to BUNDLE or drop the dependency`);
  if (!where) fail(`the addon needs ${name}, which is not installed here (apt-get install libdnnl-dev)`);
  const real = fs.realpathSync(where);
  fs.copyFileSync(real, path.join(dest, name)); // under its soname: what the dynamic loader looks for
  fs.chmodSync(path.join(dest, name), 0o644);
  bundled.push(name);
  // Their licences travel with them (Debian's copyright file of the package that owns the library).
  // (usrmerge: dpkg may know the file under /lib rather than /usr/lib)
  const owner = (f) => (run('dpkg', ['-S', f]).stdout || '').split(':')[0] || null;
  const pkg = owner(real) ?? (real.startsWith('/usr/') ? owner(real.slice(4)) : null);
  const copyright = pkg ? `/usr/share/doc/${pkg}/copyright` : null;
  if (copyright && fs.existsSync(copyright)) fs.copyFileSync(copyright, path.join(dest, 'licenses', `${name}.copyright`));
  else console.warn(`prebuild: no copyright file found for ${name} (${real}); add its licence to ${path.join(dest, 'licenses')} by hand`);
}
if (!bundled.some((n) => n.startsWith('libdnnl'))) fail('the addon does not link libdnnl: nothing to bundle?');

// 3. Check: every bundled library resolves beside the binary (its own dependencies too), nothing is missing.
for (const [name, where] of ldd(binary)) {
  if (SYSTEM.test(name)) continue;
  if (!where) fail(`${name} is not found by ${binary}`);
  if (path.dirname(where) !== dest) fail(`${name} resolves to ${where}, not to the copy beside the binary: is the rpath $ORIGIN (VGGNET_PREBUILD)?`);
}
const size = fs.readdirSync(dest).filter((f) => f !== 'licenses').reduce((a, f) => a + fs.statSync(path.join(dest, f)).size, 0);
// What the target machine must have: the newest glibc and libstdc++ symbol versions any shipped file asks for.
function newest(prefix) {
  const versions = new Set();
  for (const f of [BINARY, ...bundled]) {
    const r = run('objdump', ['-T', path.join(dest, f)]);
    for (const m of (r.stdout || '').matchAll(new RegExp(`\\b${prefix}_([0-9.]+)\\b`, 'g'))) versions.add(m[1]);
  }
  const cmp = (a, b) => { const x = a.split('.').map(Number), y = b.split('.').map(Number); for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0); return 0; };
  return [...versions].sort(cmp).pop() ?? null;
}
const info = {
  binary: BINARY, bundled, built: new Date().toISOString(), node: process.version,
  needs: { glibc: newest('GLIBC'), libstdcxx: newest('GLIBCXX') },
};
fs.writeFileSync(path.join(dest, 'prebuild.json'), JSON.stringify(info, null, 2) + '\n');
console.log(`prebuild: ${path.relative(root, dest)}: ${BINARY} + ${bundled.join(', ')} (${(size / 1048576).toFixed(1)} MiB before compression); ` +
  `needs glibc ${info.needs.glibc} and libstdc++ ${info.needs.libstdcxx}`);
if (!process.argv.includes('--keep-build')) fs.rmSync(path.join(root, buildDir), { recursive: true, force: true });
