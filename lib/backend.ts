// Devices: what the addon was built with, which GPUs it can use, and the resolution of a device option ('auto' ->
// 'cpu' | 'cuda'), done at the public entry points (model constructors, tensor factories); everything below them
// takes a resolved DeviceName.
import { addon, addonOrigin, AddonOrigin } from './native';

export type { AddonOrigin };

export type DeviceName = 'cpu' | 'cuda';
export type DeviceOption = DeviceName | 'auto';

export interface CudaDeviceInfo {
  index: number;
  name: string;
  cc: string;
  memory?: number;
  sms?: number;
}
export interface BackendsInfo {
  /** The binary in use: the package's prebuilt one (CPU only), one built from source, or $VGGNET_ADDON's. */
  addon: AddonOrigin;
  cpu: { built: true; library: 'oneDNN' };
  cuda: {
    built: boolean;
    runtime?: string;
    driver?: string;
    cudnn?: string;
    cublas?: string;
    devices: CudaDeviceInfo[];
    error?: string | null;
  };
  /** Distributed training's engines in this build (gloo: CPU tensors, and CUDA through host memory; nccl: CUDA). */
  dist: { engines: ('gloo' | 'nccl')[]; gloo?: string; nccl?: string };
}

/** Which binary is loaded, what it was built with and which GPUs it can use. */
export function backends(): BackendsInfo {
  const info = addon().buildInfo();
  let cuda: BackendsInfo['cuda'] = { built: false, devices: [] };
  try {
    const parsed = JSON.parse(info.cuda);
    cuda = { ...parsed, built: Boolean(parsed.built), devices: parsed.devices ?? [] };
  } catch {
    cuda = { built: Boolean(info.cudaBuilt), devices: [], error: `unreadable CUDA info: ${info.cuda}` };
  }
  const e = addon().distBuildInfo();
  const dist: BackendsInfo['dist'] = { engines: [] };
  if (e.gloo !== null) {
    dist.engines.push('gloo');
    dist.gloo = e.gloo;
  }
  if (e.nccl !== null) {
    dist.engines.push('nccl');
    dist.nccl = e.nccl;
  }
  return { addon: { ...addonOrigin() }, cpu: { built: true, library: 'oneDNN' }, cuda, dist };
}

let cudaDeviceCount: number | undefined;
/** Whether a usable GPU is there (asked once per process: every CUDA tensor factory resolves its device). */
export function cudaAvailable(): boolean {
  cudaDeviceCount ??= addon().buildInfo().cudaDeviceCount;
  return cudaDeviceCount > 0;
}

/**
 * Resolves a device option: 'auto' picks CUDA when a GPU is usable; 'cuda' where there is none is an error, never a
 * silent CPU run. The environment variable VGGNET_DEVICE is the default.
 */
export function resolveDevice(option?: DeviceOption): DeviceName {
  const want = option ?? (process.env.VGGNET_DEVICE as DeviceOption | undefined) ?? 'auto';
  if (want === 'cpu') return 'cpu';
  if (typeof want !== 'string') throw new TypeError(`device must be a string ('cpu', 'cuda' or 'auto'), got ${typeof want}`);
  if (want === 'cuda') {
    if (!cudaAvailable()) {
      const b = backends().cuda;
      throw new Error(
        b.built
          ? `device 'cuda' was asked for, but no usable GPU was found${b.error ? ` (${b.error})` : ''}`
          : "device 'cuda' was asked for, but this build of vggnet has no CUDA backend (built CPU-only)",
      );
    }
    return 'cuda';
  }
  if (want === 'auto') return cudaAvailable() ? 'cuda' : 'cpu';
  throw new RangeError(`unknown device '${String(want)}' (expected cpu, cuda or auto)`);
}

export interface MemoryStats {
  inUse: number;
  cached: number;
  peak: number;
}
export function memoryStats(device: DeviceName): MemoryStats {
  return addon().memoryStats(device);
}
export function resetPeakMemory(device: DeviceName): void {
  addon().resetPeakMemory(device);
}
export function emptyCache(device: DeviceName): void {
  addon().emptyCache(device);
}
/**
 * Runs fn with the changes in host tensors' memory told to V8 once, at its end, rather than as each tensor comes and
 * goes (native/bindings/js_tensor.cc: told each time, V8 ran several full collections per training step). For
 * synchronous spans that free most of what they allocate: a training step, a forward pass. Nestable.
 */
export function deferringMemoryReports<T>(fn: () => T): T {
  const a = addon();
  a.deferMemoryReports();
  try {
    return fn();
  } finally {
    a.flushMemoryReports();
  }
}
export function synchronize(device: DeviceName): void {
  addon().synchronize(device);
}

/** Threads of the CPU backend (OpenMP, shared with oneDNN). Default: the core count, or $OMP_NUM_THREADS. */
export function setNumThreads(n: number): void {
  addon().setNumThreads(n);
}
export function getNumThreads(): number {
  return addon().getNumThreads();
}

/**
 * Which Winograd convolutions the CPU backend runs. float32: F(4×4, 3×3) for 3×3 stride-1 layers with at least 64
 * input channels on maps of at least 8×8 (about a quarter of a direct convolution's multiplies, several times its
 * rounding error: still float32-sized, see ARCHITECTURE.md); native bf16 on avx512_core_bf16 CPUs: vggnet's F(2×2,
 * 3×3) on layers of at least 256 channels on maps of 7² to 56² (2.25× fewer multiplies, about one more bf16 rounding).
 * 'auto' (the default): oneDNN's F(4×4) on AVX-512 CPUs, vggnet's own on AVX2 ones, and vggnet's bf16 one by its rule;
 * 'off': the direct kernels everywhere; 'avx2': vggnet's own F(4×4) wherever the CPU has AVX2, AVX-512 included, and
 * its bf16 one on every native bf16 layer it can take (3×3, stride 1, padding 1, channels multiples of 16), whatever
 * the size (for tests and comparisons). The starting value comes from VGGNET_CPU_WINOGRAD ('0': off, 'avx2').
 */
export type CpuWinogradMode = 'auto' | 'off' | 'avx2';
export function setCpuWinograd(mode: CpuWinogradMode): void {
  addon().setCpuWinograd(mode);
}
export function cpuWinograd(): CpuWinogradMode {
  return addon().cpuWinograd();
}
