// ONNX export of a VGGNet's eval-mode graph, encoded by protobufjs with the schema in onnx.proto: opset 17, input
// `input` (batch, C, H, W) with a symbolic batch axis, output `logits` (batch, classes); Conv, BatchNormalization
// (inference form, running statistics), Relu, MaxPool, the adaptive 7×7 average pool, Flatten and Gemm; dropout is
// the identity in eval mode and is left out. Initializers keep torchvision's parameter names. The class names and the
// input preprocessing go into metadata_props.
//
// ONNX has no adaptive average pool. For a fixed input size the pool is linear: out = P_h · X · P_wᵀ, with P_h (7×H)
// and P_w (7×W) averaging PyTorch's windows [⌊i·H/7⌋, ⌈(i+1)·H/7⌉). It is exported as two MatMuls with those
// matrices (nothing at all when the map is already 7×7, as at 224×224), so the height and width are fixed at export.
import type { VGGNet } from '../models/vgg';
import { BatchNorm2d, Conv2d, Dropout, Linear, MaxPool2d, ReLU } from '../nn/layers';
import type { Module } from '../nn/module';
import { Tensor } from '../tensor';
import { IMAGENET_MEAN, IMAGENET_STD } from '../data/transforms';
import { packageVersion } from '../version';
import { writeFileAtomic } from './safetensors';
import { protoType } from './proto';

export const ONNX_OPSET = 17;
/** IR version 8 is the one that opset 17 came with. */
export const ONNX_IR_VERSION = 8;
const FLOAT = 1;
const ATTR = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;

export interface OnnxExportOptions {
  /** Input height and width (default 224; the adaptive pool is fixed for it). */
  imageSize?: number | [number, number];
  /** Class names, written as metadata `classes` (a JSON array). */
  classes?: string[];
  /** Per-channel mean and std the input is expected to be normalised with (metadata; default ImageNet's). */
  mean?: number[];
  /** See `mean`. */
  std?: number[];
  /** More metadata_props entries. */
  metadata?: Record<string, string>;
}

interface Node {
  op_type: string;
  name: string;
  input: string[];
  output: string[];
  attribute: Record<string, unknown>[];
}

const ints = (name: string, v: number[]) => ({ name, type: ATTR.INTS, ints: v });
const int = (name: string, v: number) => ({ name, type: ATTR.INT, i: v });
const float = (name: string, v: number) => ({ name, type: ATTR.FLOAT, f: v });

/** The ONNX ModelProto (as bytes) of the model's eval-mode forward pass. */
export function onnxModelBytes(model: VGGNet, options: OnnxExportOptions = {}): Uint8Array {
  const [H, W] = Array.isArray(options.imageSize) ? options.imageSize : [options.imageSize ?? 224, options.imageSize ?? 224];
  if (!Number.isInteger(H) || !Number.isInteger(W) || H < 32 || W < 32) throw new Error(`exportOnnx: imageSize must be integers >= 32 (VGG's five pools), got ${H}×${W}`);
  const C = model.options.inChannels;
  const nodes: Node[] = [];
  const initializers: Record<string, unknown>[] = [];
  const floats = (name: string, dims: number[], data: Float32Array) => {
    initializers.push({ name, dims, data_type: FLOAT, raw_data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    return name;
  };
  const param = (name: string, t: Tensor) => floats(name, t.shape, t.toFloat32());
  let cur = 'input';
  // Each node's output is named after its layer (features.3), the initializers after the parameters (features.3.weight).
  const node = (op: string, name: string, inputs: string[], attribute: Record<string, unknown>[] = []) => {
    nodes.push({ op_type: op, name, input: [cur, ...inputs], output: [name], attribute });
    cur = name;
  };

  // features: conv / batch norm / relu / max pool, tracking the map size for the pool.
  let h = H, w = W;
  const walk = (prefix: string, layers: Module[]) => {
    layers.forEach((m, i) => {
      const name = `${prefix}.${i}`;
      if (m instanceof Conv2d) {
        const p = m.params;
        const ins = [param(`${name}.weight`, m.weight.value)];
        if (m.bias) ins.push(param(`${name}.bias`, m.bias.value));
        node('Conv', name, ins, [ints('kernel_shape', [m.kernelSize, m.kernelSize]), ints('pads', [p.padH, p.padW, p.padH, p.padW]), ints('strides', [p.strideH, p.strideW])]);
        h = Math.floor((h + 2 * p.padH - m.kernelSize) / p.strideH) + 1;
        w = Math.floor((w + 2 * p.padW - m.kernelSize) / p.strideW) + 1;
      } else if (m instanceof BatchNorm2d) {
        node('BatchNormalization', name, [
          param(`${name}.weight`, m.weight.value), param(`${name}.bias`, m.bias.value),
          param(`${name}.running_mean`, m.runningMean), param(`${name}.running_var`, m.runningVar),
        ], [float('epsilon', m.eps)]);
      } else if (m instanceof ReLU) {
        node('Relu', name, []);
      } else if (m instanceof MaxPool2d) {
        const { kernel, stride, pad } = m.params;
        node('MaxPool', name, [], [ints('kernel_shape', [kernel, kernel]), ints('strides', [stride, stride]), ints('pads', [pad, pad, pad, pad])]);
        h = Math.floor((h + 2 * pad - kernel) / stride) + 1;
        w = Math.floor((w + 2 * pad - kernel) / stride) + 1;
      } else if (m instanceof Linear) {
        const ins = [param(`${name}.weight`, m.weight.value)];
        if (m.bias) ins.push(param(`${name}.bias`, m.bias.value));
        node('Gemm', name, ins, [int('transB', 1)]);
      } else if (!(m instanceof Dropout)) {
        throw new Error(`exportOnnx: ${name} is a ${m.constructor.name}, which the exporter does not know`);
      }
    });
  };
  walk('features', model.features.layers);

  const [oh, ow] = model.avgpool.outputSize;
  if (h !== oh || w !== ow) {
    // out = P_h · X · P_wᵀ: X (N, C, h, w) · P_wᵀ (w, ow) -> (N, C, h, ow); P_h (oh, h) · that -> (N, C, oh, ow).
    const pool = (n: number, o: number): Float32Array => {
      const p = new Float32Array(o * n);
      for (let i = 0; i < o; i++) {
        const a = Math.floor((i * n) / o), b = Math.ceil(((i + 1) * n) / o);
        for (let j = a; j < b; j++) p[i * n + j] = 1 / (b - a);
      }
      return p;
    };
    const pw = pool(w, ow);
    const pwT = new Float32Array(w * ow);
    for (let i = 0; i < ow; i++) for (let j = 0; j < w; j++) pwT[j * ow + i] = pw[i * w + j];
    node('MatMul', 'avgpool.cols', [floats('avgpool.cols.matrix', [w, ow], pwT)]);
    const rows = floats('avgpool.rows.matrix', [oh, h], pool(h, oh));
    nodes.push({ op_type: 'MatMul', name: 'avgpool', input: [rows, cur], output: ['avgpool'], attribute: [] });
    cur = 'avgpool';
  }
  node('Flatten', 'flatten', [], [int('axis', 1)]);
  walk('classifier', model.classifier.layers);
  nodes[nodes.length - 1].output = ['logits'];

  const tensorType = (dims: (number | string)[]) => ({
    tensor_type: { elem_type: FLOAT, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) } },
  });
  const metadata: Record<string, string> = {
    architecture: model.options.name ?? 'vgg',
    input: `float32 (batch, ${C}, ${H}, ${W}), RGB scaled to [0, 1] then normalised per channel with mean and std`,
    mean: JSON.stringify(options.mean ?? IMAGENET_MEAN),
    std: JSON.stringify(options.std ?? IMAGENET_STD),
    ...(options.classes ? { classes: JSON.stringify(options.classes) } : {}),
    ...options.metadata,
  };
  const Model = protoType('onnx.proto', 'onnx.ModelProto');
  const msg = Model.fromObject({
    ir_version: ONNX_IR_VERSION,
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    producer_name: 'vggnet',
    producer_version: packageVersion(),
    doc_string: `${metadata.architecture} in eval mode (batch norm with running statistics, no dropout), exported by vggnet`,
    graph: {
      name: metadata.architecture,
      node: nodes,
      initializer: initializers,
      input: [{ name: 'input', type: tensorType(['batch', C, H, W]) }],
      output: [{ name: 'logits', type: tensorType(['batch', model.options.numClasses]) }],
    },
    metadata_props: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  });
  return Model.encode(msg).finish();
}

/** Writes the model's eval-mode graph as an ONNX file (atomically). */
export function exportOnnx(model: VGGNet, file: string, options: OnnxExportOptions = {}): void {
  const bytes = onnxModelBytes(model, options);
  writeFileAtomic(file, [Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)]);
}
