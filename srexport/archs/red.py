"""RED (Mao et al., 2016), the LR-input variant: a symmetric encoder-decoder of 3x3 convolutions and
3x3 ConvTranspose layers with additive skips every `skip_step` layers, then a ConvTranspose with
stride = scale to upsample.

The final ConvTranspose uses kernel scale + 2 and padding 1, so output = (I-1)*s + s + 2 - 2 = s*I
exactly and every output pixel is covered by at least one input pixel (a 3x3 kernel at stride 4
would leave every fourth row and column to the bias alone).
"""

from torch import nn

from ._registry import register

PAPER = "Mao et al., Image Restoration Using Very Deep Convolutional Encoder-Decoder Networks with Symmetric Skip Connections, NIPS 2016"


class RED(nn.Module):
    def __init__(self, scale: int, channels: int = 32, depth: int = 5, skip_step: int = 2):
        super().__init__()
        self.scale = scale
        self.hparams = dict(channels=channels, depth=depth, skip_step=skip_step)
        self.encoder = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1) for i in range(depth)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(channels, channels, 3, padding=1) for _ in range(depth)
        )
        self.upsample = nn.ConvTranspose2d(channels, 1, scale + 2, stride=scale, padding=1)

    def forward(self, x):
        depth, step = self.hparams["depth"], self.hparams["skip_step"]
        skips = {}
        for i, conv in enumerate(self.encoder, start=1):
            x = conv(x).relu()
            if i % step == 0 and i < depth:
                skips[i] = x
        for j, deconv in enumerate(self.decoder, start=1):
            x = deconv(x)
            mirror = depth - j  # decoder layer j mirrors encoder layer depth - j
            if mirror in skips:
                x = x + skips[mirror]
            x = x.relu()
        return self.upsample(x)


@register("red", paper=PAPER, upsampling="ConvTranspose2d with stride = scale after the encoder-decoder")
def red(scale: int, **hparams) -> RED:
    return RED(scale, **hparams)
