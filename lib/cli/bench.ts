#!/usr/bin/env node
// `npm run bench [-- cpu|data|gpu|gpu-layers|dist|all]`: prints tables of images/s against PyTorch where it is installed
// (dist: data-parallel processes against one process on the same cores).
// Default: cpu (and gpu when a GPU is usable). Speed is measured here, never asserted in tests.
import { cudaAvailable } from '../backend';
import { benchCpu } from '../bench/cpu';
import { benchData } from '../bench/data';
import { benchDist } from '../bench/dist';
import { benchGpu } from '../bench/gpu';
import { benchGpuLayers } from '../bench/gpu_layers';
import { EXIT, runAsMain } from './support';

export async function main(argv: string[]): Promise<number> {
  const which = argv.length ? argv : cudaAvailable() ? ['cpu', 'gpu'] : ['cpu'];
  for (const w of which.includes('all') ? ['cpu', 'data', 'gpu', 'dist'] : which) {
    if (w === 'cpu') await benchCpu();
    else if (w === 'data') await benchData();
    else if (w === 'gpu') await benchGpu();
    else if (w === 'gpu-layers') await benchGpuLayers();
    else if (w === 'dist') await benchDist();
    else {
      console.error(`bench: unknown suite '${w}' (expected cpu, data, gpu, gpu-layers, dist or all)`);
      return EXIT.usage;
    }
  }
  return EXIT.ok;
}

runAsMain(module, (argv) => main(argv));
