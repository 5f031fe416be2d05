#!/usr/bin/env node
// Builds the native addon with cmake-js (CMakeLists.txt is the one build description), unless a prebuilt binary
// for this platform is already there (prebuilds/ or build/Release) and --force was not given.
// Environment: VGGNET_CUDA=0 forces a CPU-only build; VGGNET_SANITIZE=1 builds with ASan+UBSan;
// VGGNET_BUILD_DIR overrides the build folder (default build/).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const force = process.argv.includes('--force');
const buildDir = process.env.VGGNET_BUILD_DIR || 'build';

if (!force) {
  try {
    const found = require('node-gyp-build').path(root);
    console.log(`vggnet: using the prebuilt addon ${path.relative(root, found)} (npm run build:native rebuilds)`);
    process.exit(0);
  } catch {
    /* none: build it */
  }
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--out', buildDir, '--directory', root];
if (spawnSync('ninja', ['--version'], { stdio: 'ignore' }).status === 0) args.push('--generator', 'Ninja');
if (process.env.VGGNET_CUDA === '0') args.push('--CDVGGNET_CUDA=OFF');
// Sanitized builds stay optimised (the suite runs under them in CI) and carry debug info for the reports.
if (process.env.VGGNET_SANITIZE === '1') args.push('--CDVGGNET_SANITIZE=ON');
const parallel = process.env.CMAKE_BUILD_PARALLEL_LEVEL || String(require('os').availableParallelism?.() ?? 2);
const r = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: parallel },
});
if (r.status !== 0) {
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
