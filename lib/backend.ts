// Loads the native addon (node-gyp-build: prebuilds/ or build/Release) and says what it was built with.
// VGGNET_ADDON=path/to/vggnet.node loads that binary instead (npm run test:asan points it at the sanitizer build).
import * as path from 'path';

export type DeviceName = 'cpu' | 'cuda';
export type DeviceOption = DeviceName | 'auto';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Addon = any;

let loaded: Addon | undefined;
export function addon(): Addon {
  if (!loaded) {
    try {
      const explicit = process.env.VGGNET_ADDON;
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      loaded = explicit ? require(path.resolve(explicit)) : require('node-gyp-build')(path.resolve(__dirname, '..'));
    } catch (e) {
      throw new Error(
        `vggnet: the native addon is not built or failed to load (${(e as Error).message}). ` +
          'Run `npm run build:native` (needs cmake, g++ and libdnnl-dev).',
      );
    }
  }
  return loaded;
}

export interface CudaDeviceInfo {
  index: number;
  name: string;
  cc: string;
  memory?: number;
  sms?: number;
}
export interface BackendsInfo {
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
}

/** What the addon was built with and which GPUs it can use. */
export function backends(): BackendsInfo {
  const info = addon().buildInfo();
  let cuda: BackendsInfo['cuda'] = { built: false, devices: [] };
  try {
    const parsed = JSON.parse(info.cuda);
    cuda = { ...parsed, built: Boolean(parsed.built), devices: parsed.devices ?? [] };
  } catch {
    cuda = { built: Boolean(info.cudaBuilt), devices: [], error: `unreadable CUDA info: ${info.cuda}` };
  }
  return { cpu: { built: true, library: 'oneDNN' }, cuda };
}

export function cudaAvailable(): boolean {
  return addon().buildInfo().cudaDeviceCount > 0;
}

/**
 * Resolves a device option: 'auto' picks CUDA when a GPU is usable; 'cuda' where there is none is an error, never a
 * silent CPU run. The environment variable VGGNET_DEVICE is the default.
 */
export function resolveDevice(option?: DeviceOption): DeviceName {
  const want = option ?? (process.env.VGGNET_DEVICE as DeviceOption | undefined) ?? 'auto';
  if (want === 'cpu') return 'cpu';
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
  throw new Error(`unknown device '${String(want)}' (expected cpu, cuda or auto)`);
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
