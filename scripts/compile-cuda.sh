#!/usr/bin/env bash
# Compile-only check of every CUDA translation unit, without a GPU and without cuDNN/cuBLAS/NCCL (CI; .ci/run):
#   native/**/*.cu                         nvcc -c (ARCH, default sm_90), as cmake/cuda.cmake compiles the kernels
#   native/cuda/**/*.cc                    host code: c++ -fsyntax-only with -DVGG_WITH_CUDA=1
#   other native/**/*.cc with #if(def) VGG_WITH_CUDA or VGG_WITH_NCCL sections (the bindings, native/dist's CUDA
#                                          helpers and NCCL engine): the same, with -DVGG_WITH_NCCL=1 too
# Files are found by glob and by content, never listed, so files added or split later are covered.
# cuDNN, cuBLAS and NCCL come from test/native/compile_check/include (declarations of the API subset vggnet uses,
# with the documented signatures and values), searched BEFORE the toolkit, so a real cuDNN on a GPU machine is never
# picked up by accident; cuda_runtime.h, library_types.h, ... are the toolkit's own. The real build (CMakeLists.txt,
# cmake/cuda.cmake) never sees these headers. Host flags follow CMakeLists.txt (NAPI_VERSION=8, ...).
# Prints one line per file (ok/FAIL, compiler output indented below when there is any) and a count; exits 1 if any
# file fails. Without nvcc (NVCC, PATH, /usr/local/cuda/bin) it prints a skip line and exits 0.
# Usage: scripts/compile-cuda.sh [--host | --kernels] [--list] [ARCH] [FILE...]
#   --host / --kernels: only the host (.cc) or only the kernel (.cu) files; --list: print the files, compile nothing;
#   FILEs: check only these (e.g. the one being edited). COMPILE_CUDA_JOBS: parallel compiles (default: nproc).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
NAME=compile-cuda
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -z "$NVCC" ]; then echo "$NAME: skipped (no nvcc)"; exit 0; fi
ARCH=sm_90 KINDS=all LIST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --host) KINDS=host ;;
    --kernels) KINDS=kernels ;;
    --list) LIST=1 ;;
    sm_*|compute_*) ARCH="$1" ;;
    -*) echo "$NAME: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
CXX="${CXX:-c++}"
CHECK_INC="$ROOT/test/native/compile_check/include"
T0=$(date +%s.%N)

die() { echo "$NAME: $*" >&2; exit 2; }
CUDA_INC=""
for d in "${CUDA_HOME:-}/include" "$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include" /usr/local/cuda/include; do
  if [ -f "$d/cuda_runtime.h" ]; then CUDA_INC="$d"; break; fi
done
[ -n "$CUDA_INC" ] || die "no cuda_runtime.h next to $NVCC (set CUDA_HOME)"
[ -f "$CHECK_INC/cudnn.h" ] || die "missing $CHECK_INC/cudnn.h"

# Node-API headers, found as CMakeLists.txt / cmake-js find them (npm ci must have run).
NAPI_INC=""
for d in "$ROOT/node_modules/node-api-headers/include" /usr/include/node; do
  if [ -f "$d/node_api.h" ]; then NAPI_INC="$d"; break; fi
done
ADDON_INC="$(node -p "require('node-addon-api').include" 2>/dev/null | tr -d '"')"

HOST_FLAGS=(-std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-deprecated-declarations
  -DVGG_WITH_CUDA=1 -DVGG_WITH_NCCL=1 -DNAPI_VERSION=8 -DNODE_ADDON_API_CPP_EXCEPTIONS -DNODE_ADDON_API_CPP_EXCEPTIONS_ALL
  -DNODE_ADDON_API_DISABLE_DEPRECATED
  -I"$CHECK_INC" -I"$CUDA_INC" -I"$ROOT/native")
[ -n "$NAPI_INC" ] && HOST_FLAGS+=(-I"$NAPI_INC")
[ -n "$ADDON_INC" ] && HOST_FLAGS+=(-I"$ADDON_INC")
NVCC_FLAGS=(-std=c++17 -arch="$ARCH" --expt-relaxed-constexpr -I"$CHECK_INC" -I"$ROOT/native"
  -Xcompiler=-Wall,-Wno-unused-parameter)

# Translation units: by glob (.cu anywhere under native/, .cc under native/cuda) and by content (VGG_WITH_CUDA,
# VGG_WITH_NCCL).
if [ $# -gt 0 ]; then
  FILES=("$@")
else
  mapfile -t FILES < <({
    [ "$KINDS" = host ] || find native -name '*.cu'
    if [ "$KINDS" != kernels ]; then
      find native/cuda -name '*.cc'
      grep -rlE --include='*.cc' '^[[:space:]]*#[[:space:]]*(if|ifdef|ifndef|elif)\b.*VGG_WITH_(CUDA|NCCL)' native |
        grep -v '^native/cuda/'
    fi
  } | LC_ALL=C sort -u)
fi
[ ${#FILES[@]} -gt 0 ] || die "no CUDA translation units found under native/"
if [ "$LIST" = 1 ]; then printf '%s\n' "${FILES[@]}"; exit 0; fi

# The compile-check headers must be the ones found, whatever else the toolkit folder holds.
for h in cudnn.h cublas_v2.h nccl.h; do
  guard="VGG_COMPILE_CHECK_$(echo "${h%.h}" | tr 'a-z' 'A-Z')_H"
  if ! msg="$(printf '#include <%s>\n#ifndef %s\n#error "%s is not the compile-check header"\n#endif\n' \
      "$h" "$guard" "$h" | "$CXX" "${HOST_FLAGS[@]}" -fsyntax-only -x c++ - 2>&1)"; then
    echo "$msg" | head -5 | sed 's/^/  | /' >&2
    die "<$h> does not resolve to $CHECK_INC/$h"
  fi
done

OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
compile() {  # compile INDEX FILE: writes INDEX.log and INDEX.rc
  local i="$1" f="$2"
  case "$f" in
    *.cu) "$NVCC" "${NVCC_FLAGS[@]}" -c "$f" -o "$OUT/$i.o" ;;
    *.cc|*.cpp) "$CXX" "${HOST_FLAGS[@]}" -c "$f" -o "$OUT/$i.o" ;;
    *) echo "not a .cu or .cc file"; false ;;
  esac > "$OUT/$i.log" 2>&1
  echo $? > "$OUT/$i.rc"
}
JOBS="${COMPILE_CUDA_JOBS:-$(nproc 2>/dev/null || echo 2)}"
running=0
for i in "${!FILES[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
  compile "$i" "${FILES[$i]}" &
  running=$((running + 1))
done
wait
fail=0
for i in "${!FILES[@]}"; do
  if [ "$(cat "$OUT/$i.rc" 2>/dev/null)" = 0 ]; then echo "ok   ${FILES[$i]}"; else echo "FAIL ${FILES[$i]}"; fail=$((fail + 1)); fi
  sed 's/^/  | /' "$OUT/$i.log"
done
# Link check over the objects: every symbol of the backend's own namespaces (vgg::cuda, vgg::cuk) that one unit uses
# must be defined by another (a method declared in backend.h but defined nowhere fails here, not on a GPU machine).
if [ "$fail" -eq 0 ] && [ $# -eq 0 ] && [ "$KINDS" = all ] && command -v nm >/dev/null 2>&1; then
  defined="$(nm -C --defined-only "$OUT"/*.o 2>/dev/null | awk '{ $1 = ""; $2 = ""; sub(/^  /, ""); print }' | sort -u)"
  missing="$(nm -C --undefined-only "$OUT"/*.o 2>/dev/null | sed -E 's/^ *U //' | grep -E '^vgg::(cuda|cuk)::' | sort -u |
    comm -23 - <(printf '%s\n' "$defined"))"
  if [ -n "$missing" ]; then
    echo "FAIL link check: used but defined in no CUDA unit:"; printf '%s\n' "$missing" | sed 's/^/  | /'
    fail=$((fail + 1))
  else
    echo "ok   link check (vgg::cuda, vgg::cuk symbols all defined)"
  fi
fi
n=${#FILES[@]}
secs=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "$NAME: $((n - fail)) of $n compiled ($ARCH, ${secs}s, $JOBS at a time)"
[ "$fail" -eq 0 ]
