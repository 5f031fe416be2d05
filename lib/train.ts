#!/usr/bin/env node
// `node dist/train.js`: the training program's documented entry point. The program itself is lib/cli/train.ts.
import { main } from './cli/train';
import { runAsMain } from './cli/support';

runAsMain(module, (argv) => main(argv));
