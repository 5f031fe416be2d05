#!/usr/bin/env node
// `vggnet train|predict|download|bench ...`: the package's command (package.json "bin").
import * as path from 'path';
import { Command } from 'commander';
import { main as trainMain } from './train';
import { main as predictMain } from './predict';
import { main as benchMain } from './bench';
import { main as exportMain } from './export';
import { main as launchMain } from './launch';
import { downloadStl10 } from '../data';
import { packageVersion } from '../train/index';
import { CliIO, EXIT, configure, parseArgs, processIO, runAsMain } from './support';

const USAGE = `Usage: vggnet <command> [options]

Commands:
  train      train a VGG network (vggnet train --help)
  predict    top-5 classes for images with a checkpoint (vggnet predict --help)
  download   fetch STL10 into --data (default ./data)
  export     a checkpoint as ONNX (vggnet export --onnx model.onnx --checkpoint best.safetensors)
  launch     run your own training script as N worker processes (vggnet launch --nproc-per-node 2 train.js)
  bench      images/s against PyTorch (vggnet bench [cpu|data|gpu|all])
`;

export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'train':
      return trainMain(rest, { ...io, command: `${io.command ?? 'vggnet'} train` });
    case 'predict':
      return predictMain(rest, { ...io, command: `${io.command ?? 'vggnet'} predict` });
    case 'bench':
      return benchMain(rest);
    case 'export':
      return exportMain(rest, io);
    case 'launch':
      return launchMain(rest, io);
    case 'download': {
      const p = new Command('download').description('Download and verify STL10 (2.6 GB) into --data.')
        .option('--data <dir>', 'destination folder (gets stl10_binary/)', './data');
      const parsed = parseArgs(configure(p, io), rest);
      if (parsed !== null) return parsed;
      try {
        const dir = await downloadStl10(p.opts().data);
        io.stdout.write(`STL10 is in ${path.resolve(dir)}\n`);
        return 0;
      } catch (e) {
        io.stderr.write(`error: ${(e as Error).message}\n`);
        return 1;
      }
    }
    case '--version':
    case '-V':
      io.stdout.write(packageVersion() + '\n');
      return 0;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      (cmd === undefined ? io.stderr : io.stdout).write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      io.stderr.write(`error: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

runAsMain(module, (argv) => main(argv));
