#!/usr/bin/env bash
# Builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ (the normal build in build/ is
# left alone) and runs the whole jest suite against it, with the sanitizer runtimes preloaded into node (node itself
# is not instrumented, so the runtimes must be loaded first). Any ASan report or UB aborts the test process.
#   scripts/test-asan.sh [jest args...]      (npm run test:asan -- test/robustness/hostile.test.ts)
# Leak detection is off: V8 and node keep memory at exit by design; our leaks are caught by test/robustness/memory.test.ts.
set -euo pipefail
cd "$(dirname "$0")/.."

export VGGNET_BUILD_DIR=build-asan
# A folder configured by the old Debug-only sanitizer build puts the library in Debug/: start it afresh.
if grep -qs 'CMAKE_BUILD_TYPE:STRING=Debug' build-asan/CMakeCache.txt; then rm -rf build-asan; fi
if [ "${VGGNET_ASAN_SKIP_BUILD:-0}" != "1" ] || [ ! -f build-asan/Release/vggnet.node ]; then
  VGGNET_SANITIZE=1 node scripts/build-native.js --force
fi
npx tsc -p tsconfig.json   # child-process tests run dist/

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
for lib in "$asan" "$ubsan"; do
  [ -f "$lib" ] || { echo "test-asan: $lib not found (install gcc's libasan/libubsan)" >&2; exit 1; }
done

export VGGNET_ADDON="$PWD/build-asan/Release/vggnet.node"
export LD_PRELOAD="$asan $ubsan"
# detect_leaks=0: see above; abort on the first report (an allocation of an absurd size is a report too). A 64 MiB
# quarantine (default 256) keeps the memory tests' RSS bounds meaningful; test/robustness/memory.test.ts allows for it.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:quarantine_size_mb=64"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# Child processes (CLI, crash-safety and memory tests) inherit these variables, so they run sanitized as well.
exec npx jest "$@"
