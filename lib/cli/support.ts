// What the command-line programs (train, predict, bench, the `vggnet` dispatcher) share: the I/O they write to,
// commander's parse with our exit codes, number parsers with clear messages, and the process entry wrapper.
import * as fs from 'fs';
import * as path from 'path';
import { Command, CommanderError, InvalidArgumentError } from 'commander';

export interface CliIO {
  stdout: { write(s: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(s: string): unknown };
  /** Install SIGINT/SIGTERM handlers (the real CLI); tests pass an AbortSignal instead. */
  handleSignals?: boolean;
  signal?: AbortSignal;
  /** How the user invoked the program (`node dist/train.js`, `vggnet train`): hints that repeat a command use it. */
  command?: string;
}

/** The real process's streams, with signal handling. */
export function processIO(): CliIO {
  return { stdout: process.stdout, stderr: process.stderr, handleSignals: true, command: invokedAs() };
}

/** The command the user typed to start this process, as well as it can be told: `node dist/train.js`, `npx vggnet`. */
export function invokedAs(): string {
  const script = process.argv[1] ?? '';
  const base = path.basename(script);
  if (base === 'vggnet' || base === 'vggnet.js') return `${process.env.npm_command === 'exec' ? 'npx ' : ''}vggnet`;
  const rel = path.relative(process.cwd(), script);
  return `node ${rel && rel.length < script.length ? rel : script}`;
}

/** Exit codes: 0 ok, 1 error, 2 bad arguments, 130 interrupted (128 + SIGINT), as shells expect. */
export const EXIT = { ok: 0, error: 1, usage: 2, interrupted: 130 } as const;

/** Makes a commander program write to `io` and throw instead of exiting. */
export function configure(p: Command, io: CliIO): Command {
  return p.exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
}

/** Parses argv; returns null when parsing succeeded, else the exit code (0 after --help/--version, 2 on bad arguments). */
export function parseArgs(p: Command, argv: string[]): number | null {
  try {
    p.parse(argv, { from: 'user' });
    return null;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    throw e;
  }
}

/** An integer option parser: `--name must be an integer >= min, got 'v'.` */
export function intArg(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got '${v}'.`);
    return n;
  };
}

/** A number option parser for [min, maxExclusive). */
export function numArg(name: string, min = 0, maxExclusive = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n >= maxExclusive) {
      throw new InvalidArgumentError(`${name} must be a number >= ${min}${maxExclusive < Infinity ? ` and < ${maxExclusive}` : ''}, got '${v}'.`);
    }
    return n;
  };
}

/**
 * A checkpoint argument: a file, or a folder meaning <folder>/<file> (last.safetensors for --resume,
 * best.safetensors for --evaluate). Throws naming the path when there is none.
 */
export function checkpointFile(flag: string, p: string, inFolder: string[]): string {
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(p);
  } catch {
    throw new Error(`${flag} ${p}: no such checkpoint (a .safetensors file written by train, or its folder)`);
  }
  if (!st.isDirectory()) return p;
  for (const f of inFolder) if (fs.existsSync(path.join(p, f))) return path.join(p, f);
  const have = fs.readdirSync(p).filter((f) => f.endsWith('.safetensors'));
  throw new Error(`${flag} ${p}: the folder holds no ${inFolder.join(' or ')}${have.length ? ` (it has ${have.slice(0, 5).join(', ')}${have.length > 5 ? ', ...' : ''})` : ''}`);
}

/**
 * Runs a program's main when its file is the process's entry point. A closed stdout (`... | head`) ends the program
 * quietly, as Unix tools do; an unexpected exception prints its stack and exits 1.
 */
export function runAsMain(mod: NodeModule, main: (argv: string[]) => Promise<number | void>): void {
  if (require.main !== mod) return;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      // the reader went away (EPIPE), or this is a later write to the stream that EPIPE closed
      if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  main(process.argv.slice(2)).then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`error: ${(e as Error).stack ?? e}\n`);
      process.exitCode = EXIT.error;
    },
  );
}
