// The .proto schemas under lib/io, parsed once with protobufjs. They are loaded from the package's lib/io folder
// (package.json "files" ships lib/io/*.proto), which is two levels above this module both as lib/io/proto.ts under
// ts-jest and as dist/io/proto.js when compiled.
import * as path from 'path';
import * as protobuf from 'protobufjs';

const roots = new Map<string, protobuf.Root>();

export function protoType(file: 'onnx.proto' | 'tensorboard.proto', type: string): protobuf.Type {
  let root = roots.get(file);
  if (!root) {
    const p = path.join(__dirname, '..', '..', 'lib', 'io', file);
    try {
      root = new protobuf.Root().loadSync(p, { keepCase: true }); // field names as in the .proto (snake_case)
    } catch (e) {
      throw new Error(`${p}: cannot load the protobuf schema (${(e as Error).message}); it ships in the package's lib/io folder`);
    }
    roots.set(file, root);
  }
  return root.lookupType(type);
}
