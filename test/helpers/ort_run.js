// Runs an ONNX model with onnxruntime-node in its own process (under jest, onnxruntime's output typed arrays come
// from another realm and fail its own instanceof checks). Usage: node ort_run.js model.onnx input.f32 N,C,H,W
// Prints {"dims": [...], "data": [...]} for the output `logits`.
const fs = require('fs');
const ort = require('onnxruntime-node');

(async () => {
  const [model, input, shape] = process.argv.slice(2);
  const dims = shape.split(',').map(Number);
  const b = fs.readFileSync(input);
  const x = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const session = await ort.InferenceSession.create(model);
  const out = await session.run({ input: new ort.Tensor('float32', x, dims) });
  process.stdout.write(JSON.stringify({ dims: out.logits.dims, data: Array.from(out.logits.data), inputs: session.inputNames, outputs: session.outputNames }));
})().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
