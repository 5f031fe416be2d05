// What the examples share: settings from the environment, so the test suite can run them small and fast.
//   EXAMPLE_EPOCHS, EXAMPLE_IMAGE_SIZE, EXAMPLE_BATCH, EXAMPLE_HIDDEN (width of the two hidden FC layers),
//   EXAMPLE_SAMPLES (training images of the generated sample data; the test split gets half as many),
//   EXAMPLE_OUT (where checkpoints and weights go), STL10_ROOT (a folder holding stl10_binary/: the real STL10).

/** A positive integer from EXAMPLE_<name>, else `fallback`; anything else is an error naming the variable. */
export function setting(name: string, fallback: number): number {
  const raw = process.env[`EXAMPLE_${name}`];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`EXAMPLE_${name} must be a positive integer, got '${raw}'`);
  return n;
}

/** Where the examples write (EXAMPLE_OUT, default ./example-output). */
export const outDir = process.env.EXAMPLE_OUT || './example-output';

/** Runs an async main; an error prints its message and sets exit code 1. */
export function run(main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  });
}
