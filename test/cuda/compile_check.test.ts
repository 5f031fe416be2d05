// scripts/compile-cuda.sh compiles every CUDA translation unit without a GPU, cuDNN, cuBLAS or NCCL, against the
// compile-check headers (test/native/compile_check/include). Here: it finds every unit (by glob and by content),
// the host units of this tree compile, and the headers reject what NVIDIA's would (a wrong argument count, a
// misspelt CUDNN_* name, a cublasComputeType_t passed as a cudaDataType) — shown on probes in a copy of the tree.
// The kernels (.cu, ~8 s each with nvcc) are left to the full run in .ci/run; this file compiles the host units only.
// Where NVIDIA's real headers are at hand (VGGNET_REAL_CUDA_INCLUDE, or found beside the toolkit / in /usr/include /
// in Python's nvidia-* packages, as on a GPU machine), the declared signatures, enum values and struct layouts are
// compared with them. Needs nvcc (the CUDA toolkit) and a C++ compiler; skipped with the reason printed otherwise.
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { fingerprintSource, parseHeader, undeclaredNames } from '../helpers/api_fingerprint';

const root = path.join(__dirname, '..', '..');
const checkInc = path.join(root, 'test/native/compile_check/include');
const cxx = process.env.CXX || 'g++';

function findNvcc(): string | null {
  const candidates = [process.env.NVCC, spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).stdout.trim(),
    '/usr/local/cuda/bin/nvcc'];
  return candidates.find((c) => c && fs.existsSync(c)) ?? null;
}
const nvcc = findNvcc();
const haveCxx = spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status === 0;
const cudaInc = [process.env.CUDA_HOME && path.join(process.env.CUDA_HOME, 'include'),
  nvcc && path.join(path.dirname(path.dirname(fs.realpathSync(nvcc))), 'include'), '/usr/local/cuda/include']
  .find((d): d is string => !!d && fs.existsSync(path.join(d, 'cuda_runtime.h')));
const ready = !!nvcc && haveCxx && !!cudaInc;
if (!ready) {
  // eslint-disable-next-line no-console
  console.log(`skipping the CUDA compile-check tests: ${!nvcc ? 'no nvcc' : !haveCxx ? `no C++ compiler (${cxx})` : 'no cuda_runtime.h next to nvcc'}`);
}
const maybe = ready ? test : test.skip;

// The sanitized suite preloads ASan into every child; compilers need none.
const { LD_PRELOAD: _preload, ...baseEnv } = process.env;

function compileCuda(tree: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync('bash', [path.join(tree, 'scripts/compile-cuda.sh'), ...args],
    { cwd: tree, encoding: 'utf8', env: { ...baseEnv, ...env }, timeout: 300_000 });
}
const output = (r: SpawnSyncReturns<string>) => `${r.stdout}${r.stderr}`;

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

/** What the script must find, worked out independently: .cu anywhere under native/, .cc under native/cuda/, and
 *  any other native .cc with a preprocessor conditional on VGG_WITH_CUDA or VGG_WITH_NCCL (native/dist's engine). */
function expectedUnits(tree: string): string[] {
  const rel = (p: string) => path.relative(tree, p).split(path.sep).join('/');
  return walk(path.join(tree, 'native')).map(rel).filter((f) => f.endsWith('.cu') ||
    (f.endsWith('.cc') && (f.startsWith('native/cuda/') ||
      /^\s*#\s*(if|ifdef|ifndef|elif)\b.*VGG_WITH_(CUDA|NCCL)/m.test(fs.readFileSync(path.join(tree, f), 'utf8')))))
    .sort();
}

/** A copy of what the script needs (native/, scripts/, the compile-check headers; node_modules linked). */
function copyTree(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-compile-cuda-'));
  for (const d of ['native', 'scripts', 'test/native/compile_check']) {
    fs.cpSync(path.join(root, d), path.join(dir, d), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

describe('compile-check of the CUDA code (scripts/compile-cuda.sh)', () => {
  maybe('finds every CUDA translation unit, by glob and by content', () => {
    const r = compileCuda(root, ['--list']);
    expect(r.status).toBe(0);
    const listed = r.stdout.trim().split('\n');
    expect(listed).toEqual(expectedUnits(root));
    expect(listed).toContain('native/cuda/conv.cc');  // cuDNN: the kind of file this check exists for
    expect(listed).toContain('native/cuda/linear.cc');  // cuBLAS
    expect(listed.filter((f) => f.endsWith('.cu')).length).toBeGreaterThan(0);
  });

  maybe('every host unit of this tree compiles against the compile-check headers', () => {
    const r = compileCuda(root, ['--host']);
    const out = output(r);
    if (r.status !== 0) throw new Error(`compile-cuda.sh --host failed:\n${out}`);
    const host = expectedUnits(root).filter((f) => !f.endsWith('.cu'));
    for (const f of host) expect(out).toContain(`ok   ${f}\n`);
    expect(out).not.toContain('FAIL');
    expect(out).toMatch(new RegExp(`compile-cuda: ${host.length} of ${host.length} compiled`));
  }, 180_000);

  maybe('rejects wrong calls and misspelt names, picks up new files and compiles VGG_WITH_CUDA sections', () => {
    const tree = copyTree();
    try {
      const probe = 'native/cuda/zz_probe.cc';
      const binding = 'native/zz_probe_binding.cc';
      const write = (f: string, body: string) => fs.writeFileSync(path.join(tree, f), body);
      const good = `#include <cublas_v2.h>
#include <cudnn.h>
#include <nccl.h>
int probe(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t c,
          cublasHandle_t b, ncclComm_t comm, cudaStream_t s, void* p) {
  float one = 1, zero = 0;
  int bad = cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 2, 3, 4) != CUDNN_STATUS_SUCCESS;
  bad += cudnnConvolutionForward(h, &one, x, p, w, p, c, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, p, 0, &zero, x, p) != 0;
  bad += cublasGemmEx(b, CUBLAS_OP_N, CUBLAS_OP_T, 1, 1, 1, &one, p, CUDA_R_32F, 1, p, CUDA_R_32F, 1, &zero, p,
                      CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS;
  bad += ncclAllReduce(p, p, 1, ncclBfloat16, ncclAvg, comm, s) != ncclSuccess;
  return bad;
}
`;
      write(probe, good);
      write(binding, `#include "cuda/cuda_hooks.h"\nint host_only() { return 0; }\n#ifdef VGG_WITH_CUDA\n#include <cudnn.h>\nsize_t probe_version() { return cudnnGetVersion(); }\n#endif\n`);

      // New files are found without being listed anywhere.
      const listed = compileCuda(tree, ['--list']).stdout.trim().split('\n');
      expect(listed).toEqual(expect.arrayContaining([probe, binding]));

      // The control: correct calls compile.
      let r = compileCuda(tree, [probe, binding]);
      if (r.status !== 0) throw new Error(`the correct probes failed:\n${output(r)}`);
      expect(r.stdout).toContain(`ok   ${probe}\n`);
      expect(r.stdout).toContain(`ok   ${binding}\n`);

      const mutants: [string, string, RegExp][] = [
        ['cudnnConvolutionForward with an argument missing',
          good.replace('&zero, x, p)', '&zero, p)'), /too few arguments to function .*cudnnConvolutionForward/],
        ['a misspelt CUDNN_ enumerator', good.replace('CUDNN_TENSOR_NCHW', 'CUDNN_TENSOR_NCWH'),
          /CUDNN_TENSOR_NCWH.* was not declared/],
        ['a cublasComputeType_t where cublasGemmEx takes a cudaDataType',
          good.replace('&one, p, CUDA_R_32F,', '&one, p, CUBLAS_COMPUTE_32F,'), /no matching function for call to .*cublasGemmEx/],
        ['an NCCL call with the stream and communicator swapped', good.replace('ncclAvg, comm, s)', 'ncclAvg, s, comm)'),
          /cannot convert .*(cudaStream_t|CUstream_st).* to .*ncclComm/],
      ];
      for (const [what, body, message] of mutants) {
        write(probe, body);
        r = compileCuda(tree, [probe]);
        expect({ what, status: r.status }).toEqual({ what, status: 1 });
        expect(r.stdout).toContain(`FAIL ${probe}\n`);
        expect(r.stdout).toMatch(message);
      }
      write(probe, good);

      // The bindings' CUDA sections are compiled with VGG_WITH_CUDA=1 against the same headers.
      write(binding, `int host_only() { return 0; }\n#if VGG_WITH_CUDA\n#include <cudnn.h>\nsize_t probe_version() { return cudnnGetVersion(1); }\n#endif\n`);
      r = compileCuda(tree, [binding]);
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(/too many arguments to function .*cudnnGetVersion/);

      // An edit to the real backend is caught too.
      const backend = path.join(tree, 'native/cuda/linear.cc');
      fs.writeFileSync(backend, fs.readFileSync(backend, 'utf8').replace(/CUBLAS_COMPUTE_32F_FAST_TF32/g, 'CUBLAS_COMPUTE_TF32'));
      r = compileCuda(tree, ['--host']);
      expect(r.status).toBe(1);
      expect(r.stdout).toContain('FAIL native/cuda/linear.cc\n');
      expect(r.stdout).toMatch(/CUBLAS_COMPUTE_TF32.* was not declared/);
    } finally {
      fs.rmSync(tree, { recursive: true, force: true });
    }
  }, 180_000);

  maybe('a cuDNN, cuBLAS or NCCL header beside the toolkit\'s is never picked up instead of the compile-check one', () => {
    // A toolkit folder like a GPU machine's: every CUDA header, plus library headers that must not be used.
    const fake = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-fake-cuda-'));
    try {
      const inc = path.join(fake, 'include');
      fs.mkdirSync(inc);
      for (const e of fs.readdirSync(cudaInc!)) fs.symlinkSync(path.join(cudaInc!, e), path.join(inc, e));
      for (const h of ['cudnn.h', 'cudnn_version.h', 'cublas_v2.h', 'cublas_api.h', 'nccl.h']) {
        fs.rmSync(path.join(inc, h), { force: true });
        fs.writeFileSync(path.join(inc, h), `#error "the toolkit folder's ${h} was used"\n`);
      }
      // Control: that folder's headers do break a compile that finds them.
      const control = spawnSync(cxx, ['-fsyntax-only', '-x', 'c++', '-', `-I${inc}`],
        { input: '#include <cudnn.h>\n', encoding: 'utf8', env: baseEnv });
      expect(control.status).not.toBe(0);
      expect(control.stderr).toContain("the toolkit folder's cudnn.h was used");

      const r = compileCuda(root, ['--host'], { CUDA_HOME: fake });
      if (r.status !== 0) throw new Error(`compile-cuda.sh with CUDA_HOME=${fake} failed:\n${output(r)}`);
      expect(output(r)).not.toContain('was used');
    } finally {
      fs.rmSync(fake, { recursive: true, force: true });
    }
  }, 180_000);
});

// ---------------------------------------------------------------- against NVIDIA's own headers, where present
function realIncludeDirs(): string[] {
  const dirs = (process.env.VGGNET_REAL_CUDA_INCLUDE ?? '').split(path.delimiter).filter(Boolean);
  if (cudaInc) dirs.push(cudaInc);
  dirs.push('/usr/include', '/usr/include/x86_64-linux-gnu', '/usr/include/aarch64-linux-gnu');
  const py = spawnSync('python3', ['-c', "import sys, os, glob; print('\\n'.join(sorted({d for p in sys.path if p for d in glob.glob(os.path.join(p, 'nvidia', '*', 'include'))})))"],
    { encoding: 'utf8' });
  if (py.status === 0) dirs.push(...py.stdout.split('\n').filter(Boolean));
  return dirs.filter((d) => fs.existsSync(d) && path.resolve(d) !== path.resolve(checkInc));
}
// bound: against a release that differs from the pinned one at this level, differences are printed, not failed.
// NCCL's config struct and sentinels (ncclNumTypes, ...) change between minor releases; cuDNN 8 numbered its
// statuses differently, while all of 9.x keeps what is declared here; cuBLAS 11-13 keep it too (no bound).
type Bound = 'major' | 'minor' | null;
const libraries: { name: string; header: string; parse: string[]; version: [string, string]; bound: Bound }[] = [
  { name: 'cuDNN', header: 'cudnn.h', parse: ['cudnn.h'], version: ['CUDNN_MAJOR', 'CUDNN_MINOR'], bound: 'major' },
  { name: 'cuBLAS', header: 'cublas_v2.h', parse: ['cublas_api.h'], version: ['CUBLAS_VER_MAJOR', 'CUBLAS_VER_MINOR'], bound: null },
  { name: 'NCCL', header: 'nccl.h', parse: ['nccl.h'], version: ['NCCL_MAJOR', 'NCCL_MINOR'], bound: 'minor' },
];
function sameRelease(a: string | undefined, b: string | undefined, bound: Bound): boolean {
  if (!bound) return true;
  return bound === 'major' ? a?.split('.')[0] === b?.split('.')[0] : a === b;
}
const realDirs = ready ? realIncludeDirs() : [];

function fingerprint(header: string, src: string, incs: string[], dir: string, tag: string): { map: Map<string, string>; stderr: string; ok: boolean } {
  const file = path.join(dir, `${tag}.cc`);
  const exe = path.join(dir, tag);
  fs.writeFileSync(file, src);
  const build = spawnSync(cxx, ['-std=c++17', '-w', file, ...incs.map((d) => `-I${d}`), `-I${cudaInc}`, '-o', exe],
    { encoding: 'utf8', env: baseEnv });
  if (build.status !== 0) return { map: new Map(), stderr: build.stderr, ok: false };
  const run = spawnSync(exe, [], { encoding: 'utf8', env: baseEnv });
  if (run.status !== 0) throw new Error(`${header} fingerprint (${tag}) exited ${run.status}: ${run.stderr}`);
  const map = new Map<string, string>();
  for (const line of run.stdout.trim().split('\n')) {
    const [kind, name, ...rest] = line.split(' ');
    map.set(`${kind} ${name}`, rest.join(' '));
  }
  return { map, stderr: '', ok: true };
}

describe('compile-check headers agree with NVIDIA\'s where those are installed', () => {
  for (const lib of libraries) {
    const real = realDirs.find((d) => fs.existsSync(path.join(d, lib.header)));
    if (ready && !real) {
      // eslint-disable-next-line no-console
      console.log(`skipping the ${lib.name} header comparison: no real ${lib.header} (set VGGNET_REAL_CUDA_INCLUDE)`);
    }
    (ready && real ? test : test.skip)(`${lib.name}: signatures, enum values and struct layouts (${real ?? 'absent'})`, () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-api-fp-'));
      try {
        const items = lib.parse.map((f) => parseHeader(path.join(checkInc, f))).reduce((a, b) => ({
          functions: [...a.functions, ...b.functions], enumerators: [...a.enumerators, ...b.enumerators],
          enums: [...a.enums, ...b.enums], structs: [...a.structs, ...b.structs], defines: [...a.defines, ...b.defines],
        }));
        expect(items.functions.length).toBeGreaterThan(0);
        const ours = fingerprint(lib.header, fingerprintSource(lib.header, items, new Set(), lib.version), [checkInc], dir, 'ours');
        if (!ours.ok) throw new Error(`the compile-check ${lib.header} fingerprint does not compile:\n${ours.stderr}`);
        // Names the real header lacks (an older release) are left out and reported; everything else must match.
        const skip = new Set<string>();
        let theirs = fingerprint(lib.header, fingerprintSource(lib.header, items, skip, lib.version), [real!], dir, 'real');
        for (let i = 0; !theirs.ok && i < 4; ++i) {
          const missing = undeclaredNames(theirs.stderr);
          if (missing.length === 0) break;
          missing.forEach((n) => skip.add(n));
          theirs = fingerprint(lib.header, fingerprintSource(lib.header, items, skip, lib.version), [real!], dir, 'real');
        }
        if (!theirs.ok) throw new Error(`the fingerprint against ${real}/${lib.header} does not compile:\n${theirs.stderr}`);
        if (skip.size) {
          // eslint-disable-next-line no-console
          console.log(`${lib.name}: declared here but not in ${real}/${lib.header}: ${[...skip].join(', ')}`);
        }
        const diffs: string[] = [];
        for (const [key, value] of ours.map) {
          if (key === 'version -' || !theirs.map.has(key)) continue;
          if (theirs.map.get(key) !== value) diffs.push(`${key}: compile-check ${value}, real ${theirs.map.get(key)}`);
        }
        const ourVersion = ours.map.get('version -'), realVersion = theirs.map.get('version -');
        const versions = `compile-check ${ourVersion ?? '?'}, real ${realVersion ?? '?'}`;
        if (!sameRelease(ourVersion, realVersion, lib.bound)) {
          // eslint-disable-next-line no-console
          if (diffs.length) console.log(`${lib.name} (${versions}): differences from another release:\n${diffs.join('\n')}`);
        } else {
          expect({ versions, diffs }).toEqual({ versions, diffs: [] });
        }
        expect(theirs.map.size).toBeGreaterThan(ours.map.size / 2);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }, 60_000);
  }
});
