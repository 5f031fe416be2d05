#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a bare GPU machine with no network into the git-ignored .device/:
#   node.xz                 this machine's node binary (official builds are self-contained)
#   node_modules.tar.xz     node_modules (build + tests: node-addon-api, cmake-js, jest, ts-jest, typescript), less
#                           the dev-only onnxruntime-node and playwright-core
#   node-headers.tar.xz     /usr/include/node (node_api.h for the addon build), when node-api-headers is absent
#   dnnl.tar.xz             oneDNN's headers and shared libraries (+ libOpenCL, libgomp) for the CPU backend
# The working tree plus .device must stay under 64 MiB; the sizes are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
XZ="xz -T0 -9"
echo "pack-device: node $(node --version)"
$XZ -c "$(readlink -f "$(command -v node)")" > .device/node.xz
# Dev-only packages stay behind: onnxruntime-node alone is ~290 MiB, over the device's 64 MiB carry. Only the ONNX
# and browser tests load them, and the GPU check runs neither (GPU_CHECK_JEST names the folders it runs).
tar --exclude=node_modules/onnxruntime-node --exclude=node_modules/onnxruntime-common \
    --exclude=node_modules/playwright-core -cf - node_modules | $XZ > .device/node_modules.tar.xz
if [ ! -f node_modules/node-api-headers/include/node_api.h ] && [ -d /usr/include/node ]; then
  tar -C /usr/include -cf - node | $XZ > .device/node-headers.tar.xz
fi
DNNL_LIB="$(readlink -f /usr/lib/x86_64-linux-gnu/libdnnl.so 2>/dev/null || true)"
if [ -n "$DNNL_LIB" ] && [ -d /usr/include/oneapi ]; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/dnnl/include" "$tmp/dnnl/lib"
  cp -a /usr/include/oneapi "$tmp/dnnl/include/"
  cp -a /usr/include/dnnl*.h* "$tmp/dnnl/include/" 2>/dev/null || true
  cp -L "$DNNL_LIB" "$tmp/dnnl/lib/$(basename "$DNNL_LIB")"
  ( cd "$tmp/dnnl/lib" && ln -sf "$(basename "$DNNL_LIB")" libdnnl.so.2 && ln -sf libdnnl.so.2 libdnnl.so )
  for l in libOpenCL.so.1 libgomp.so.1; do
    p="$(ldconfig -p | awk -v l="$l" '$1 == l && !f { print $NF; f = 1 }')"  # no early exit: pipefail would see SIGPIPE
    [ -n "$p" ] && cp -L "$p" "$tmp/dnnl/lib/$l"
  done
  tar -C "$tmp" -cf - dnnl | $XZ > .device/dnnl.tar.xz
fi
grep -qx '/.device/' .gitignore 2>/dev/null || echo '/.device/' >> .gitignore
du -b .device/* | awk '{ printf "%8.1f MiB  %s\n", $1 / 1048576, $2 }'
du -cb .device | tail -1 | awk '{ printf "pack-device: .device is %.1f MiB\n", $1 / 1048576 }'
