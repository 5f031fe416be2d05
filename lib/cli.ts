#!/usr/bin/env node
// `vggnet train|predict|download ...`: the package's command (package.json "bin").
import * as path from 'path';
import { Command, CommanderError } from 'commander';
import { main as trainMain, CliIO } from './train';
import { main as predictMain } from './predict';
import { downloadStl10 } from './data';
import { packageVersion } from './train/index';

const USAGE = `Usage: vggnet <command> [options]

Commands:
  train      train a VGG network (vggnet train --help)
  predict    top-5 classes for images with a checkpoint (vggnet predict --help)
  download   fetch STL10 into --data (default ./data)
`;

export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr, handleSignals: true }): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'train':
      return trainMain(rest, io);
    case 'predict':
      return predictMain(rest, io);
    case 'download': {
      const p = new Command('download').description('Download and verify STL10 (2.6 GB) into --data.')
        .option('--data <dir>', 'destination folder (gets stl10_binary/)', './data')
        .exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
      try {
        p.parse(rest, { from: 'user' });
      } catch (e) {
        if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
        throw e;
      }
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

if (require.main === module) {
  main(process.argv.slice(2)).then((c) => (process.exitCode = c), (e) => {
    process.stderr.write(`error: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  });
}
