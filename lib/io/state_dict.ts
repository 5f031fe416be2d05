// State-dict files by extension: .pth / .pt are PyTorch's torch.save format (lib/io/pth.ts), anything else is
// safetensors (lib/io/safetensors.ts).
import * as path from 'path';
import { readPth, writePth } from './pth';
import { readSafetensors, writeSafetensors, StateRecord } from './safetensors';
import { pathArg } from './files';

export function isTorchFile(file: string): boolean {
  return /^\.(pth|pt)$/i.test(path.extname(file));
}

/** The tensors of a .pth/.pt or .safetensors file (float tensors as float32, int64 scalars as bigint). */
export function readStateDict(file: string, device: 'cpu' | 'cuda' = 'cpu'): StateRecord {
  pathArg(file, 'readStateDict');
  return isTorchFile(file) ? readPth(file, device).tensors : readSafetensors(file, device).tensors;
}

/** Writes a state dict in the format the extension names; metadata goes only into safetensors files. */
export function writeStateDict(file: string, tensors: StateRecord, metadata: Record<string, string> = {}): void {
  pathArg(file, 'writeStateDict');
  if (!isTorchFile(file)) return writeSafetensors(file, tensors, metadata);
  if (Object.keys(metadata).length) throw new Error(`${file}: a .pth file has no place for metadata (${Object.keys(metadata).join(', ')}); use .safetensors`);
  writePth(file, tensors);
}
