// Child processes for the multi-process tests: run to completion with a time limit (killed, with their process
// group, when it passes), or watch a running one's output; free TCP ports; comparing saved weights.
import { ChildProcess, spawn } from 'child_process';
import * as net from 'net';
import * as path from 'path';
import { readSafetensors } from '../../lib/io/safetensors';
import { Tensor } from '../../lib/tensor';

export const ROOT = path.join(__dirname, '..', '..');
export const TRAIN_JS = path.join(ROOT, 'dist', 'train.js');
export const VGGNET_JS = path.join(ROOT, 'dist', 'cli', 'vggnet.js');

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** A running child (in its own process group) whose output is collected; `until` waits for a pattern. */
export class Proc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  private readonly t0 = Date.now();
  private readonly done: Promise<Ran>;
  private timer: NodeJS.Timeout;

  constructor(cmd: string, args: string[], options: { env?: Record<string, string>; timeoutMs: number; cwd?: string }) {
    this.child = spawn(cmd, args, {
      env: { ...process.env, ...(options.env ?? {}) }, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.timer = setTimeout(() => this.killAll('SIGKILL'), options.timeoutMs);
    this.done = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        clearTimeout(this.timer);
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr, ms: Date.now() - this.t0 });
      });
    });
  }

  /** Kills the child's whole process group (it and the workers it started). */
  killAll(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.child.pid!, sig);
    } catch {
      /* gone */
    }
  }

  /** Resolves once stdout or stderr matches (rejects if the child ends first, or after timeoutMs). */
  async until(re: RegExp, timeoutMs = 60000): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = this.stdout.match(re) ?? this.stderr.match(re);
      if (m) return m;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`the process ended before ${re} appeared:\n${this.stdout}\n${this.stderr}`);
      }
      if (Date.now() - t0 > timeoutMs) throw new Error(`${re} did not appear within ${timeoutMs} ms:\n${this.stdout}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  wait(): Promise<Ran> {
    return this.done;
  }
}

export function run(cmd: string, args: string[], options: { env?: Record<string, string>; timeoutMs: number; cwd?: string }): Promise<Ran> {
  return new Proc(cmd, args, options).wait();
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** The float tensors of a safetensors file (training checkpoints' optimizer entries included), as Float32Arrays. */
export function weights(file: string): Map<string, Float32Array> {
  const { tensors } = readSafetensors(file);
  const out = new Map<string, Float32Array>();
  for (const [k, v] of Object.entries(tensors)) {
    if (v instanceof Tensor) {
      if (v.dtype === 'float32') out.set(k, v.toFloat32());
      v.dispose();
    }
  }
  return out;
}

/**
 * The largest |a - b| of each tensor relative to that tensor's scale (max |a|, at least `floor`), over all tensors:
 * the float32-tolerance measure of two trainings that should agree.
 */
export function maxRelDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>, floor = 1e-3): { diff: number; name: string } {
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  let worst = { diff: 0, name: '' };
  for (const [k, x] of a) {
    const y = b.get(k)!;
    let d = 0, s = floor;
    for (let i = 0; i < x.length; i++) {
      d = Math.max(d, Math.abs(x[i] - y[i]));
      s = Math.max(s, Math.abs(x[i]));
    }
    if (d / s > worst.diff) worst = { diff: d / s, name: k };
  }
  return worst;
}
