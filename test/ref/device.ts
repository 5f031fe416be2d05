// The device the op tests run on (VGGNET_DEVICE=cpu|cuda, default cpu) and the tolerances that go with it.
import { cudaAvailable, DeviceName } from '../../lib/backend';

export const device: DeviceName = (process.env.VGGNET_DEVICE ?? 'cpu') as DeviceName;

/** Why CUDA cannot be used here, or null when it can. */
function cudaUnavailableReason(): string | null {
  try {
    return cudaAvailable() ? null : 'this build/machine has no usable GPU';
  } catch (e) {
    return `the addon did not load: ${(e as Error).message}`;
  }
}

/** Why the suite cannot run on `device` here, or null when it can. */
export function unavailableReason(): string | null {
  if (device === 'cpu') return null;
  if (device !== 'cuda') return `unknown VGGNET_DEVICE '${device}'`;
  const why = cudaUnavailableReason();
  return why && `VGGNET_DEVICE=cuda but ${why}`;
}

/** `describe`, or `describe.skip` with `why` printed when it is not null. */
function describeUnless(why: string | null, name: string, fn: () => void): void {
  if (why) {
    // eslint-disable-next-line no-console
    console.log(`skipping "${name}": ${why}`);
    describe.skip(name, fn);
  } else {
    describe(name, fn);
  }
}

/** `describe`, or `describe.skip` with the reason printed when the device is not usable here. */
export function describeOnDevice(name: string, fn: () => void): void {
  describeUnless(unavailableReason(), name, fn);
}

/** For suites that compare CUDA with the CPU whatever VGGNET_DEVICE says: skipped, with the reason, without a GPU. */
export function describeCuda(name: string, fn: () => void): void {
  describeUnless(cudaUnavailableReason(), name, fn);
}

/**
 * Tolerance (relative to the reference's max-abs) for a check that holds at `fp32Tol` on the CPU in float32.
 * cuDNN/cuBLAS may pick algorithms with other summation orders (and TF32 unless disabled), so CUDA gets more room.
 */
export function tol(fp32Tol: number): number {
  return device === 'cuda' ? Math.max(fp32Tol * 10, 1e-4) : fp32Tol;
}
