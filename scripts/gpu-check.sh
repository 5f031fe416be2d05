#!/usr/bin/env bash
# One prepared check of the CUDA backend on a bare GPU machine with no network:
#   facts -> node (PATH or .device/node.xz) -> node_modules (.device) -> addon build with CUDA (plain CMake, the same
#   CMakeLists.txt cmake-js drives) -> tsc -> backends() -> VGGNET_DEVICE=cuda jest -> distributed training
#   (scripts/gpu_dist_check.js: NCCL world of one, graph capture with the all-reduces inside, overlap, two ranks on one
#   GPU over gloo) -> GPU bench -> OUTDIR/summary.json
# Each phase is time-boxed and a failing phase is recorded, never fatal. Whole run: ~8 minutes typical (the bench, last,
# is cut at 4 minutes: bf16 rows first, fp32 last).
# Usage: scripts/gpu-check.sh OUTDIR        (make .device/ first on a machine with node: scripts/pack-device.sh)
set -uo pipefail
OUT="${1:?usage: scripts/gpu-check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
ROOT="$PWD"
T0=$(date +%s)
declare -A STATUS SECS
phase() {  # phase NAME TIMEOUT_S LOGFILE CMD...: runs CMD under timeout, logs, records status and seconds
  local name="$1" limit="$2" log="$3"; shift 3
  local t=$(date +%s)
  echo "== $name (limit ${limit}s) -> $log"
  timeout --kill-after=10 "$limit" bash -c "$*" > "$OUT/$log" 2>&1
  local rc=$?
  SECS[$name]=$(( $(date +%s) - t ))
  if [ $rc -eq 0 ]; then STATUS[$name]=ok; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then STATUS[$name]=timeout; else STATUS[$name]="fail($rc)"; fi
  echo "   $name: ${STATUS[$name]} in ${SECS[$name]}s"
  [ "${STATUS[$name]}" = ok ] || tail -n 25 "$OUT/$log" | sed 's/^/   | /'
}

# ---------------------------------------------------------------- facts first
{
  echo "### date: $(date -u)"; echo "### uname: $(uname -a)"
  echo "### nvidia-smi"; nvidia-smi 2>&1 | head -30
  echo "### torch"; python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "available", torch.cuda.is_available())' 2>&1
  echo "### nvidia python package lib dirs"
  python3 -c "import sys, os, glob
seen = set()
for p in sys.path:
    d = os.path.join(p, 'nvidia')
    if p and os.path.isdir(d) and d not in seen:
        seen.add(d)
        for lib in sorted(glob.glob(os.path.join(d, '*', 'lib'))): print(lib, ' '.join(sorted(os.listdir(lib)))[:300])
        for inc in sorted(glob.glob(os.path.join(d, '*', 'include'))): print(inc)" 2>&1
  echo "### nvcc"; (command -v nvcc || ls /usr/local/cuda*/bin/nvcc) 2>&1; nvcc --version 2>&1 | tail -2
  echo "### cmake / ninja / gcc"; cmake --version 2>&1 | head -1; ninja --version 2>&1; gcc --version 2>&1 | head -1
  echo "### glibc"; ldd --version 2>&1 | head -1
  echo "### node on PATH"; command -v node && node --version
  echo "### oneDNN"; ls /usr/include/oneapi/dnnl/dnnl.hpp /usr/lib/x86_64-linux-gnu/libdnnl* 2>&1 | head -3
  echo "### nproc $(nproc), mem: $(free -g 2>/dev/null | awk '/Mem/ {print $2 " GiB"}')"
} 2>&1 | tee "$OUT/facts.log"

# ---------------------------------------------------------------- toolchain from .device
mkdir -p .device/bin
if ! command -v node >/dev/null 2>&1; then
  if [ -f .device/node.xz ]; then xz -dc .device/node.xz > .device/bin/node && chmod +x .device/bin/node; fi
  export PATH="$ROOT/.device/bin:$PATH"
fi
export PATH="$ROOT/node_modules/.bin:$PATH"
if [ ! -d node_modules/jest ] && [ -f .device/node_modules.tar.xz ]; then
  echo "== unpacking node_modules"; tar -xJf .device/node_modules.tar.xz
fi
NODE_INC=""
if [ -f node_modules/node-api-headers/include/node_api.h ]; then NODE_INC="$ROOT/node_modules/node-api-headers/include"
elif [ -f /usr/include/node/node_api.h ]; then NODE_INC=/usr/include/node
elif [ -f .device/node-headers.tar.xz ]; then tar -C .device -xJf .device/node-headers.tar.xz; NODE_INC="$ROOT/.device/node"
fi
DNNL_ARGS=""
if [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ] && [ -f .device/dnnl.tar.xz ]; then
  tar -C .device -xJf .device/dnnl.tar.xz
  DNNL_ARGS="-DDNNL_INCLUDE_DIR=$ROOT/.device/dnnl/include -DDNNL_LIBRARY=$ROOT/.device/dnnl/lib/libdnnl.so -Ddnnl_DIR=/nonexistent"
  export LD_LIBRARY_PATH="$ROOT/.device/dnnl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${CUDA_HOME:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-13* /usr/local/cuda-12*; do [ -x "$d/bin/nvcc" ] && export CUDA_HOME="$d" && break; done
fi
[ -n "${CUDA_HOME:-}" ] && export PATH="$CUDA_HOME/bin:$PATH"
echo "node: $(command -v node) $(node --version 2>&1)  node headers: ${NODE_INC:-none}  CUDA_HOME: ${CUDA_HOME:-none}"

# ---------------------------------------------------------------- build
phase build 330 build.log "
  set -e
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVGGNET_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=\${GPU_CHECK_ARCHS:-90} \
    -DCMAKE_JS_INC='$NODE_INC' -DCMAKE_LIBRARY_OUTPUT_DIRECTORY='$ROOT/build/Release' $DNNL_ARGS
  ninja -C build
  ls -la build/Release/*.node"
CUDA_BUILT=false
grep -q "vggnet: building with CUDA" "$OUT/build.log" && CUDA_BUILT=true
grep -h "vggnet: building" "$OUT/build.log" | head -2
grep -h "vggnet: distributed engines" "$OUT/build.log" | head -1

phase tsc 120 tsc.log "node node_modules/typescript/bin/tsc -p tsconfig.json"

phase backends 30 backends.log "node -e \"
  const m = require('./dist/index.js');
  const b = typeof m.backends === 'function' ? m.backends() : m.backends;
  console.log(JSON.stringify(b, null, 1));\""
cat "$OUT/backends.log" | head -40

export VGGNET_DEVICE=cuda
# GPU_CHECK_JEST: jest arguments; default: the folders whose tests run on the GPU under VGGNET_DEVICE=cuda (the rest
# is device-independent and CI runs it; the browser test needs playwright-core, which pack-device leaves behind).
# jest.json stays outside OUTDIR: the device tool brings back at most 8 files, and the summary holds its counts.
export JEST_JSON="$(mktemp -d)/jest.json"
phase jest 200 jest.log "node node_modules/jest/bin/jest.js --ci --json --outputFile='$JEST_JSON' ${GPU_CHECK_JEST:-test/cuda test/ops test/model test/train --testPathIgnorePatterns dashboard -w 6}"
tail -n 8 "$OUT/jest.log"

# Distributed training (GPU_CHECK_DIST=0 skips it): NCCL with one rank, and two ranks sharing the GPU over gloo.
if [ "${GPU_CHECK_DIST:-1}" = 1 ]; then
  phase dist 120 dist.log "node scripts/gpu_dist_check.js"
  grep -v '^DIST_JSON' "$OUT/dist.log" | tail -n 12
  # Its results go into the summary (the device tool brings back at most 8 files): the log leaves OUTDIR.
  export DIST_LOG="$(mktemp -d)/dist.log"
  mv "$OUT/dist.log" "$DIST_LOG"
fi

# An op-level profile of vgg16 b64 bf16 (eager, each op device-synchronised; the warm-up's algorithm search left
# out): where the step's time goes; then each conv layer alone, TFLOP/s per direction. GPU_CHECK_PROFILE=0 skips it.
if [ "${GPU_CHECK_PROFILE:-1}" = 1 ]; then
  phase profile 90 profile.log "VGGNET_PROFILE=1 VGGNET_BENCH_NO_TORCH=1 VGGNET_BENCH_NO_DATA=1 VGGNET_BENCH_STEPS=10 VGGNET_BENCH_WARMUP=3 VGGNET_BENCH_CONFIGS=vgg16:64:bf16 node dist/cli/bench.js gpu; VGGNET_BENCH_STEPS=10 node dist/cli/bench.js gpu-layers"
  grep -A25 "op profile" "$OUT/profile.log" | head -30
  grep -A16 "^layer " "$OUT/profile.log"
fi
# Fewer steps than the default so every config fits the box; per config PyTorch runs first under its own limit.
# VGGNET_BENCH_TORCH_COMPILE=1 adds a torch.compile column (minutes of compilation: give the phase more time).
phase bench 240 bench.log "VGGNET_BENCH_STEPS=\${VGGNET_BENCH_STEPS:-6} VGGNET_BENCH_WARMUP=\${VGGNET_BENCH_WARMUP:-3} VGGNET_BENCH_TORCH_TIMEOUT=\${VGGNET_BENCH_TORCH_TIMEOUT:-110} node dist/cli/bench.js gpu"
grep -v '^BENCH_JSON' "$OUT/bench.log" | tail -n 20

# ---------------------------------------------------------------- summary
export OUT CUDA_BUILT T0
for k in build tsc backends jest dist profile bench; do export "STATUS_$k=${STATUS[$k]:-skipped}" "SECS_$k=${SECS[$k]:-0}"; done
python3 - <<'PY'
import json, os, re, subprocess, time
out = os.environ["OUT"]
def read(name):
    try:
        return open(os.path.join(out, name), errors="replace").read()
    except OSError:
        return ""
s = {"device": None, "driver": None, "cuda_built": os.environ["CUDA_BUILT"] == "true"}
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    if q:
        s["device"], s["driver"], s["memory"] = [x.strip() for x in q[0].split(",")]
except Exception as e:
    s["device_error"] = str(e)
s["phases"] = {k: {"status": os.environ.get("STATUS_" + k), "seconds": int(os.environ.get("SECS_" + k, 0))}
               for k in ["build", "tsc", "backends", "jest", "dist", "profile", "bench"]}
m = re.search(r"vggnet: building[^\n]*", read("build.log"))
s["build_line"] = m.group(0) if m else None
m = re.search(r"vggnet: distributed engines[^\n]*", read("build.log"))
s["engines_line"] = m.group(0) if m else None
try:
    dist_log = open(os.environ.get("DIST_LOG", ""), errors="replace").read()
except OSError:
    dist_log = ""
s["dist"] = [json.loads(l[len("DIST_JSON "):]) for l in dist_log.splitlines() if l.startswith("DIST_JSON ")]
try:
    s["backends"] = json.loads(read("backends.log"))
except Exception:
    s["backends"] = None
try:
    j = json.load(open(os.environ["JEST_JSON"]))
    s["tests"] = {"passed": j.get("numPassedTests"), "failed": j.get("numFailedTests"),
                  "skipped": j.get("numPendingTests"), "total": j.get("numTotalTests"),
                  "suites_failed": j.get("numFailedTestSuites")}
    s["failed_tests"] = [a.get("fullName") for r in j.get("testResults", []) for a in r.get("assertionResults", [])
                         if a.get("status") == "failed"][:40]
except Exception as e:
    # jest stopped before running tests (its globalSetup says why, e.g. no usable GPU): keep its reason
    m = re.search(r"reason: ([^\n]*)", read("jest.log"))
    s["tests"] = {"error": m.group(1) if m else "no jest.json: %s" % e}
bench = [json.loads(l[len("BENCH_JSON "):]) for l in read("bench.log").splitlines() if l.startswith("BENCH_JSON ")]
s["bench"] = bench
prof = [json.loads(l[len("BENCH_JSON "):]) for l in read("profile.log").splitlines() if l.startswith("BENCH_JSON ")]
s["profile"] = prof[0].get("profile") if prof else None
s["conv_layers"] = [json.loads(l[len("BENCH_LAYER_JSON "):]) for l in read("profile.log").splitlines() if l.startswith("BENCH_LAYER_JSON ")]
data = [json.loads(l[len("BENCH_DATA_JSON "):]) for l in read("bench.log").splitlines() if l.startswith("BENCH_DATA_JSON ")]
s["data_pipeline"] = data[0] if data else None
s["seconds"] = int(time.time()) - int(os.environ["T0"])
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("\n================ gpu-check summary ================")
print("device      %s (driver %s)" % (s["device"], s["driver"]))
print("cuda built  %s   %s" % (s["cuda_built"], s["build_line"]))
print("engines     %s" % s["engines_line"])
for d in s["dist"]:
    print("dist        %s" % json.dumps(d))
for k, v in s["phases"].items():
    print("%-11s %-12s %4ss" % (k, v["status"], v["seconds"]))
t = s["tests"]
if "error" in t:
    print("tests       not run: %s" % t["error"])
else:
    print("tests       passed %s, failed %s, skipped %s" % (t.get("passed"), t.get("failed"), t.get("skipped")))
for b in bench:
    print("bench       %-7s b%-3s %-5s ours %8s img/s  torch %8s img/s  ratio %s  peak %s MiB  %s%% of peak  %s" % (
        b.get("model"), b.get("batch"), b.get("precision"), b.get("imgPerSec"), b.get("torchImgPerSec"),
        b.get("ratio"), b.get("peakMiB"), b.get("peakFlopsPct"),
        "CUDA graph" if b.get("graphed") else "eager" + (" (%s)" % b["graphNote"] if b.get("graphNote") else "")))
    if b.get("torchCompiledImgPerSec") or b.get("torchCompiledError"):
        print("            torch.compile %s" % (b.get("torchCompiledImgPerSec") or b.get("torchCompiledError")))
if s["data_pipeline"]:
    d = s["data_pipeline"]
    print("data        %s img/s on %s threads (STL10 96² + GPU augmentation), fastest step %s img/s" % (d["imgPerSec"], d["workers"], d["fastestStepImgPerSec"]))
for p in s["profile"] or []:
    print("profile     %-28s %7.2f ms/step  %5.1f%%" % (p["op"], p["msPerStep"], p["pct"]))
for l in s["conv_layers"]:
    print("conv layer  %2d %4d->%-4d %3d²  TFLOP/s fwd %6s  bwd-data %6s  bwd-w %6s" % (
        l["layer"], l["cin"], l["cout"], l["size"], l["fwdTflops"], l["bwdDataTflops"], l["bwdWeightsTflops"]))
print("total       %ss; logs and summary.json in %s" % (s["seconds"], out))
PY
