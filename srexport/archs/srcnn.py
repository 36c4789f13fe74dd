"""SRCNN (Dong et al., 2014): three convolutions on the bicubic-upscaled image.

Same-size padding (the common deployment choice) so the output is exactly scale x the input.
"""

from torch import nn

from ._registry import register
from .bicubic import MatlabBicubicUpsample

PAPER = "Dong et al., Image Super-Resolution Using Deep Convolutional Networks, ECCV 2014 / TPAMI 2016"


class SRCNN(nn.Module):
    def __init__(self, scale: int, f1: int = 9, f2: int = 1, f3: int = 5, n1: int = 64, n2: int = 32):
        super().__init__()
        self.scale = scale
        self.hparams = dict(f1=f1, f2=f2, f3=f3, n1=n1, n2=n2)
        self.upsample = MatlabBicubicUpsample(scale)
        self.features = nn.Sequential(
            nn.Conv2d(1, n1, f1, padding=f1 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(n1, n2, f2, padding=f2 // 2), nn.ReLU(inplace=True),
        )
        self.reconstruction = nn.Conv2d(n2, 1, f3, padding=f3 // 2)

    def forward(self, x):
        return self.reconstruction(self.features(self.upsample(x)))


@register("srcnn", paper=PAPER, upsampling="MATLAB bicubic inside the network, then 9-1-5 convolutions",
          scale_free_weights=True)
def srcnn(scale: int, **hparams) -> SRCNN:
    return SRCNN(scale, **hparams)


@register("srcnn_955", paper=PAPER, upsampling="MATLAB bicubic inside the network, then 9-5-5 convolutions",
          scale_free_weights=True)
def srcnn_955(scale: int, **hparams) -> SRCNN:
    return SRCNN(scale, **{"f2": 5, **hparams})
