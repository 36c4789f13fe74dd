"""VDSR (Kim et al., 2016): 20 3x3 convolutions learning the residual over the bicubic image."""

from torch import nn

from ._registry import register
from .bicubic import MatlabBicubicUpsample

PAPER = "Kim et al., Accurate Image Super-Resolution Using Very Deep Convolutional Networks, CVPR 2016"


class VDSR(nn.Module):
    def __init__(self, scale: int, depth: int = 20, channels: int = 64):
        super().__init__()
        self.scale = scale
        self.hparams = dict(depth=depth, channels=channels)
        self.upsample = MatlabBicubicUpsample(scale)
        layers = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.residual = nn.Sequential(*layers)

    def forward(self, x):
        ilr = self.upsample(x)
        return ilr + self.residual(ilr)


@register("vdsr", paper=PAPER, upsampling="MATLAB bicubic inside the network, plus a learned residual",
          scale_free_weights=True)
def vdsr(scale: int, **hparams) -> VDSR:
    return VDSR(scale, **hparams)
