// A CliIO (lib/cli/support.ts) that captures what a CLI program writes, for the CLI tests.
export function captureIO() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } },
    out: () => out.join(''),
    err: () => err.join(''),
  };
}
