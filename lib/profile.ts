// Op-level profiler for finding where a step's time goes: with VGGNET_PROFILE=1 every op in lib/ops.ts waits for
// its device before and after running, and its wall time is added up by op name (VGGNET_PROFILE=layers: by op name
// and the shape of its first tensor argument, i.e. layer by layer), with the process's CPU time over the same span
// (all threads: for CPU ops the steadier measure when other processes share the cores). Slows everything down; for
// diagnosis only (`VGGNET_PROFILE=1 npm run bench -- gpu`).
import * as ops from './ops';
import { Tensor } from './tensor';

const totals = new Map<string, { ms: number; calls: number; cpuMs: number }>();
const originals = new Map<string, unknown>();
let installed = false;
let byShape = false;

function deviceOf(args: unknown[]): 'cpu' | 'cuda' | undefined {
  for (const a of args) {
    if (a instanceof Tensor) return a.device;
    if (Array.isArray(a) && a[0] instanceof Tensor) return a[0].device;
  }
  return undefined;
}

/** Wraps every op; `layers` keys the totals by op name and first tensor argument's shape. */
export function installProfiler(layers = false): void {
  if (installed) return;
  installed = true;
  byShape = layers;
  const mod = ops as unknown as Record<string, unknown>;
  for (const name of Object.keys(mod)) {
    const fn = mod[name];
    if (typeof fn !== 'function' || name === 'synchronize') continue;
    const wrapped = (...args: unknown[]) => {
      const dev = deviceOf(args);
      if (dev) ops.synchronize(dev);
      const t = performance.now();
      const c = process.cpuUsage();
      const r = (fn as (...a: unknown[]) => unknown)(...args);
      if (dev) ops.synchronize(dev);
      const cpu = process.cpuUsage(c);
      const first = byShape ? args.find((a): a is Tensor => a instanceof Tensor) : undefined;
      const key = first ? `${name} [${first.shape.join(',')}]` : name;
      const e = totals.get(key) ?? { ms: 0, calls: 0, cpuMs: 0 };
      e.ms += performance.now() - t;
      e.cpuMs += (cpu.user + cpu.system) / 1000;
      e.calls++;
      totals.set(key, e);
      return r;
    };
    try {
      Object.defineProperty(mod, name, { value: wrapped, configurable: true, enumerable: true, writable: true });
      originals.set(name, fn);
    } catch {
      /* non-configurable export: left unprofiled */
    }
  }
}

/** Whether the ops are wrapped now (CUDA graphs stay off then: each op synchronises). */
export function profilerInstalled(): boolean {
  return installed;
}

/** Puts the unwrapped ops back (the totals are kept until read). */
export function uninstallProfiler(): void {
  const mod = ops as unknown as Record<string, unknown>;
  for (const [name, fn] of originals) Object.defineProperty(mod, name, { value: fn, configurable: true, enumerable: true, writable: true });
  originals.clear();
  installed = false;
}

/** Wall time, call count and process CPU time per op name since the last reset. */
export function profileTotals(reset = true): Map<string, { ms: number; calls: number; cpuMs: number }> {
  const out = new Map([...totals].map(([k, v]) => [k, { ...v }]));
  if (reset) totals.clear();
  return out;
}

export function profileReport(reset = true): string {
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const all = rows.reduce((s, [, v]) => s + v.ms, 0);
  const allCpu = rows.reduce((s, [, v]) => s + v.cpuMs, 0);
  const out = rows.map(([k, v]) => `  ${k.padEnd(byShape ? 48 : 28)} ${v.ms.toFixed(1).padStart(9)} ms ${String(v.calls).padStart(6)} calls ${((100 * v.ms) / (all || 1)).toFixed(1).padStart(5)}%  cpu ${v.cpuMs.toFixed(1).padStart(9)} ms ${((100 * v.cpuMs) / (allCpu || 1)).toFixed(1).padStart(5)}%`);
  if (reset) totals.clear();
  return ['op profile (device-synchronised wall time; process CPU time, all threads):', ...out].join('\n');
}

if (process.env.VGGNET_PROFILE === '1' || process.env.VGGNET_PROFILE === 'layers') installProfiler(process.env.VGGNET_PROFILE === 'layers');
