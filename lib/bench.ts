#!/usr/bin/env node
// `npm run bench [-- cpu|data|gpu|all]`: prints tables of images/s against PyTorch where it is installed.
// Default: cpu (and gpu when a GPU is usable). Speed is measured here, never asserted in tests.
import { cudaAvailable } from './backend';
import { benchCpu } from './bench/cpu';
import { benchData } from './bench/data';
import { benchGpu } from './bench/gpu';

export async function main(argv: string[]): Promise<void> {
  const which = argv.length ? argv : cudaAvailable() ? ['cpu', 'gpu'] : ['cpu'];
  for (const w of which.includes('all') ? ['cpu', 'data', 'gpu'] : which) {
    if (w === 'cpu') await benchCpu();
    else if (w === 'data') await benchData();
    else if (w === 'gpu') await benchGpu();
    else throw new Error(`bench: unknown suite '${w}' (expected cpu, data, gpu or all)`);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(`bench: ${(e as Error).message}`);
    process.exit(1);
  });
}
