#!/usr/bin/env node
// `vggnet export --onnx model.onnx --checkpoint best.safetensors`: the checkpoint's network in eval mode as an ONNX
// model (lib/io/onnx.ts) for onnxruntime and other runtimes, with the class names and preprocessing as metadata.
import * as path from 'path';
import { Command } from 'commander';
import { modelFromCheckpoint } from '../train/index';
import { ONNX_OPSET } from '../io/onnx';
import { CliIO, EXIT, configure, intArg, parseArgs, processIO, runAsMain } from './support';

export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const p = new Command('export')
    .description('Export a training checkpoint as an ONNX model (opset 17, dynamic batch axis, eval mode).')
    .requiredOption('--onnx <file>', 'the ONNX file to write')
    .requiredOption('--checkpoint <file>', 'a vggnet checkpoint (best.safetensors, last.safetensors, ...)')
    .option('--image-size <n>', "input height and width (default: the run's --image-size, else 224)", intArg('--image-size', 32));
  const parsed = parseArgs(configure(p, io), argv);
  if (parsed !== null) return parsed;
  const o = p.opts() as { onnx: string; checkpoint: string; imageSize?: number };
  try {
    const { model, meta } = modelFromCheckpoint(o.checkpoint, { device: 'cpu', precision: 'fp32' });
    const saved = (meta.config as Record<string, unknown> | undefined)?.imageSize;
    const imageSize = o.imageSize ?? (typeof saved === 'number' ? saved : 224);
    model.eval();
    model.exportOnnx(o.onnx, { imageSize, classes: meta.classes ?? undefined, metadata: { checkpoint: path.basename(o.checkpoint), epoch: String(meta.epoch) } });
    io.stdout.write(`wrote ${o.onnx}: ${model.options.name}, input (batch, ${model.options.inChannels}, ${imageSize}, ${imageSize}), ` +
      `${model.options.numClasses} classes, opset ${ONNX_OPSET}\n`);
    return EXIT.ok;
  } catch (e) {
    io.stderr.write(`error: ${(e as Error).message}\n`);
    return EXIT.error;
  }
}

runAsMain(module, (argv) => main(argv));
