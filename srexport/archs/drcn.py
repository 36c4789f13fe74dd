"""DRCN (Kim et al., 2016): one 3x3 convolution applied recursively with shared weights.

Embedding (2 convs) -> the shared inference conv applied `recursions` times -> after every recursion
the shared reconstruction net (2 convs, no final ReLU) plus the skip from the input gives an
intermediate prediction; the output is their learned weighted average. The recursion is a plain
Python loop and the predictions are stacked, so export unrolls it with one shared weight.
"""

import torch
from torch import nn

from ._registry import register
from .bicubic import MatlabBicubicUpsample

PAPER = "Kim et al., Deeply-Recursive Convolutional Network for Image Super-Resolution, CVPR 2016"


class DRCN(nn.Module):
    def __init__(self, scale: int, channels: int = 256, recursions: int = 16):
        super().__init__()
        self.scale = scale
        self.hparams = dict(channels=channels, recursions=recursions)
        self.upsample = MatlabBicubicUpsample(scale)
        self.embedding = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.inference = nn.Conv2d(channels, channels, 3, padding=1)
        self.reconstruction = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        self.ensemble_weights = nn.Parameter(torch.full((recursions,), 1.0 / recursions))

    def forward_with_intermediates(self, x):
        """Return (output, [prediction after each recursion]) for recursive supervision."""
        ilr = self.upsample(x)
        h = self.embedding(ilr)
        predictions = []
        for _ in range(self.hparams["recursions"]):
            h = torch.relu(self.inference(h))
            predictions.append(self.reconstruction(h) + ilr)
        stacked = torch.cat(predictions, dim=1)  # (N, D, H, W)
        w = self.ensemble_weights / self.ensemble_weights.sum()
        output = (stacked * w.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        return output, predictions

    def forward(self, x):
        return self.forward_with_intermediates(x)[0]


@register("drcn", paper=PAPER, upsampling="MATLAB bicubic inside the network, recursive residual ensemble",
          scale_free_weights=True)
def drcn(scale: int, **hparams) -> DRCN:
    return DRCN(scale, **hparams)
