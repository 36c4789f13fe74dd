"""The output side of upscaling an 8-bit colour picture as one ONNX Runtime graph.

After the network has produced Y at the output size, Cb and Cr are upscaled by MATLAB bicubic,
the three planes go back to RGB (the exact inverse of MATLAB's `rgb2ycbcr`) and are rounded to
8 bits and interleaved. Done with NumPy and PyTorch this took 50-60 ms for a 1920x1080 output on
2 cores, nearly as long as ESPCN itself; as one ONNX Runtime graph (bicubic convolution, a 1x1
convolution for the colour matrix, rounding and the HWC transpose) it takes about 23 ms. Values equal the float64 path except for a pixel now and then one level off
where float32 rounding lands on the other side of .5.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
from torch import nn

from .data import _RGB_MATRIX, _YCBCR_OFFSET


class YCbCrToRGB8(nn.Module):
    """(Y (1, 1, sH, sW) in [0, 1], CbCr (2, 1, H, W) in [0, 255]) -> RGB uint8 (sH, sW, 3)."""

    def __init__(self, scale: int):
        super().__init__()
        from .archs import MatlabBicubicUpsample

        self.bicubic = MatlabBicubicUpsample(scale)
        matrix = torch.tensor(_RGB_MATRIX, dtype=torch.float64)
        self.to_rgb = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            # Y arrives divided by 255; +0.5 so that Floor rounds half up, as data.round_uint8 does.
            self.to_rgb.weight.copy_((matrix * torch.tensor([255.0, 1.0, 1.0], dtype=torch.float64)).reshape(3, 3, 1, 1))
            self.to_rgb.bias.copy_(0.5 - matrix @ torch.tensor(_YCBCR_OFFSET, dtype=torch.float64))

    def forward(self, y: torch.Tensor, cbcr: torch.Tensor) -> torch.Tensor:
        chroma = self.bicubic(cbcr)
        planes = torch.cat([y, chroma.reshape(1, 2, chroma.shape[2], chroma.shape[3])], dim=1)
        rgb = torch.floor(self.to_rgb(planes)).clamp(0, 255).to(torch.uint8)
        return rgb[0].permute(1, 2, 0)


@functools.lru_cache(maxsize=None)
def _session(scale: int):
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(YCbCrToRGB8(scale).eval(), (torch.zeros(1, 1, 2 * scale, 2 * scale), torch.zeros(2, 1, 2, 2)),
                          buffer, dynamo=False, opset_version=18, input_names=["y", "cbcr"], output_names=["rgb"],
                          dynamic_axes={"y": {2: "H", 3: "W"}, "cbcr": {2: "h", 3: "w"}})
    opts = ort.SessionOptions()
    # Without the blocked (NCHWc) layout: its reorders around the 3->3 colour conv cost more than
    # the conv (1920x1080 output, 2 cores: 23 ms against 33).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buffer.getvalue(), opts, providers=["CPUExecutionProvider"])


def ycbcr_to_rgb8(y_sr: np.ndarray, cbcr: np.ndarray, scale: int) -> np.ndarray:
    """Network output Y (1, 1, sH, sW) in [0, 1] and the input's Cb, Cr (2, H, W) in [0, 255] ->
    (sH, sW, 3) uint8 RGB."""
    cbcr = np.ascontiguousarray(cbcr, dtype=np.float32)[:, None]
    return _session(scale).run(None, {"y": np.ascontiguousarray(y_sr, dtype=np.float32), "cbcr": cbcr})[0]
