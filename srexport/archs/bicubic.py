"""MATLAB-compatible bicubic upscaling built from standard convolution ops.

MATLAB's `imresize(x, s, 'bicubic')` uses the Keys cubic (a = -0.5), maps output pixel u to input
coordinate (u + 0.5) / s - 0.5 and mirrors borders half-sample symmetrically. For an integer
scale every output pixel in phase p (u = s*i + p) sits at offset d_p = (p + 0.5) / s - 0.5 from
input pixel i and takes the five input pixels i-2..i+2. So upscaling is: a symmetric pad of two
pixels, one 5x5 convolution with s*s output channels (one per 2-D phase), and PixelShuffle
(DepthToSpace in ONNX). The pad is built from slices and concatenation because ONNX `Pad` has
no symmetric mode; doing it in two one-pixel steps keeps it exact for 1-pixel-wide images too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import keys_cubic


def phase_weights(scale: int) -> np.ndarray:
    """(scale, 5) float64 tap weights for taps at offsets -2..2, one row per output phase."""
    offsets = (np.arange(scale) + 0.5) / scale - 0.5
    taps = np.arange(-2, 3)
    w = keys_cubic(offsets[:, None] - taps[None, :])
    return w / w.sum(axis=1, keepdims=True)  # MATLAB normalises each row


def symmetric_pad2(x: torch.Tensor) -> torch.Tensor:
    """Pad H and W by two pixels with MATLAB's half-sample symmetric rule (… x1 x0 | x0 x1 …)."""
    for dim in (2, 3):
        # Step 1: one pixel, which is edge replication.
        x = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, x.shape[dim] - 1, 1)], dim)
        # Step 2: the next mirrored pixel is original x1 (index 2 now), or x0 again if width is 1.
        n = x.shape[dim]
        x = torch.cat([x.narrow(dim, 2, 1), x, x.narrow(dim, n - 3, 1)], dim)
    return x


class MatlabBicubicUpsample(nn.Module):
    """(N, 1, H, W) -> (N, 1, s*H, s*W), equal to MATLAB imresize(x, s, 'bicubic')."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        w1d = phase_weights(scale)
        w2d = np.einsum("pi,qj->pqij", w1d, w1d).reshape(scale * scale, 1, 5, 5)
        # Not persistent: derived from `scale`, so checkpoints need not carry it.
        self.register_buffer("weight", torch.from_numpy(w2d).float(), persistent=False)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = nn.functional.conv2d(symmetric_pad2(x), self.weight.to(x.dtype))
        return self.shuffle(phases)
