// The package root: everything a user imports.
export { Tensor } from './tensor';
export type { DType, Layout, TensorOptions } from './tensor';
export {
  backends, resolveDevice, cudaAvailable, memoryStats, resetPeakMemory, emptyCache, deferringMemoryReports, synchronize, setNumThreads, getNumThreads,
  setCpuWinograd, cpuWinograd,
} from './backend';
export type { DeviceName, DeviceOption, BackendsInfo, AddonOrigin, CpuWinogradMode } from './backend';
export * as ops from './ops';
export { Module, Parameter, Counter, noGrad, isGradEnabled } from './nn/module';
export {
  Conv2d, ReLU, MaxPool2d, AdaptiveAvgPool2d, Flatten, BatchNorm2d, Linear, Dropout, Sequential,
} from './nn/layers';
export { crossEntropy } from './nn/loss';
export { VGGNet, vgg11, vgg13, vgg16, vgg19, cfgs, models } from './models/vgg';
export { loadPretrained } from './models/pretrained';
export { Int8VGG } from './models/int8';
export type { Int8Scales } from './models/int8';
export type { VGGConfig, VGGOptions, Precision, ModelName } from './models/vgg';
export { SGD, sgd } from './optim/sgd';
export type { SGDOptions } from './optim/sgd';
export { readSafetensors, writeSafetensors, parseSafetensors, serializeSafetensors } from './io/safetensors';
export type { StateRecord } from './io/safetensors';
export { readPth, writePth, parsePth, serializePth } from './io/pth';
export { readStateDict, writeStateDict } from './io/state_dict';
export {
  resolvePretrained, fetchWeights, cachedPretrained, weightsCacheDir, hashPrefix, isPretrainedName, pretrainedArchitecture,
  TORCHVISION_VGG_FILES, TORCHVISION_BASE_URL,
} from './io/hub';
export type { PretrainedName, FetchWeightsOptions } from './io/hub';
export { exportOnnx, onnxModelBytes, ONNX_OPSET } from './io/onnx';
export type { OnnxExportOptions } from './io/onnx';
export { TensorBoardWriter } from './io/tensorboard';
export { Rng } from './random';
export {
  reduceLROnPlateau, stepLR, cosineAnnealing, linearWarmup, constantLR,
  ReduceLROnPlateau, StepLR, CosineAnnealing, LinearWarmup, ConstantLR,
} from './optim/schedulers';
export type {
  Scheduler, MonitorMetric, PlateauOptions, StepLROptions, CosineAnnealingOptions, WarmupOptions, EpochMetrics,
} from './optim/schedulers';
export { MONITOR_METRICS } from './optim/schedulers';
export * from './data/index';
export * from './train/index';
export * from './dist/index';
