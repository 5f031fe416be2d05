// torchrun's environment: what a worker of a distributed job is told about itself. The launcher (lib/cli/launch.ts,
// `vggnet launch`, `node dist/train.js --nproc-per-node N`) sets it; so does torchrun, or a hand-written script.
//   RANK, WORLD_SIZE              this worker's rank in [0, WORLD_SIZE) and the number of workers
//   LOCAL_RANK, LOCAL_WORLD_SIZE  the same among the workers of this machine
//   MASTER_ADDR, MASTER_PORT      where rank 0 serves the rendezvous store (default 127.0.0.1:29500, torchrun's)
// and vggnet's own, which the launcher sets from its options:
//   VGGNET_DIST_TIMEOUT           seconds every wait may take (default 300)
//   VGGNET_DIST_BACKEND           auto | gloo | nccl (default auto: nccl for CUDA models when built, else gloo)
//   GLOO_SOCKET_IFNAME            the network interface gloo's pairs listen on (PyTorch's name; default: the one
//                                 this machine reaches MASTER_ADDR through)

export const DEFAULT_MASTER_PORT = 29500;
export const DEFAULT_TIMEOUT_S = 300;

export type BackendChoice = 'auto' | 'gloo' | 'nccl';

export interface DistEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
  timeoutSeconds: number;
  backend: BackendChoice;
  iface?: string;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, min: number, max: number, fallback?: number): number {
  const v = env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    throw new Error(`distributed: environment variable ${name} is not set (a launcher such as \`vggnet launch\` or torchrun sets it)`);
  }
  const n = Number(v);
  if (!/^\s*\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new RangeError(`distributed: environment variable ${name} must be an integer in [${min}, ${max}], got '${v}'`);
  }
  return n;
}

/** Whether the environment describes a distributed worker (WORLD_SIZE is set). */
export function isLaunched(env: Env = process.env): boolean {
  return env.WORLD_SIZE !== undefined && env.WORLD_SIZE !== '';
}

/** Reads and checks torchrun's variables; every error names the variable and what was expected. */
export function readDistEnv(env: Env = process.env): DistEnv {
  const worldSize = int(env, 'WORLD_SIZE', 1, 1 << 20);
  const rank = int(env, 'RANK', 0, worldSize - 1);
  const localWorldSize = int(env, 'LOCAL_WORLD_SIZE', 1, worldSize, worldSize === 1 ? 1 : undefined);
  const localRank = int(env, 'LOCAL_RANK', 0, localWorldSize - 1, worldSize === 1 ? 0 : undefined);
  const masterPort = int(env, 'MASTER_PORT', 1, 65535, DEFAULT_MASTER_PORT);
  const masterAddr = (env.MASTER_ADDR ?? '').trim() || '127.0.0.1';
  const t = env.VGGNET_DIST_TIMEOUT;
  const timeoutSeconds = t === undefined || t === '' ? DEFAULT_TIMEOUT_S : Number(t);
  if (!(timeoutSeconds > 0 && Number.isFinite(timeoutSeconds))) {
    throw new RangeError(`distributed: environment variable VGGNET_DIST_TIMEOUT must be a number of seconds > 0, got '${t}'`);
  }
  const backend = (env.VGGNET_DIST_BACKEND || 'auto') as BackendChoice;
  if (!['auto', 'gloo', 'nccl'].includes(backend)) {
    throw new RangeError(`distributed: environment variable VGGNET_DIST_BACKEND must be auto, gloo or nccl, got '${backend}'`);
  }
  const iface = env.GLOO_SOCKET_IFNAME || undefined;
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort, timeoutSeconds, backend, iface };
}
