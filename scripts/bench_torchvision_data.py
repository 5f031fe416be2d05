#!/usr/bin/env python3
"""The torchvision twin of `npm run bench -- data`: STL10-shaped 96x96 images read from an STL10 .bin file (the same
files the vggnet bench reads), RandomResizedCrop(224) + RandomHorizontalFlip + ColorJitter(0.4, 0.4, 0.4) + ToTensor
+ Normalize on PIL images (torchvision's STL10 hands out PIL images), DataLoader(batch_size=64, num_workers=2).
Prints one JSON line: {"images_per_s": ..., "images": ..., "seconds": ...}."""
import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
import torchvision.transforms as T


class Stl10Bin(Dataset):
    """Like torchvision.datasets.STL10 (which insists on the official files' md5): memory-mapped X, PIL per item."""

    def __init__(self, x_path, transform):
        raw = np.memmap(x_path, dtype=np.uint8, mode="r")
        self.data = raw.reshape(-1, 3, 96, 96)
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        img = np.ascontiguousarray(np.transpose(self.data[i], (2, 1, 0)))  # column-major CHW -> HWC
        return self.transform(Image.fromarray(img)), 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--x", required=True, help="an STL10 *_X.bin file")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    torch.set_num_threads(1)
    tf = T.Compose([T.RandomResizedCrop(a.size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = Stl10Bin(a.x, tf)
    loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers, drop_last=True,
                        persistent_workers=a.workers > 0)
    need = max(1, a.images // a.batch_size)
    it = iter(loader)
    next(it)  # warm-up: workers started, first batch
    n, t0 = 0, time.perf_counter()
    done = 0
    while done < need:
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += x.shape[0]
        done += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_s": n / dt, "images": n, "seconds": dt, "torch": torch.__version__,
                      "threads": os.cpu_count()}))


if __name__ == "__main__":
    main()
