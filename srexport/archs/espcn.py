"""ESPCN (Shi et al., 2016): convolutions on the LR image, then a sub-pixel (PixelShuffle) layer."""

from torch import nn

from ._registry import register

PAPER = "Shi et al., Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel CNN, CVPR 2016"


class ESPCN(nn.Module):
    def __init__(self, scale: int, n1: int = 64, n2: int = 32):
        super().__init__()
        self.scale = scale
        self.hparams = dict(n1=n1, n2=n2)
        self.body = nn.Sequential(
            nn.Conv2d(1, n1, 5, padding=2), nn.Tanh(),
            nn.Conv2d(n1, n2, 3, padding=1), nn.Tanh(),
            nn.Conv2d(n2, scale * scale, 3, padding=1),  # no activation before the shuffle
        )
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.body(x))


@register("espcn", paper=PAPER, upsampling="sub-pixel convolution (PixelShuffle / DepthToSpace)")
def espcn(scale: int, **hparams) -> ESPCN:
    return ESPCN(scale, **hparams)
