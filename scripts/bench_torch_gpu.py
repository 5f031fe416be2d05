#!/usr/bin/env python3
"""PyTorch reference for `npm run bench -- gpu`: the same VGG training step on the same GPU.

eager mode, cudnn.benchmark=True, channels_last, SGD(momentum 0.9, wd 5e-4); 'bf16' = autocast(bfloat16),
'tf32' = TF32 allowed, 'fp32' = TF32 off. Prints one JSON line per config:
  {"model": "vgg16", "batch": 64, "precision": "bf16", "imgPerSec": ..., "peakMiB": ...}
--compile: the model through torch.compile (default mode), its compilation inside the warm-up steps.
Usage: bench_torch_gpu.py --configs vgg16:64:fp32,vgg16:64:bf16 [--steps 10] [--warmup 3] [--compile]
"""
import argparse, json, sys, time

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="vgg16:64:fp32,vgg16:64:tf32,vgg16:64:bf16,vgg19:32:fp32,vgg19:32:tf32,vgg19:32:bf16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    try:
        import torch, torchvision  # noqa: F401
    except Exception as e:
        print(json.dumps({"error": "torch/torchvision not importable: %s" % e})); return 0
    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch has no CUDA device"})); return 0
    import torchvision.models as tvm
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    for spec in a.configs.split(","):
        name, batch, prec = spec.split(":")
        batch = int(batch)
        try:
            torch.backends.cuda.matmul.allow_tf32 = prec != "fp32"
            torch.backends.cudnn.allow_tf32 = prec != "fp32"
            torch.manual_seed(0)
            model = getattr(tvm, name)(num_classes=1000).to(dev).to(memory_format=torch.channels_last).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            if a.compile:
                model = torch.compile(model)
            x = torch.randn(batch, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
            y = torch.randint(0, 1000, (batch,), device=dev)
            lossf = torch.nn.CrossEntropyLoss()
            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    out = model(x)
                loss = lossf(out.float(), y)
                loss.backward()
                opt.step()
                return loss
            for _ in range(a.warmup):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            for _ in range(a.steps):
                loss = step()
            loss.item()
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            r = {"model": name, "batch": batch, "precision": prec, "imgPerSec": round(batch * a.steps / dt, 1),
                 "peakMiB": round(torch.cuda.max_memory_allocated() / 2**20), "torch": torch.__version__,
                 "compiled": a.compile}
            del model, opt, x, y
            torch.cuda.empty_cache()
        except Exception as e:  # one failing config must not hide the others
            r = {"model": name, "batch": batch, "precision": prec, "error": str(e)[:300]}
            torch.cuda.empty_cache()
        print(json.dumps(r), flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
