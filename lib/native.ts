// The native addon's surface, typed: the one place that loads it (node-gyp-build: prebuilds/ or build/Release;
// VGGNET_ADDON=path/to/vggnet.node loads that binary instead, as `npm run test:asan` does).
//
// Who may import this module: tensor.ts (storage), ops.ts (compute, device and build queries), backend.ts (device
// resolution), the data layer's data/native_source.ts and distributed training's dist/native_dist.ts. Everything else goes through those
// (test/architecture.test.ts keeps it so). Names are the bindings' (native/bindings/*.cc).
import * as path from 'path';

export type NativeDevice = 'cpu' | 'cuda';
export type NativeDType = 'float32' | 'bfloat16' | 'int32' | 'int64' | 'uint8' | 'int8';
export type NativeLayout = 'nchw' | 'nhwc' | 'nchw8c' | 'nchw16c';

/** A NativeTensor (native/bindings/js_tensor.cc): owns a vgg::Tensor. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: NativeDType;
  readonly device: NativeDevice;
  readonly layout: NativeLayout;
  readonly disposed: boolean;
  toBuffer(): ArrayBuffer;
  dispose(): void;
}
/** A data source (STL10 files or decoded images in memory); opaque outside the addon. */
export interface NativeSource {
  readonly __nativeSource: unique symbol;
}
/** A captured CUDA graph; opaque outside the addon. */
export interface NativeGraph {
  readonly __nativeGraph: unique symbol;
}
/** A process group (native/dist/process_group.h); opaque outside the addon. */
export interface NativeGroup {
  readonly __nativeGroup: unique symbol;
}
export interface NativeGroupOptions {
  rank: number;
  world: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  engine: 'gloo' | 'nccl';
  device: NativeDevice;
  iface?: string;
}
export interface NativeGroupInfo {
  rank: number;
  world: number;
  engine: 'gloo' | 'nccl';
  engineVersion: string;
  master: string;
  localAddress: string;
  device: NativeDevice;
  capturable: boolean;
}
export interface NativeGroupStats {
  steps: number;
  timedSteps: number;
  buckets: number;
  collectives: number;
  bytes: number;
  /** Bytes DDP's classifier layers gathered (their inputs and output gradients, world × each rank's). */
  gatheredBytes: number;
  commMs: number;
  exposedMs: number;
  backwardMs: number;
}
type T = NativeTensor;
type Opt = NativeTensor | null;

export interface NativeConvParams {
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  cpuBlockedOutput?: boolean;
}
export interface NativePoolParams {
  kernel: number;
  stride: number;
  pad: number;
}
export interface NativeSgdParams {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}
/** One oneDNN implementation a CPU op ran (cpu_kernels_used in native/ops.h). */
export interface CpuKernelUse {
  op: string;
  impl: string;
  calls: number;
  ms: number;
}

export interface NativeWithSaved {
  y: T;
  saved: T[];
}
/** A transform step as the native pipeline takes it (data/transforms.ts builds these). */
export type NativeTransformOp = { type: string } & Record<string, unknown>;

export interface NativeAddon {
  // ---- tensors (bindings/js_tensor.cc)
  tensorFromBuffer(data: ArrayBufferView, shape: number[], dtype: NativeDType, device: NativeDevice, layout: NativeLayout): T;
  tensorEmpty(shape: number[], dtype: NativeDType, device: NativeDevice, layout: NativeLayout): T;
  tensorZeros(shape: number[], dtype: NativeDType, device: NativeDevice, layout: NativeLayout): T;
  tensorView(x: T, shape: number[]): T;
  tensorTo(x: T, device: NativeDevice, nonBlocking?: boolean): T;
  tensorClone(x: T): T;
  tensorCopyInto(dst: T, src: T): void;

  // ---- ops (bindings/bind_ops.cc; ops.h)
  conv2dForward(x: T, w: T, b: Opt, p: NativeConvParams, relu: boolean): T;
  conv2dBackwardData(dy: T, w: T, xShape: number[], p: NativeConvParams): T;
  conv2dBackwardWeights(x: T, dy: T, p: NativeConvParams, dw: T, db: Opt, accumulate: boolean): void;
  reluForward(x: T): T;
  reluBackward(dy: T, y: T): T;
  maxpool2dForward(x: T, p: NativePoolParams, needBackward: boolean): NativeWithSaved;
  maxpool2dBackward(dy: T, x: T, y: T, p: NativePoolParams, saved: T[]): T;
  adaptiveAvgpool2dForward(x: T, oh: number, ow: number): T;
  adaptiveAvgpool2dBackward(dy: T, xShape: number[], xLayout: NativeLayout): T;
  batchnormForward(x: T, gamma: T, beta: T, runningMean: T, runningVar: T, training: boolean, momentum: number, eps: number,
    needBackward: boolean, relu: boolean, sync?: NativeGroup | null): NativeWithSaved;
  batchnormBackward(dy: T, x: T, gamma: T, eps: number, saved: T[], dgamma: T, dbeta: T, accumulate: boolean, reluOutput: Opt,
    sync?: NativeGroup | null): T;
  linearWeights(w: T, dtype: NativeDType): T;
  linearForward(x: T, w: T, b: Opt, relu: boolean, wPrepared: boolean): T;
  linearBackwardData(dy: T, w: T, wPrepared: boolean): T;
  linearBackwardWeights(x: T, dy: T, dw: T, db: Opt, accumulate: boolean): void;
  dropoutForward(x: T, p: number, seed: bigint, offset: bigint, train: boolean): NativeWithSaved;
  dropoutBackward(dy: T, p: number, saved: T[]): T;
  crossEntropy(logits: T, labels: T): { loss: T; dlogits: T };
  sgdStep(params: T[], grads: T[], bufs: T[], p: NativeSgdParams, first: boolean, pooled?: (readonly number[] | null)[]): void;
  fill(t: T, value: number): void;
  fillRandom(t: T, kind: 'normal' | 'uniform', a: number, b: number, seed: bigint): void;
  add_(dst: T, src: T, alpha: number): void;
  cast(x: T, dtype: NativeDType): T;
  toLayout(x: T, layout: NativeLayout): T;

  // ---- devices, memory, build (bindings/bind_ops.cc)
  synchronize(device: NativeDevice): void;
  memoryStats(device: NativeDevice): { inUse: number; cached: number; peak: number };
  resetPeakMemory(device: NativeDevice): void;
  emptyCache(device: NativeDevice): void;
  deferMemoryReports(): void;
  flushMemoryReports(): void;
  /** cuda: JSON text (cuda_info_json in native/cuda/cuda_hooks.h). */
  buildInfo(): { cudaBuilt: boolean; cudaDeviceCount: number; cuda: string };
  setCudaMathMode(mode: 0 | 1 | 2): void;
  cpuIsaInfo(): { isa: string; bf16: boolean; blockedLayout: NativeLayout; bf16Layout: NativeLayout; bf16WinogradLayers: boolean };
  cpuPeakGflops(threads: number, seconds: number): { gflops: number; threads: number; vector: string };
  cpuKernelsUsed(): CpuKernelUse[];
  setNumThreads(n: number): void;
  getNumThreads(): number;
  setCpuWinograd(mode: 'auto' | 'off' | 'avx2'): void;
  cpuWinograd(): 'auto' | 'off' | 'avx2';
  // int8 inference on the CPU (ops.h)
  cpuInt8WeightMax(): number;
  cpuQuantize(x: T, scale: number, dtype: 'uint8' | 'int8'): T;
  cpuDequantizeU8(q: T, scale: number): T;
  cpuQuantizeConvWeights(w: T): { q: T; scales: T };
  cpuInt8Conv2dForward(x: T, xScale: number, q: T, scales: T, b: Opt, p: NativeConvParams, yScale: number, relu: boolean, prepared: Opt): { y: T; prepared?: T };
  cpuAbsMax(x: T): number;
  cpuAdaptivePoolFold(w: T, c: number, h: number, width: number, oh: number, ow: number): T;
  cpuDeferredFold(foldW: T, foldB: T | null, z: T, p0: number, p1: number, geometry: readonly number[], activation: NativeDType): T;
  cpuDeferredMaterialise(wOut: T | null, bOut: T | null, anchorW: T, anchorB: T | null, zW: T, zB: T | null,
    p: readonly number[], geometry: readonly number[]): void;
  tensorVersion(t: T): number;
  cpuInt8Flatten(q: T): T;
  cpuInt8LinearForward(x: T, xScale: number, q: T, scales: T, b: Opt, yScale: number, relu: boolean, prepared: Opt): { y: T; prepared?: T };

  // ---- CUDA graphs (bindings/bind_graph.cc)
  cudaGraphBegin(): void;
  cudaGraphCapturing(): boolean;
  cudaGraphAbort(): void;
  cudaGraphStepGuard(loss: T): void;
  cudaGraphEnd(): NativeGraph;
  cudaGraphSlots(g: NativeGraph): { kind: 'dropoutOffset' | 'learningRate'; value: bigint | number }[];
  cudaGraphLaunch(g: NativeGraph, values: (bigint | number)[]): void;
  cudaGraphDispose(g: NativeGraph): void;

  // ---- distributed training (bindings/bind_dist.cc)
  distInit(o: NativeGroupOptions): Promise<NativeGroup>;
  distInfo(g: NativeGroup): NativeGroupInfo;
  distReduceBucket(g: NativeGroup, grads: T[], bf16: boolean): void;
  distReduceExtras(g: NativeGroup, loss: T, lossOut: T): void;
  distFinish(g: NativeGroup): void;
  distRequestStop(g: NativeGroup, on: boolean): void;
  distStopVotes(g: NativeGroup): number;
  distSyncDevice(g: NativeGroup): void;
  distBroadcast(g: NativeGroup, tensors: T[], root: number): void;
  distAllreduceHost(g: NativeGroup, values: Float64Array): void;
  distAllGather(g: NativeGroup, srcs: T[], dsts: T[], scales: number[]): void;
  distStats(g: NativeGroup): NativeGroupStats;
  distShutdown(g: NativeGroup): void;
  distBuildInfo(): { gloo: string | null; nccl: string | null };

  // ---- data (bindings/bind_data.cc)
  dataStl10Source(parts: [string, string | null][], subset?: Int32Array | null): NativeSource;
  dataMemorySource(images: Uint8Array[], shapes: Int32Array, labels: Int32Array, hwc?: boolean): NativeSource;
  dataSourceLength(src: NativeSource): number;
  dataSourceLabels(src: NativeSource): Int32Array;
  dataGet(src: NativeSource, index: number): { image: T; label: number };
  dataGetTransformed(src: NativeSource, index: number, ops: NativeTransformOp[], seed: number, epoch: number): { image: T; label: number };
  dataTransformImage(u8: Uint8Array, shape: number[], ops: NativeTransformOp[], seed: number, epoch: number, index: number): { data: Float32Array; shape: number[] };
  dataLoadBatch(src: NativeSource, indices: Int32Array, ops: NativeTransformOp[], seed: number, epoch: number, threads: number,
    raw: boolean): Promise<{ images: T; labels: T; params?: T }>;
  dataAugmentSupport(src: NativeSource, ops: NativeTransformOp[]): string | null;
  dataAugmentBatch(images: T, params: T, ops: NativeTransformOp[], dtype: NativeDType, layout: NativeLayout): T;
}

let loaded: NativeAddon | undefined;
let origin: AddonOrigin | undefined;

/** Which binary was loaded: the package's prebuilt one (prebuilds/), one built from source, or $VGGNET_ADDON. */
export interface AddonOrigin {
  kind: 'prebuilt' | 'source' | 'VGGNET_ADDON';
  path: string;
}

function describe(o: AddonOrigin): string {
  if (o.kind === 'prebuilt') return `the prebuilt addon ${o.path} (CPU; oneDNN bundled beside it)`;
  if (o.kind === 'source') return `the addon built from source ${o.path}`;
  return `VGGNET_ADDON=${o.path}`;
}

/** The addon, loaded on first use. VGGNET_DEBUG=1 says which binary in one line on stderr. */
export function addon(): NativeAddon {
  if (!loaded) {
    const explicit = process.env.VGGNET_ADDON;
    let o: AddonOrigin | undefined;
    try {
      if (explicit) {
        o = { kind: 'VGGNET_ADDON', path: path.resolve(explicit) };
      } else {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const file: string = require('node-gyp-build').path(path.resolve(__dirname, '..'));
        o = { kind: file.split(path.sep).includes('prebuilds') ? 'prebuilt' : 'source', path: file };
      }
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      loaded = require(o.path) as NativeAddon;
    } catch (e) {
      const why = (e as Error).message.trim();
      throw new Error(o?.kind === 'prebuilt'
        ? `vggnet: ${describe(o)} does not load here (${why}). Build from source instead: VGGNET_BUILD_FROM_SOURCE=1 npm rebuild vggnet, ` +
          'with its install script allowed (npm approve-scripts vggnet); it needs cmake, g++ and libdnnl-dev.'
        : `vggnet: the native addon is not built or failed to load (${why}). ` +
          'Run `npm run build:native` (needs cmake, g++ and libdnnl-dev).');
    }
    origin = o;
    if (process.env.VGGNET_DEBUG) process.stderr.write(`vggnet: loaded ${describe(o)}\n`);
  }
  return loaded;
}

/** Which binary addon() loaded (loading it first). */
export function addonOrigin(): AddonOrigin {
  addon();
  return origin!;
}
