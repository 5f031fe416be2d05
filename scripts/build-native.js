#!/usr/bin/env node
// The package's install script, and `npm run build:native` (--force). Where npm runs it (scripts allowed):
//   - a development checkout (a .git here), --force, VGGNET_BUILD_FROM_SOURCE=1 or npm's --build-from-source:
//     build from source;
//   - CUDA's nvcc, cudnn.h and cublas_v2.h found (CUDA_HOME, CUDNN_ROOT/CUDNN_PATH, PATH, /usr/local/cuda, /usr/include),
//     or VGGNET_CUDA=1 (cuDNN elsewhere, e.g. Python's nvidia-* packages: cmake/cuda.cmake searches more): build
//     from source, with the GPU backend (the prebuilt binary is CPU-only);
//   - else a binary that loads here (prebuilds/<platform>-<arch>/ or build/Release) is used as it is, and one that
//     does not load (another glibc, another platform) is replaced by a build from source.
// Where npm does not run it (npm 11 with scripts blocked), node-gyp-build finds the prebuilt binary by itself.
// Environment: VGGNET_CUDA=0 forces a CPU-only build (and never builds just for CUDA); VGGNET_GLOO=0 leaves out
// distributed training's gloo engine; VGGNET_SANITIZE=1 builds with ASan+UBSan;
// VGGNET_BUILD_DIR overrides the build folder (default build/).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const force = process.argv.includes('--force');
const buildDir = process.env.VGGNET_BUILD_DIR || 'build';

function nvcc() {
  const dirs = [process.env.CUDA_HOME, process.env.CUDA_PATH].filter(Boolean).map((d) => path.join(d, 'bin'));
  dirs.push(...(process.env.PATH || '').split(path.delimiter).filter(Boolean), '/usr/local/cuda/bin');
  for (const d of dirs) if (fs.existsSync(path.join(d, 'nvcc'))) return path.join(d, 'nvcc');
  return null;
}

/** The first of the usual include folders holding `header` (a quick look; CMake's search is the real one). */
function cudaHeader(header, toolkit) {
  const roots = [process.env.CUDNN_ROOT, process.env.CUDNN_PATH, process.env.CUDNN_HOME, process.env.CUDA_HOME,
    process.env.CUDA_PATH, toolkit, '/usr/local/cuda', '/usr'].filter(Boolean);
  for (const r of roots) {
    for (const sub of ['include', path.join('include', 'x86_64-linux-gnu'), path.join('targets', 'x86_64-linux', 'include')]) {
      if (fs.existsSync(path.join(r, sub, header))) return path.join(r, sub, header);
    }
  }
  return null;
}

/** Why a GPU build from source is wanted (a line to print), or null: VGGNET_CUDA=1, or nvcc with cuDNN and cuBLAS. */
function gpuBuild() {
  if (process.env.VGGNET_CUDA === '0') return null;
  if (process.env.VGGNET_CUDA === '1') return 'VGGNET_CUDA=1';
  const compiler = nvcc();
  if (!compiler) return null;
  const toolkit = path.dirname(path.dirname(fs.realpathSync(compiler)));
  const cudnn = cudaHeader('cudnn.h', toolkit);
  const cublas = cudaHeader('cublas_v2.h', toolkit);
  if (cudnn && cublas) return `CUDA (${compiler}), cuDNN (${cudnn}) and cuBLAS found`;
  console.log(`vggnet: CUDA's ${compiler} is here but not ${cudnn ? 'cuBLAS (cublas_v2.h)' : 'cuDNN (cudnn.h)'}: the CPU binary will do ` +
    '(VGGNET_CUDA=1 builds from source anyway; README: GPU build)');
  return null;
}

/** The binary node-gyp-build picks, and whether it loads in a fresh process (its shared libraries found). */
function existingBinary() {
  let file;
  try {
    file = require('node-gyp-build').path(root);
  } catch {
    return null;
  }
  const probe = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], { encoding: 'utf8' });
  return { file, loads: probe.status === 0, why: (probe.stderr || '').trim().split('\n').find((l) => /Error/.test(l)) || '' };
}

const fromSource = force || fs.existsSync(path.join(root, '.git')) || process.env.VGGNET_BUILD_FROM_SOURCE === '1' ||
  process.env.npm_config_build_from_source === 'true';
const gpu = fromSource ? null : gpuBuild();
const existing = fromSource ? null : existingBinary();
if (!fromSource) {
  if (gpu) {
    console.log(`vggnet: ${gpu}: building from source for the GPU backend (VGGNET_CUDA=0 keeps the prebuilt CPU binary)`);
  } else if (existing?.loads) {
    console.log(`vggnet: using ${path.relative(root, existing.file)} (VGGNET_BUILD_FROM_SOURCE=1 builds from source instead)`);
    process.exit(0);
  } else if (existing) {
    console.log(`vggnet: ${path.relative(root, existing.file)} does not load here (${existing.why}); building from source`);
  }
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--out', buildDir, '--directory', root];
if (spawnSync('ninja', ['--version'], { stdio: 'ignore' }).status === 0) args.push('--generator', 'Ninja');
if (process.env.VGGNET_CUDA === '0') args.push('--CDVGGNET_CUDA=OFF');
if (process.env.VGGNET_GLOO === '0') args.push('--CDVGGNET_GLOO=OFF');
// Sanitized builds stay optimised (the suite runs under them in CI) and carry debug info for the reports.
if (process.env.VGGNET_SANITIZE === '1') args.push('--CDVGGNET_SANITIZE=ON');
const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require('os').availableParallelism?.() ?? 2);
const r = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: parallel },
});
if (r.status !== 0) {
  if (!force && existing?.loads) {
    // Asked for the GPU build and it failed: the prebuilt CPU binary still works; say so instead of failing the install.
    console.error(`vggnet: the build from source failed; ${path.relative(root, existing.file)} (CPU only) stays in use. ` +
      'See README.md (Building) for what the GPU build needs, then run `npm rebuild vggnet`.');
    process.exit(0);
  }
  console.error('vggnet: the native build failed. It needs cmake, a C++17 compiler and oneDNN ' +
    '(Debian/Ubuntu: apt-get install cmake ninja-build g++ libdnnl-dev); see README.md.');
  process.exit(r.status ?? 1);
}
const out = path.join(root, buildDir, 'Release', 'vggnet.node');
if (!fs.existsSync(out)) {
  // cmake-js puts the library in <build>/Release for single-config generators too; say where it went otherwise.
  console.error(`vggnet: build finished but ${out} is missing`);
  process.exit(1);
}
