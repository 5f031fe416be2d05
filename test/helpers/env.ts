// Runs code with an environment variable set (the CPU paths' switches: VGGNET_TRAIN_FOLD, VGGNET_POOLED_GRAD,
// VGGNET_DEFERRED_SGD, ...), restoring it afterwards.

/** fn() with process.env[name] = value, the previous value (or its absence) restored after. */
export function withEnv<T>(name: string, value: string, fn: () => T): T {
  const prev = process.env[name];
  process.env[name] = value;
  try {
    return fn();
  } finally {
    if (prev === undefined) delete process.env[name];
    else process.env[name] = prev;
  }
}
