/**
 * Under AddressSanitizer (npm run test:asan) freed memory sits in ASan's quarantine (256 MiB unless ASAN_OPTIONS sets
 * quarantine_size_mb) before it is reused, so RSS grows by up to that much more; RSS bounds add this (0 otherwise).
 */
export function asanQuarantineMiB(): number {
  if (!(process.env.LD_PRELOAD ?? '').includes('libasan')) return 0;
  const m = /quarantine_size_mb=(\d+)/.exec(process.env.ASAN_OPTIONS ?? '');
  return m ? Number(m[1]) : 256;
}
