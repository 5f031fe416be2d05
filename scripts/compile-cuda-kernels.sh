#!/usr/bin/env bash
# Compile-only check of the CUDA backend's own kernels (native/cuda/*.cu, which include no cuDNN/cuBLAS header)
# and of the runtime-only host files (native/cuda/memory.cc, graph.cc). Needs nvcc; prints a skip line and exits 0 without it.
# Used by .ci/run. Usage: scripts/compile-cuda-kernels.sh [arch, default sm_90]
set -uo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -z "$NVCC" ]; then echo "compile-cuda-kernels: skipped (no nvcc)"; exit 0; fi
ARCH="${1:-sm_90}"
OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
CUDA_INC=""
for d in "${CUDA_HOME:-}/include" "$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include" /usr/local/cuda/include; do
  if [ -f "$d/cuda_runtime.h" ]; then CUDA_INC="$d"; break; fi
done
fail=0; n=0
for f in native/cuda/*.cu; do
  n=$((n + 1))
  if "$NVCC" -std=c++17 -arch="$ARCH" -Inative -Xcompiler=-Wall,-Wno-unused-parameter -c "$f" -o "$OUT/$(basename "$f").o"; then
    echo "ok   $f"
  else
    echo "FAIL $f"; fail=$((fail + 1))
  fi
done
for f in native/cuda/memory.cc native/cuda/graph.cc; do
  n=$((n + 1))
  if ${CXX:-c++} -std=c++17 -Wall -Wextra -Wno-unused-parameter -fsyntax-only -I"$CUDA_INC" -Inative "$f"; then
    echo "ok   $f"
  else
    echo "FAIL $f"; fail=$((fail + 1))
  fi
done
echo "compile-cuda-kernels: $((n - fail)) of $n compiled"
[ "$fail" -eq 0 ]
