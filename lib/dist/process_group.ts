// Process groups, as torch.distributed has them: initDistributed() reads torchrun's environment (env.ts), meets the
// other ranks at rank 0's rendezvous store and connects the engine — NCCL for a CUDA model when the addon has it,
// gloo otherwise — and becomes the default group, which DistributedDataParallel, DistributedSampler and the Trainer
// use unless given another.
//
//   const pg = await initDistributed();            // RANK, WORLD_SIZE, MASTER_ADDR, ... from the launcher
//   pg.rank, pg.worldSize, pg.engine               // 0, 2, 'gloo'
//   pg.allReduce([correct, seen])                  // sums over the ranks (float64)
//   await destroyProcessGroup();
import { DeviceName, DeviceOption, resolveDevice } from '../backend';
import { Tensor } from '../tensor';
import {
  NativeGroup, NativeGroupStats, enginesBuilt, groupAllreduceHost, groupBroadcast, groupInfo, groupInit, groupShutdown,
  groupStats,
} from './native_dist';
import { BackendChoice, DistEnv, readDistEnv } from './env';

export type Engine = 'gloo' | 'nccl';

export interface InitOptions {
  /** Defaults: torchrun's environment variables (lib/dist/env.ts). */
  rank?: number;
  worldSize?: number;
  localRank?: number;
  localWorldSize?: number;
  masterAddr?: string;
  masterPort?: number;
  /** Seconds any wait may take: the rendezvous, every collective (default $VGGNET_DIST_TIMEOUT or 300). */
  timeout?: number;
  /** auto (default $VGGNET_DIST_BACKEND or auto): NCCL for CUDA tensors when built, gloo otherwise. */
  backend?: BackendChoice;
  /** Where the model's tensors live (default: as models resolve it: $VGGNET_DEVICE, else CUDA when usable). */
  device?: DeviceOption;
  /** The network interface gloo listens on (default $GLOO_SOCKET_IFNAME, else the one that reaches the master). */
  iface?: string;
}

export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly localWorldSize: number;
  readonly engine: Engine;
  readonly engineVersion: string;
  readonly device: DeviceName;
  /** "host:port" of rank 0's rendezvous store. */
  readonly master: string;
  /** The address this rank reaches the master from (gloo listens there unless told an interface). */
  readonly localAddress: string;
  /** Whether a step reducing over this group can be captured as a CUDA graph (NCCL on CUDA). */
  readonly capturable: boolean;
  readonly timeoutSeconds: number;
  private native: NativeGroup | null;

  /** @internal use initDistributed() */
  constructor(native: NativeGroup, env: Pick<DistEnv, 'localRank' | 'localWorldSize' | 'timeoutSeconds'>) {
    this.native = native;
    const info = groupInfo(native);
    this.rank = info.rank;
    this.worldSize = info.world;
    this.localRank = env.localRank;
    this.localWorldSize = env.localWorldSize;
    this.engine = info.engine;
    this.engineVersion = info.engineVersion;
    this.device = info.device;
    this.master = info.master;
    this.localAddress = info.localAddress;
    this.capturable = info.capturable;
    this.timeoutSeconds = env.timeoutSeconds;
  }

  /** The native group (for the addon's ops: SyncBatchNorm). Throws once destroyed. */
  get handle(): NativeGroup {
    if (!this.native) throw new Error(`ProcessGroup (rank ${this.rank} of ${this.worldSize}): the group was destroyed`);
    return this.native;
  }

  get destroyed(): boolean {
    return this.native === null;
  }

  /** Copies rank `root`'s values of these tensors (on the group's device) into every rank's, in place. */
  broadcast(tensors: Tensor[], root = 0): void {
    for (const t of tensors) {
      if (t.device !== this.device) throw new Error(`ProcessGroup.broadcast: a tensor on ${t.device}, the group reduces ${this.device} tensors`);
    }
    groupBroadcast(this.handle, tensors, root);
  }

  /** The element-wise sums over the ranks (float64: counts stay exact up to 2^53). */
  allReduce(values: ArrayLike<number>): Float64Array {
    const a = Float64Array.from(values);
    groupAllreduceHost(this.handle, a);
    return a;
  }

  /** Returns when every rank has called it (or throws, naming a rank that is gone). */
  barrier(): void {
    this.allReduce([1]);
  }

  /** Collective counts and, for gradient buckets, the time spent all-reducing and the part backward did not hide. */
  stats(): NativeGroupStats {
    return groupStats(this.handle);
  }

  /**
   * Leaves the job: waits for the other ranks (a barrier, skipped when the group has failed), then says goodbye to
   * the rendezvous store so that the exit is not reported as a lost rank. Idempotent.
   */
  destroy(): void {
    const g = this.native;
    if (!g) return;
    try {
      this.barrier();
    } catch {
      /* a failed group: leave anyway */
    }
    this.native = null;
    groupShutdown(g);
    if (defaultGroup === this) defaultGroup = null;
  }
}

let defaultGroup: ProcessGroup | null = null;

/** The group initDistributed() made, or null (a single-process run). */
export function getProcessGroup(): ProcessGroup | null {
  return defaultGroup && !defaultGroup.destroyed ? defaultGroup : null;
}

/** Which engines this addon has (their versions; null when not built). */
export function distributedEngines(): { gloo: string | null; nccl: string | null } {
  return enginesBuilt();
}

/** The engine `backend` means for tensors on `device`, or an error saying why it cannot be had. */
export function chooseEngine(backend: BackendChoice, device: DeviceName): Engine {
  const built = enginesBuilt();
  if (backend === 'nccl' && device !== 'cuda') throw new Error('distributed: the nccl backend reduces CUDA tensors; a model on the CPU uses gloo');
  const engine: Engine = backend === 'auto' ? (device === 'cuda' && built.nccl ? 'nccl' : 'gloo') : backend;
  if (!built[engine]) {
    throw new Error(engine === 'nccl'
      ? 'distributed: this addon has no NCCL engine (NCCL was not found beside CUDA at build time: set NCCL_ROOT or pip install nvidia-nccl-cu12, then npm run build:native); --dist-backend gloo trains over gloo instead'
      : 'distributed: this addon has no gloo engine (gloo was not found at build time: apt-get install libgloo-dev, then npm run build:native)');
  }
  return engine;
}

/**
 * Joins the distributed job this process is a worker of: reads torchrun's environment (overridden by `options`),
 * meets the other ranks at rank 0's rendezvous store and connects the engine; the group becomes the default one.
 * Every wait is bounded by the timeout; an unreachable master, a port in use or ranks that never come are errors
 * that name the address and the ranks.
 */
export async function initDistributed(options: InitOptions = {}): Promise<ProcessGroup> {
  if (getProcessGroup()) throw new Error('initDistributed: this process already belongs to a process group (destroyProcessGroup() first)');
  const fromEnv = (): DistEnv => readDistEnv();
  const given = options.worldSize !== undefined && options.rank !== undefined;
  const env: DistEnv = given
    ? {
      rank: options.rank!, worldSize: options.worldSize!, localRank: options.localRank ?? 0,
      localWorldSize: options.localWorldSize ?? 1, masterAddr: options.masterAddr ?? '127.0.0.1',
      masterPort: options.masterPort ?? 29500, timeoutSeconds: options.timeout ?? 300, backend: options.backend ?? 'auto',
      iface: options.iface,
    }
    : { ...fromEnv() };
  if (!given) {
    if (options.masterAddr !== undefined) env.masterAddr = options.masterAddr;
    if (options.masterPort !== undefined) env.masterPort = options.masterPort;
    if (options.timeout !== undefined) env.timeoutSeconds = options.timeout;
    if (options.backend !== undefined) env.backend = options.backend;
    if (options.iface !== undefined) env.iface = options.iface;
  }
  if (!Number.isInteger(env.worldSize) || env.worldSize < 1) throw new RangeError(`initDistributed: worldSize must be an integer >= 1, got ${env.worldSize}`);
  if (!Number.isInteger(env.rank) || env.rank < 0 || env.rank >= env.worldSize) throw new RangeError(`initDistributed: rank must be an integer in [0, ${env.worldSize}), got ${env.rank}`);
  if (!(env.timeoutSeconds > 0)) throw new RangeError(`initDistributed: timeout must be > 0 seconds, got ${env.timeoutSeconds}`);
  const device = resolveDevice(options.device);
  const engine = chooseEngine(env.backend, device);
  const native = await groupInit({
    rank: env.rank, world: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort,
    timeoutMs: Math.round(env.timeoutSeconds * 1000), engine, device, iface: env.iface,
  });
  const pg = new ProcessGroup(native, env);
  defaultGroup = pg;
  ensureExitHook();
  return pg;
}

/** destroy() of the default group (a no-op without one). */
export function destroyProcessGroup(): void {
  getProcessGroup()?.destroy();
}

let exitHook = false;
// A worker that ends without destroyProcessGroup() still says goodbye, so the others do not take it for lost. A worker
// of `vggnet launch` whose launcher goes away (its IPC channel closes) gets SIGTERM, as from the launcher itself (the
// training CLI then finishes the agreed step and saves; a script without a handler ends); the channel itself must not
// keep the worker alive.
function ensureExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  if (process.env.VGGNET_LAUNCHED && process.channel) {
    process.channel.unref();
    process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  }
  process.on('exit', () => {
    const g = defaultGroup;
    if (!g || g.destroyed) return;
    try {
      groupShutdown(g.handle);
    } catch {
      /* exiting anyway */
    }
  });
}
