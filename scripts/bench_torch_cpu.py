#!/usr/bin/env python3
"""PyTorch side of `npm run bench -- cpu`: torchvision VGG train step (forward, cross-entropy, backward, SGD with
momentum and weight decay) and forward pass on the CPU, fp32, median of --steps timed steps after --warmup.
Prints one JSON line per case: {"model","batch","size","train_img_s","fwd_img_s"}."""
import argparse
import json
import statistics
import time

import torch
import torchvision

ap = argparse.ArgumentParser()
ap.add_argument("--cases", required=True, help="model:batch:size,...")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(1)
for case in a.cases.split(","):
    name, batch, size = case.split(":")
    batch, size = int(batch), int(size)
    m = getattr(torchvision.models, name)()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    m.eval()
    fwd = []
    with torch.no_grad():
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            m(x)
            if i >= a.warmup:
                fwd.append(time.perf_counter() - t)
    print(json.dumps({"model": name, "batch": batch, "size": size, "torch": torch.__version__,
                      "train_img_s": batch / statistics.median(times), "fwd_img_s": batch / statistics.median(fwd)}),
          flush=True)
