#!/usr/bin/env python3
"""Writes test/fixtures/pth/: small state dicts saved by PyTorch itself (Debian's python3-torch 1.13), in the zip
format and in the legacy stream format (_use_new_zipfile_serialization=False) that torchvision's 2017 VGG files use.
test/pth.test.ts computes the same values in TypeScript and compares. Run once; the files are committed."""
import collections
import os
import torch

out = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'pth')
os.makedirs(out, exist_ok=True)

# A module's state dict carries an OrderedDict with a _metadata attribute (pickled with BUILD).
m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
with torch.no_grad():
    m[0].weight.copy_(torch.arange(6, dtype=torch.float32).reshape(3, 2, 1, 1) / 4)
    m[0].bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    m[1].running_mean.copy_(torch.tensor([0.25, 0.5, 0.75]))
    m[1].num_batches_tracked.fill_(7)
d = m.state_dict()
base = torch.arange(10, dtype=torch.float32) * 0.5
d['f32'] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 7
d['f64_t'] = (torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3).t()  # non-contiguous: strides (1, 3)
d['f16'] = torch.tensor([0.5, -1.25, 65504.0, 2 ** -24], dtype=torch.float16)
d['bf16'] = torch.tensor([1.0, -3.5, 2 ** 100, 0.0078125], dtype=torch.bfloat16)
d['i64'] = torch.tensor([-3, 0, 2 ** 40], dtype=torch.int64)
d['i32'] = torch.tensor([[1, -2], [3, 2 ** 30]], dtype=torch.int32)
d['u8'] = torch.tensor([0, 7, 255], dtype=torch.uint8)
d['base'] = base
d['view'] = base[3:7]  # shares base's storage at offset 3
d['param'] = torch.nn.Parameter(torch.tensor([[2.0, 4.0]]))  # pickled with _rebuild_parameter
torch.save(d, os.path.join(out, 'state_zip.pth'))
torch.save(d, os.path.join(out, 'state_legacy.pth'), _use_new_zipfile_serialization=False)
