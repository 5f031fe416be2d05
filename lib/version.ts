// The package's version, read from its package.json (next to dist/ or lib/), for checkpoints, exports and --version.
import * as fs from 'fs';
import * as path from 'path';

export function packageVersion(): string {
  for (const p of [path.join(__dirname, '..', 'package.json'), path.join(__dirname, '..', '..', 'package.json')]) {
    try {
      const j = JSON.parse(fs.readFileSync(p, 'utf8'));
      if (j.name === 'vggnet') return String(j.version);
    } catch {
      /* next */
    }
  }
  return 'unknown';
}
