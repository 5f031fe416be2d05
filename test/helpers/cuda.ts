// Suites that need a GPU: `describe` where CUDA is usable, else `describe.skip` with the reason printed once.
import { cudaAvailable } from '../../lib/backend';

export function describeCuda(name: string, fn: () => void): void {
  let usable = false;
  try {
    usable = cudaAvailable();
  } catch {
    usable = false;
  }
  if (!usable) console.log(`skipping "${name}": no usable GPU in this build/machine`);
  (usable ? describe : describe.skip)(name, fn);
}
