#!/usr/bin/env python3
"""Dumps a PyTorch/torchvision reference for scripts/parity.js: a torchvision VGG's weights, a fixed input, and what
one training step gives (logits, loss, every gradient, parameters after SGD, BN running stats).

usage: python3 parity_torch.py OUT_DIR [vgg11|vgg11_bn] [train|eval|steps]
Writes OUT_DIR/<name>-<mode>-weights.safetensors (the model before the step) and -ref.safetensors (the results).
Needs torch + torchvision only (the safetensors files are written by hand, per the format spec)."""
import json
import os
import struct
import sys

import torch
import torchvision


def save(path, tensors, metadata=None):
    # The reference writer's layout: tensors sorted by dtype (I64 before F32) then name; header padded to 8 bytes.
    rank = {torch.int64: 13, torch.float32: 11}
    items = sorted(tensors.items(), key=lambda kv: (-rank[kv[1].dtype], kv[0]))
    header, off, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, t in items:
        b = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": "I64" if t.dtype == torch.int64 else "F32", "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "vgg11"
    mode = sys.argv[3] if len(sys.argv) > 3 else "eval"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    # dropout p=0 in train mode so both sides compute the same function (masks differ between frameworks)
    model = getattr(torchvision.models, name)(num_classes=10, dropout=0.0 if mode != "eval" else 0.5)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    save(os.path.join(out, f"{name}-{mode}-weights.safetensors"), sd)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3, 7])
    model.train(mode != "eval")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if mode == "steps":
        # 30 steps on 4 fixed batches: momentum, weight decay and BN running stats over many updates. lr 0.001:
        # at 0.01 the loss of this net at batch 8 jumps to 13 at step 2, a chaotic regime in which both frameworks'
        # float32 rounding differences grow ~10x a step (measured), so the curves part for reasons of arithmetic.
        for g in opt.param_groups:
            g["lr"] = 0.001
        xs = torch.randn(4, 8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        ys = torch.randint(0, 10, (4, 8), generator=torch.Generator().manual_seed(3))
        losses = []
        for s in range(30):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs[s % 4]), ys[s % 4])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        # The same 30 steps in float64 from the same start: the curve both float32 runs are measured against.
        m64 = getattr(torchvision.models, name)(num_classes=10, dropout=0.0).to(torch.float64)
        m64.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v for k, v in sd.items()})
        m64.train()
        o64 = torch.optim.SGD(m64.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        losses64 = []
        for s in range(30):
            o64.zero_grad()
            l64 = torch.nn.functional.cross_entropy(m64(xs[s % 4].to(torch.float64)), ys[s % 4])
            l64.backward()
            o64.step()
            losses64.append(l64.item())
        ref = {"inputs": xs, "labels": ys.to(torch.int64), "losses": torch.tensor(losses),
               "losses64": torch.tensor(losses64)}  # float64 run, stored as F32 (ample for 1e-4 comparisons)
        for k, v in model.state_dict().items():
            ref[f"after.{k}"] = v.detach().clone()
        save(os.path.join(out, f"{name}-{mode}-ref.safetensors"), ref)
        print(f"wrote {name}-{mode}: losses {losses[0]:.4f} -> {losses[-1]:.4f}")
        return
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward()
    ref = {"input": x, "labels": y.to(torch.int64), "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for k, p in model.named_parameters():
        ref[f"grad.{k}"] = p.grad.detach().clone()
    opt.step()
    for k, v in model.state_dict().items():
        ref[f"after.{k}"] = v.detach().clone()
    save(os.path.join(out, f"{name}-{mode}-ref.safetensors"), ref)
    print(f"wrote {name}-{mode}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
