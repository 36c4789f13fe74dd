"""Multiply-adds of a network for a given input, counted from its layers' real output shapes."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .archs.bicubic import MatlabBicubicUpsample


def macs(model: nn.Module, lr_h: int, lr_w: int) -> int:
    """Multiply-adds of one forward pass on a (1, 1, lr_h, lr_w) input (convolutions, transposed
    convolutions and the internal bicubic upsampler; activations and additions are not counted).
    Runs on the meta device, so it costs nothing even at 1080p."""
    meta = copy.deepcopy(model).to("meta")
    total = 0

    def count(module, args, output):
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a full kernel
            k = math.prod(module.kernel_size)
            total += args[0].numel() * module.out_channels // module.groups * k
        elif isinstance(module, nn.Conv2d):
            k = math.prod(module.kernel_size)
            total += output.numel() * module.in_channels // module.groups * k
        elif isinstance(module, MatlabBicubicUpsample):
            total += output.numel() * 25  # one 5x5 tap set per output pixel

    handles = [m.register_forward_hook(count) for m in meta.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, MatlabBicubicUpsample))]
    try:
        with torch.no_grad():
            meta(torch.empty(1, 1, lr_h, lr_w, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def macs_for_output(model: nn.Module, out_w: int = 1280, out_h: int = 720) -> int:
    """Multiply-adds to produce one out_w x out_h frame (LR size rounded up to whole pixels)."""
    s = model.scale
    return macs(model, math.ceil(out_h / s), math.ceil(out_w / s))
