"""FSRCNN (Dong et al., 2016): feature extraction, shrinking, mapping, expanding on the LR image,
then a 9x9 ConvTranspose with stride = scale. A PReLU follows every convolution."""

from torch import nn

from ._registry import register

PAPER = "Dong et al., Accelerating the Super-Resolution Convolutional Neural Network, ECCV 2016"


def _conv_prelu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.PReLU(cout)]


class FSRCNN(nn.Module):
    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.scale = scale
        self.hparams = dict(d=d, s=s, m=m)
        layers = _conv_prelu(1, d, 5) + _conv_prelu(d, s, 1)
        for _ in range(m):
            layers += _conv_prelu(s, s, 3)
        layers += _conv_prelu(s, d, 1)
        self.body = nn.Sequential(*layers)
        # output = (I-1)*s + 9 - 2*4 + (s-1) = s*I exactly; without output_padding it is one pixel short.
        self.deconv = nn.ConvTranspose2d(d, 1, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x):
        return self.deconv(self.body(x))


@register("fsrcnn", paper=PAPER, upsampling="9x9 ConvTranspose2d, stride = scale")
def fsrcnn(scale: int, **hparams) -> FSRCNN:
    return FSRCNN(scale, **hparams)


@register("fsrcnn_s", paper=PAPER, upsampling="9x9 ConvTranspose2d, stride = scale")
def fsrcnn_s(scale: int, **hparams) -> FSRCNN:
    return FSRCNN(scale, **{"d": 32, "s": 5, "m": 1, **hparams})
