#!/usr/bin/env node
// `node dist/predict.js`: the prediction program's documented entry point. The program itself is lib/cli/predict.ts.
import { main } from './cli/predict';
import { runAsMain } from './cli/support';

runAsMain(module, (argv) => main(argv));
