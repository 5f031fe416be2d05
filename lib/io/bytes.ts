// Public signatures take and return Uint8Array (a Buffer is one), so the emitted declarations compile in a project
// without @types/node; inside, a zero-copy Buffer view gives the readers Buffer's methods.
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
