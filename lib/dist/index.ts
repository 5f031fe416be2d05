// Distributed data-parallel training: process groups (torchrun's environment, rank 0's rendezvous store, the gloo
// and NCCL engines), DistributedDataParallel (gradient buckets all-reduced during backward, SyncBatchNorm) and
// DistributedSampler. The launcher is lib/cli/launch.ts.
export {
  ProcessGroup, initDistributed, destroyProcessGroup, getProcessGroup, distributedEngines,
} from './process_group';
export type { InitOptions, Engine } from './process_group';
export { DistributedDataParallel } from './ddp';
export type { DDPOptions, BucketInfo } from './ddp';
export { DistributedSampler } from './sampler';
export type { DistributedSamplerOptions } from './sampler';
export { readDistEnv, isLaunched, DEFAULT_MASTER_PORT, DEFAULT_TIMEOUT_S } from './env';
export type { DistEnv } from './env';
