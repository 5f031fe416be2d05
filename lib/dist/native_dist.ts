// Distributed training's native side (native/dist/, bound in native/bindings/bind_dist.cc): process groups — the
// rendezvous, the engines (gloo, NCCL) and the collectives data-parallel training needs. The rest of lib/dist/ goes
// through these functions.
import { addon, NativeGroup, NativeGroupInfo, NativeGroupOptions, NativeGroupStats } from '../native';
import { Tensor } from '../tensor';

export type { NativeGroup, NativeGroupInfo, NativeGroupStats } from '../native';

/** Rendezvous and engine set-up, off the JS thread (waits up to the timeout for the other ranks). */
export function groupInit(o: NativeGroupOptions): Promise<NativeGroup> {
  return addon().distInit(o);
}
export function groupInfo(g: NativeGroup): NativeGroupInfo {
  return addon().distInfo(g);
}
/** Starts the all-reduce of a bucket of gradients (their average is written back by the time groupFinish returns). */
export function groupReduceBucket(g: NativeGroup, grads: Tensor[], bf16: boolean): void {
  addon().distReduceBucket(g, grads.map((t) => t.native), bf16);
}
/** Starts the all-reduce of the step's loss (mean over the ranks into lossOut) and the ranks' stop votes. */
export function groupReduceExtras(g: NativeGroup, loss: Tensor, lossOut: Tensor): void {
  addon().distReduceExtras(g, loss.native, lossOut.native);
}
export function groupFinish(g: NativeGroup): void {
  addon().distFinish(g);
}
export function groupRequestStop(g: NativeGroup, on: boolean): void {
  addon().distRequestStop(g, on);
}
export function groupStopVotes(g: NativeGroup): number {
  return addon().distStopVotes(g);
}
export function groupSyncDevice(g: NativeGroup): void {
  addon().distSyncDevice(g);
}
export function groupBroadcast(g: NativeGroup, tensors: Tensor[], root: number): void {
  addon().distBroadcast(g, tensors.map((t) => t.native), root);
}
export function groupAllreduceHost(g: NativeGroup, values: Float64Array): void {
  addon().distAllreduceHost(g, values);
}
/**
 * Every rank's srcs[k] into dsts[k] (world × its elements, one dtype), in rank order, times scales[k], in one
 * collective: CPU groups.
 */
export function groupAllGather(g: NativeGroup, srcs: Tensor[], dsts: Tensor[], scales: number[]): void {
  addon().distAllGather(g, srcs.map((t) => t.native), dsts.map((t) => t.native), scales);
}
export function groupStats(g: NativeGroup): NativeGroupStats {
  return addon().distStats(g);
}
export function groupShutdown(g: NativeGroup): void {
  addon().distShutdown(g);
}
/** The engines this addon was built with: their versions, null when not built. */
export function enginesBuilt(): { gloo: string | null; nccl: string | null } {
  return addon().distBuildInfo();
}
