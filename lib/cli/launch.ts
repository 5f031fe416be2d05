// The launcher (torchrun's job, for this library): starts one worker process per device on this machine with
// torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), watches them,
// and ends the job as one:
//   - a worker that fails (non-zero exit, killed) takes the others down: they get SIGTERM, then SIGKILL after a grace
//     period, and the launcher exits non-zero naming the rank that failed first;
//   - Ctrl-C / SIGTERM on the launcher is passed on once to every worker (each in its own process group, so the
//     terminal's SIGINT reaches them only through here): they finish the step every rank agrees on, rank 0 saves,
//     all exit 130; a second Ctrl-C kills them;
//   - a worker whose launcher dies sees its IPC channel close and gets SIGTERM (initDistributed arranges it).
// On CUDA each worker sees one GPU (CUDA_VISIBLE_DEVICES from --devices, like the seed's device_ids=[0, 1]); on the
// CPU the cores are split between the workers (OMP_NUM_THREADS).
//
// Used by `node dist/train.js --nproc-per-node N ...` (addLaunchOptions/launchFromTrain below) and by
// `vggnet launch --nproc-per-node N script.js ...` for a user's own script.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DeviceName, backends, cudaAvailable, getNumThreads } from '../backend';
import { DEFAULT_MASTER_PORT, DEFAULT_TIMEOUT_S, isLaunched } from '../dist/env';
import { ProcessGroup, initDistributed } from '../dist/process_group';
import { DistributedDataParallel } from '../dist/ddp';
import { downloadStl10 } from '../data/download';
import type { VGGNet } from '../models/vgg';
import { CliIO, EXIT, configure, intArg, parseArgs, processIO } from './support';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  masterPort?: number;
  /** CUDA devices, one per local worker (default 0..nproc-1); undefined on the CPU. */
  devices?: number[];
  /** 'cuda': one GPU per worker; 'cpu': cores split; 'auto': cuda when a GPU is usable. */
  device?: 'cpu' | 'cuda' | 'auto';
  /** Seconds every wait may take (default 300). */
  timeout?: number;
  backend?: 'auto' | 'gloo' | 'nccl';
  /** The Node script each worker runs, and its arguments. */
  script: string;
  args: string[];
  /** Extra environment for the workers. */
  env?: Record<string, string>;
  /** Seconds between SIGTERM and SIGKILL when the job is torn down (default 10). */
  grace?: number;
}

const SIGNAL_CODES: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGSEGV: 11, SIGABRT: 6 };

/** "0,1" -> [0, 1] (GPU indices). */
export function parseDevices(v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError(`--devices must be GPU indices separated by commas (e.g. 0,1), got '${v}'.`);
  }
  return parts.map(Number);
}

/** The launcher's options, added to a program (train's, and `vggnet launch`'s). */
export function addLaunchOptions(p: Command, forTrain: boolean): Command {
  p.option('--nproc-per-node <n>', forTrain
    ? 'start n worker processes on this machine for data-parallel training (one per GPU, or the CPU cores split between them); --batch-size is per process'
    : 'worker processes to start on this machine', intArg('--nproc-per-node', 1))
    .option('--nnodes <n>', 'machines in the job (each runs this command with its --node-rank)', intArg('--nnodes', 1), 1)
    .option('--node-rank <r>', "this machine's index in [0, --nnodes)", intArg('--node-rank', 0), 0)
    .option('--master-addr <host>', "rank 0's machine, where the rendezvous store is served", '127.0.0.1')
    .option('--master-port <port>', "the rendezvous store's TCP port on rank 0's machine (torchrun's default)", intArg('--master-port', 1), DEFAULT_MASTER_PORT)
    .option('--devices <list>', 'GPUs for this machine\'s workers, one each, e.g. 0,1 (default 0..n-1; a repeated index shares a GPU over gloo)', parseDevices)
    // No commander defaults for these two: a worker started by torchrun (or by hand) takes them from its environment.
    .addOption(new Option('--dist-backend <b>', 'collective engine: nccl (CUDA tensors) or gloo (CPU tensors, or CUDA through host memory); default auto: nccl on GPUs when built, else gloo (or $VGGNET_DIST_BACKEND)').choices(['auto', 'gloo', 'nccl']))
    .option('--dist-timeout <s>', `seconds any wait of the job may take: the rendezvous, every collective (default ${DEFAULT_TIMEOUT_S}, or $VGGNET_DIST_TIMEOUT)`, (v: string) => {
      const n = Number(v);
      if (v.trim() === '' || !(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`--dist-timeout must be a number of seconds > 0, got '${v}'.`);
      return n;
    });
  if (forTrain) {
    p.option('--sync-bn', 'with several processes: SyncBatchNorm, batch statistics over every process\'s batch (default: per process, as DDP)', false)
      .addOption(new Option('--grad-compression <c>', 'with several processes: send gradients as bf16 (half the bytes)').choices(['none', 'bf16']).default('none'));
  }
  return p;
}

/** The launcher-only flags and whether each takes a value (what a worker's command line must not repeat). */
const LAUNCHER_FLAGS: Record<string, boolean> = {
  '--nproc-per-node': true, '--nnodes': true, '--node-rank': true, '--master-addr': true, '--master-port': true, '--devices': true,
};

/** argv without the launcher's own flags (both `--flag value` and `--flag=value`). */
export function workerArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (name in LAUNCHER_FLAGS) {
      if (eq < 0 && LAUNCHER_FLAGS[name]) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

interface Worker {
  rank: number;
  localRank: number;
  child: ChildProcess;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  /** Signals the launcher sent it (an exit by one of these is the launcher's doing, not the cause). */
  sent: Set<string>;
}

/** Starts the workers and waits for the job to end; returns the launcher's exit code. */
export async function launch(o: LaunchOptions, io: CliIO = processIO()): Promise<number> {
  const err = (s: string) => io.stderr.write(s + '\n');
  const nproc = o.nprocPerNode, nnodes = o.nnodes ?? 1, nodeRank = o.nodeRank ?? 0;
  if (!Number.isInteger(nproc) || nproc < 1) throw new RangeError(`--nproc-per-node must be an integer >= 1, got ${nproc}`);
  if (!Number.isInteger(nnodes) || nnodes < 1) throw new RangeError(`--nnodes must be an integer >= 1, got ${nnodes}`);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new RangeError(`--node-rank must be in [0, ${nnodes}) (--nnodes ${nnodes}), got ${nodeRank}`);
  if (isLaunched()) throw new Error('this process is already a worker of a distributed job (WORLD_SIZE is set): a worker cannot launch workers');
  const world = nproc * nnodes;
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  const masterPort = o.masterPort ?? DEFAULT_MASTER_PORT;
  const timeout = o.timeout ?? (Number(process.env.VGGNET_DIST_TIMEOUT) || DEFAULT_TIMEOUT_S);
  let backend = o.backend ?? ((process.env.VGGNET_DIST_BACKEND || 'auto') as 'auto' | 'gloo' | 'nccl');
  const wantCuda = o.device === 'cuda' || ((o.device ?? 'auto') === 'auto' && cudaAvailable());
  if (o.device === 'cuda' && !cudaAvailable()) {
    throw new Error(backends().cuda.built ? "--device cuda: no usable GPU was found" : '--device cuda: this build of vggnet has no CUDA backend');
  }
  let devices: number[] | undefined;
  let threads: number | undefined;
  const notes: string[] = [];
  if (wantCuda) {
    devices = o.devices ?? Array.from({ length: nproc }, (_, i) => i);
    if (devices.length !== nproc) {
      throw new Error(`--devices lists ${devices.length} GPU(s) (${devices.join(',')}) but --nproc-per-node is ${nproc}: give one per worker`);
    }
    const shared = devices.length !== new Set(devices).size;
    if (shared && backend === 'nccl') throw new Error(`--devices ${devices.join(',')} puts two workers on one GPU, which NCCL cannot do: use --dist-backend gloo`);
    if (shared && backend === 'auto') {
      backend = 'gloo';
      notes.push(`two workers share a GPU (--devices ${devices.join(',')}): gloo, through host memory`);
    }
  } else {
    if (o.devices) throw new Error('--devices picks GPUs, but the workers run on the CPU');
    const cores = os.availableParallelism?.() ?? os.cpus().length;
    threads = process.env.OMP_NUM_THREADS ? Number(process.env.OMP_NUM_THREADS) : Math.max(1, Math.floor(cores / nproc));
  }

  const workers: Worker[] = [];
  const failures: Worker[] = [];
  let signals = 0;
  let killTimer: NodeJS.Timeout | null = null;
  const alive = () => workers.filter((w) => !w.exit);
  const signalAll = (sig: NodeJS.Signals) => {
    for (const w of alive()) {
      w.sent.add(sig);
      try {
        process.kill(-w.child.pid!, sig); // the worker's process group: it and anything it started
      } catch {
        try {
          w.child.kill(sig);
        } catch {
          /* gone */
        }
      }
    }
  };
  const tearDown = () => {
    signalAll('SIGTERM');
    killTimer ??= setTimeout(() => signalAll('SIGKILL'), (o.grace ?? 10) * 1000);
    killTimer.unref();
  };

  const done = new Promise<void>((resolve) => {
    const onExit = (w: Worker, code: number | null, signal: NodeJS.Signals | null) => {
      if (w.exit) return;
      w.exit = { code, signal };
      const interrupted = signals > 0 && (code === EXIT.interrupted || (signal !== null && w.sent.has(signal)));
      if ((code !== 0 || signal) && !interrupted && !(signal && w.sent.has(signal))) {
        failures.push(w);
        if (failures.length === 1 && alive().length) tearDown();
      }
      if (alive().length === 0) resolve();
    };
    for (let local = 0; local < nproc; local++) {
      const rank = nodeRank * nproc + local;
      const env: Record<string, string> = {
        ...(process.env as Record<string, string>), ...(o.env ?? {}),
        RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(nproc),
        MASTER_ADDR: masterAddr, MASTER_PORT: String(masterPort),
        VGGNET_DIST_TIMEOUT: String(timeout), VGGNET_DIST_BACKEND: backend, VGGNET_LAUNCHED: '1',
      };
      if (devices) {
        env.CUDA_VISIBLE_DEVICES = String(devices[local]);
        env.VGGNET_DEVICE = 'cuda';
      } else {
        env.OMP_NUM_THREADS = String(threads);
        env.VGGNET_DEVICE = 'cpu';
      }
      const child = spawn(process.execPath, [...process.execArgv, o.script, ...o.args], {
        env, stdio: ['ignore', 'inherit', 'pipe', 'ipc'], detached: true,
      });
      const w: Worker = { rank, localRank: local, child, exit: null, sent: new Set() };
      workers.push(w);
      // Each line of a worker's stderr, prefixed with its rank.
      let pending = '';
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        const lines = (pending + chunk).split('\n');
        pending = lines.pop()!;
        for (const l of lines) io.stderr.write(`[rank ${rank}] ${l}\n`);
      });
      child.stderr!.on('end', () => {
        if (pending) io.stderr.write(`[rank ${rank}] ${pending}\n`);
      });
      child.on('error', (e) => {
        err(`launcher: rank ${rank} could not be started: ${e.message}`);
        onExit(w, 1, null);
      });
      child.on('exit', (code, signal) => onExit(w, code, signal));
    }
  });

  err(`launcher: ${nproc} worker(s) on this machine (rank${nproc > 1 ? 's' : ''} ${nodeRank * nproc}${nproc > 1 ? `-${nodeRank * nproc + nproc - 1}` : ''} of ${world}), ` +
    `rendezvous at ${masterAddr}:${masterPort}, ${devices ? `GPU ${devices.join(',')}` : `${threads} thread(s) each`}, ` +
    `backend ${backend}, timeout ${timeout} s; pids ${workers.map((w) => `${w.rank}:${w.child.pid}`).join(' ')}` +
    (notes.length ? ` (${notes.join('; ')})` : ''));

  // Ctrl-C / SIGTERM: passed on once; the second time, the workers are killed.
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      err(`launcher: ${sig} again: killing the workers`);
      signalAll('SIGKILL');
      return;
    }
    err(`launcher: ${sig}: every worker finishes the step they agree on, rank 0 saves (${sig === 'SIGINT' ? 'Ctrl-C' : sig} again kills them)`);
    signalAll(sig);
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  if (io.handleSignals) {
    process.on('SIGINT', sigint);
    process.on('SIGTERM', sigterm);
  }
  try {
    await done;
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    if (killTimer) clearTimeout(killTimer);
  }
  if (failures.length) {
    // The cause: a worker killed from outside, else the first to fail (the others usually fail because it did).
    const f = failures.find((w) => w.exit!.signal) ?? failures[0];
    const how = f.exit!.signal ? `was killed by ${f.exit!.signal}` : `exited with code ${f.exit!.code}`;
    const others = workers.length - 1;
    err(`launcher: rank ${f.rank} (pid ${f.child.pid}) ${how}; the job is over${others ? ` (the other ${others} worker(s) on this machine were stopped)` : ''}`);
    return f.exit!.signal ? 128 + (SIGNAL_CODES[f.exit!.signal] ?? 1) : f.exit!.code || EXIT.error;
  }
  if (workers.some((w) => w.exit!.code === EXIT.interrupted || w.exit!.signal === 'SIGINT')) return EXIT.interrupted;
  return workers.every((w) => w.exit!.code === 0) ? 0 : EXIT.error;
}

/** `vggnet launch --nproc-per-node N [options] script.js [args...]`. */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const p = new Command('launch')
    .description('Run a script that uses vggnet\'s distributed training (initDistributed) as N worker processes on this machine, with torchrun\'s environment.')
    .argument('<script>', 'the Node.js script each worker runs')
    .argument('[args...]', "the script's own arguments")
    .addOption(new Option('--device <d>', 'cuda: one GPU per worker; cpu: the cores split between them').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .passThroughOptions();
  addLaunchOptions(p, false);
  configure(p, io);
  p.addHelpText('after', `
Examples:
  vggnet launch --nproc-per-node 2 train_ddp.js --epochs 3
  vggnet launch --nproc-per-node 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 train_ddp.js`);
  const parsed = parseArgs(p, argv);
  if (parsed !== null) return parsed;
  const o = p.opts();
  if (o.nprocPerNode === undefined) {
    io.stderr.write('error: --nproc-per-node is required\n');
    return EXIT.usage;
  }
  try {
    return await launch({
      nprocPerNode: o.nprocPerNode, nnodes: o.nnodes, nodeRank: o.nodeRank, masterAddr: o.masterAddr, masterPort: o.masterPort,
      devices: o.devices, device: o.device, timeout: o.distTimeout, backend: o.distBackend,
      script: p.args[0], args: p.args.slice(1),
    }, io);
  } catch (e) {
    io.stderr.write(`error: ${(e as Error).message}\n`);
    return EXIT.error;
  }
}

// ---- the training CLI's two sides (lib/cli/train.ts)

/** `node dist/train.js --nproc-per-node N ...`: downloads what the workers need once, then starts them. */
export async function launchTrainWorkers(argv: string[], o: Record<string, unknown>, io: CliIO): Promise<number> {
  try {
    const data = o.data as string;
    const stl10 = path.join(data, 'stl10_binary');
    if (o.download && (o.dataset === 'auto' || o.dataset === 'stl10') &&
        !(fs.existsSync(path.join(stl10, 'train_X.bin')) && fs.existsSync(path.join(stl10, 'test_X.bin')))) {
      io.stdout.write(`downloading STL10 into ${path.resolve(data)} (once, before the workers start) ...\n`);
      await downloadStl10(data);
    }
    return await launch({
      nprocPerNode: o.nprocPerNode as number, nnodes: o.nnodes as number, nodeRank: o.nodeRank as number,
      masterAddr: o.masterAddr as string, masterPort: o.masterPort as number, devices: o.devices as number[] | undefined,
      device: o.device as 'auto' | 'cpu' | 'cuda', timeout: o.distTimeout as number,
      backend: o.distBackend as 'auto' | 'gloo' | 'nccl', script: path.resolve(__dirname, '..', 'train.js'), args: workerArgs(argv),
    }, io);
  } catch (e) {
    io.stderr.write(`error: ${(e as Error).message}\n`);
    return EXIT.error;
  }
}

export interface TrainWorker {
  /** Rank 0: prints, logs and writes checkpoints. */
  readonly isMain: boolean;
  /** The data loader's threads: this worker's share of the cores. */
  readonly threads: number | undefined;
  /** Joins the job (rendezvous, engine) for a model on `device`. */
  join(device: DeviceName): Promise<void>;
  wrap(model: VGGNet): DistributedDataParallel;
  describe(model: VGGNet): string;
  /** Leaves the job (after a barrier); safe to call when join() never happened or failed. */
  leave(): void;
}

/** A training CLI process started with torchrun's environment (by the launcher, or torchrun itself). */
export function startTrainWorker(o: Record<string, unknown>): TrainWorker {
  let pg: ProcessGroup | null = null;
  let ddp: DistributedDataParallel | null = null;
  const group = (): ProcessGroup => {
    if (!pg) throw new Error('distributed worker: join() first');
    return pg;
  };
  return {
    isMain: (process.env.RANK ?? '0') === '0',
    // CPU: the launcher's share of the cores (OMP_NUM_THREADS); CUDA: the data loader's share of them.
    threads: process.env.VGGNET_DEVICE === 'cuda'
      ? Math.max(1, Math.floor((os.availableParallelism?.() ?? os.cpus().length) / Math.max(1, Number(process.env.LOCAL_WORLD_SIZE) || 1)))
      : getNumThreads(),
    async join(device) {
      // --dist-backend / --dist-timeout when given, else the environment (the launcher's, torchrun's or by hand).
      pg = await initDistributed({ device, backend: o.distBackend as 'auto' | 'gloo' | 'nccl' | undefined, timeout: o.distTimeout as number | undefined });
    },
    wrap(model) {
      ddp = new DistributedDataParallel(model, {
        processGroup: group(), syncBatchNorm: Boolean(o.syncBn), gradientCompression: o.gradCompression as 'none' | 'bf16',
      });
      return ddp;
    },
    describe(model) {
      const g = group();
      const b = ddp?.buckets ?? [];
      const mb = (n: number) => (n / 1e6).toFixed(n < 1e6 ? 2 : 1);
      return `distributed: ${g.worldSize} processes over ${g.engine} ${g.engineVersion} (rendezvous ${g.master}), batch ${o.batchSize} each = ` +
        `${(o.batchSize as number) * g.worldSize} per step; gradients in ${b.length} bucket(s) (${b.map((x) => mb(x.bytes)).join(' + ')} MB)` +
        `${o.gradCompression === 'bf16' ? ' sent as bf16' : ''}${ddp?.gatherClassifierRows ? ', the classifier\'s rows gathered instead of its gradients' : ''}; batch norm ${model.options.batchNorm ? (o.syncBn ? 'synchronised (SyncBatchNorm)' : 'per process') : 'none'}`;
    },
    leave() {
      pg?.destroy();
    },
  };
}
