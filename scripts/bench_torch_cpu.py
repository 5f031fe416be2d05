#!/usr/bin/env python3
"""PyTorch side of `npm run bench -- cpu`: torchvision VGG train step (forward, cross-entropy, backward, SGD with
momentum and weight decay) and forward pass on the CPU, median of --steps timed steps after --warmup, in fp32 and
(--bf16) under torch.autocast('cpu', dtype=torch.bfloat16), PyTorch's own bf16 path, and (--int8) the forward of
the model quantized by PyTorch's own post-training static quantization (FX graph mode, the default qconfig mapping of
its quantized engine, calibrated on the input batch: the same recipe as ours).
First prints one JSON line {"blas": ...} saying which BLAS library this PyTorch is running on (read from the
process's mapped libraries: Debian's python3-torch runs on whatever libblas.so.3 points to, its build string
BLAS_INFO=generic says nothing about that) and which allocator it runs on (glibc's malloc, or a jemalloc/tcmalloc
the caller preloaded), then one JSON line per case:
{"model","batch","size","train_img_s","fwd_img_s"[,"train_bf16_img_s","fwd_bf16_img_s"][,"fwd_int8_img_s"]}."""
import argparse
import json
import os
import statistics
import time

import torch
import torchvision


def blas_in_use():
    """{"kind": "openblas"|"mkl"|"blis"|"reference"|"unknown", "libs": [paths]} from /proc/self/maps."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6:
                    continue
                base = os.path.basename(parts[5])
                if any(k in base for k in ("openblas", "mkl_", "libmkl", "blis", "libblas", "libcblas", "atlas")):
                    libs.add(os.path.realpath(parts[5]))
    except OSError:
        pass
    joined = " ".join(sorted(libs))
    if "openblas" in joined:
        kind = "openblas"
    elif "mkl" in joined:
        kind = "mkl"
    elif "blis" in joined:
        kind = "blis"
    elif "atlas" in joined:
        kind = "atlas"
    elif "libblas" in joined:
        kind = "reference"  # Debian's netlib libblas3 (/usr/lib/<triplet>/blas/libblas.so.3)
    else:
        kind = "unknown"
    return {"kind": kind, "libs": sorted(libs)}


def allocator_in_use():
    """"jemalloc" | "tcmalloc" | "glibc malloc": a preloaded allocator shows in /proc/self/maps."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc"):
        if "lib" + name in maps:
            return name
    return "glibc malloc"


def time_case(name, batch, size, steps, warmup, bf16):
    torch.manual_seed(1)
    m = getattr(torchvision.models, name)()
    opt = torch.optim.SGD(m.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)  # as lib/bench/cpu.ts
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))

    def train_step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            m(x)

    def median_s(fn):
        times = []
        for i in range(warmup + steps):
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    m.train()
    train = median_s(train_step)
    m.eval()
    fwd = median_s(forward)
    return batch / train, batch / fwd


def time_int8_forward(name, batch, size, steps, warmup):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(1)
    m = getattr(torchvision.models, name)().eval()
    x = torch.randn(batch, 3, size, size)
    prepared = prepare_fx(m, get_default_qconfig_mapping(torch.backends.quantized.engine), example_inputs=(x,))
    with torch.no_grad():
        prepared(x)
    q = convert_fx(prepared)
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            t = time.perf_counter()
            q(x)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


ap = argparse.ArgumentParser()
ap.add_argument("--cases", required=True, help="model:batch:size,...")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--bf16", action="store_true", help="also time under torch.autocast(bfloat16)")
ap.add_argument("--int8", action="store_true", help="also time the int8-quantized model's forward")
a = ap.parse_args()
torch.set_num_threads(a.threads)
print(json.dumps({"blas": blas_in_use(), "allocator": allocator_in_use(), "torch": torch.__version__,
                  "mkldnn_bf16": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
                  "quantized_engine": torch.backends.quantized.engine}),
      flush=True)
for case in a.cases.split(","):
    name, batch, size = case.split(":")
    batch, size = int(batch), int(size)
    out = {"model": name, "batch": batch, "size": size}
    out["train_img_s"], out["fwd_img_s"] = time_case(name, batch, size, a.steps, a.warmup, False)
    if a.bf16:
        out["train_bf16_img_s"], out["fwd_bf16_img_s"] = time_case(name, batch, size, a.steps, a.warmup, True)
    if a.int8:
        out["fwd_int8_img_s"] = time_int8_forward(name, batch, size, a.steps, a.warmup)
    print(json.dumps(out), flush=True)
