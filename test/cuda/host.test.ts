// The CUDA backend's host-side logic run without a GPU, with AddressSanitizer: the allocator's graph pools and
// capture begin/end/abort (native/cuda/memory.cc and graph.cc against a fake CUDA runtime, test/native/fake_cuda,
// driven by test/native/cuda_host_test.cc), and the max-pool kernels' per-element bodies (native/cuda/pool_math.h,
// test/native/pool_math_test.cc). Needs a C++ compiler; skipped with the reason printed where there is none.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..', '..');
const cxx = process.env.CXX || 'g++';
const haveCxx = spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status === 0;
if (!haveCxx) {
  // eslint-disable-next-line no-console
  console.log(`skipping the CUDA host-logic test: no C++ compiler (${cxx})`);
}

(haveCxx ? test : test.skip)('allocator pools and graph capture keep a graph\'s memory apart (fake CUDA runtime)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-cuda-host-'));
  // The sanitized suite (npm run test:asan) preloads ASan into every child; the compiler needs none, and the test
  // program links its own.
  const { LD_PRELOAD: _preload, ...env } = process.env;
  try {
    const exe = path.join(dir, 'cuda_host_test');
    const sources = ['test/native/cuda_host_test.cc', 'test/native/fake_cuda/fake_cuda.cc', 'native/cuda/memory.cc', 'native/cuda/graph.cc'];
    const build = spawnSync(cxx, [
      '-std=c++17', '-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize-recover=all',
      '-Itest/native', '-Itest/native/fake_cuda', '-Inative', ...sources, '-o', exe,
    ], { cwd: root, encoding: 'utf8', env });
    if (build.status !== 0) throw new Error(`compiling the CUDA host test failed:\n${build.stderr}`);
    const run = spawnSync(exe, [], { encoding: 'utf8', env: { ...env, ASAN_OPTIONS: 'detect_leaks=0' } });
    const out = `${run.stdout}${run.stderr}`;
    if (run.status !== 0) throw new Error(`the CUDA host test failed:\n${out}`);
    expect(run.stdout).toContain('ok (0 failed checks)');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

(haveCxx ? test : test.skip)('max-pool kernel bodies: forward, gather and tiling backward equal plain loops (int32 and int64 indices, both layouts)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-pool-math-'));
  const { LD_PRELOAD: _preload, ...env } = process.env;
  try {
    const exe = path.join(dir, 'pool_math_test');
    const build = spawnSync(cxx, [
      '-std=c++17', '-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-Inative',
      'test/native/pool_math_test.cc', '-o', exe,
    ], { cwd: root, encoding: 'utf8', env });
    if (build.status !== 0) throw new Error(`compiling the pool-math test failed:\n${build.stderr}`);
    const run = spawnSync(exe, [], { encoding: 'utf8', env: { ...env, ASAN_OPTIONS: 'detect_leaks=0' } });
    if (run.status !== 0) throw new Error(`the pool-math test failed:\n${run.stdout}${run.stderr}`);
    expect(run.stdout).toContain('ok (0 failed checks)');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
