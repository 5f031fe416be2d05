#!/usr/bin/env node
// `npm run example -- NAME [ARGS...]`: compiles examples/*.ts with this checkout's TypeScript into build-examples/
// and runs examples/NAME.ts there, with 'vggnet' resolving to this checkout (a node_modules link beside the output).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const [name, ...args] = process.argv.slice(2);
const names = fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.ts') && f !== 'settings.ts').map((f) => f.slice(0, -3));
if (!name || !names.includes(name)) {
  console.error(`usage: npm run example -- ${names.join('|')} [args...]`);
  process.exit(2);
}
const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'examples')], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
const out = path.join(root, 'build-examples');
const link = path.join(out, 'node_modules', 'vggnet');
fs.mkdirSync(path.dirname(link), { recursive: true });
if (!fs.existsSync(link)) fs.symlinkSync(root, link, 'dir');
const r = spawnSync(process.execPath, [path.join(out, 'examples', `${name}.js`), ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
