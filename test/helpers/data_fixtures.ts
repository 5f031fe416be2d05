// Shared fixtures of the data tests: the generated sample STL10 (cached in the temp folder) and tiny copies to break.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ensureSampleData, generateSampleStl10 } from '../../lib/data';

export function sampleRoot(): string {
  return ensureSampleData(path.join(os.tmpdir(), 'vggnet-test-data'));
}

/** A fresh tiny STL10 folder: returns the root (holding stl10_binary/). */
export function tinyStl10(counts = { train: 20, test: 10, unlabeled: 6 }): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-stl10-'));
  generateSampleStl10(path.join(root, 'stl10_binary'), counts);
  return root;
}

export const CIFAR_MINI = path.resolve(__dirname, '../../../shared/data/cifar10-mini');
