"""The ONNX Runtime output-side colour graph equals the float64 NumPy path (one level off at most,
where float32 rounding lands on the other side of .5)."""

import numpy as np
import pytest

from srexport.colour import ycbcr_to_rgb8
from srexport.data import rgb2ycbcr, ycbcr2rgb
from srexport.images import _round, bicubic_upscale


@pytest.mark.parametrize("scale, shape", [(2, (37, 53)), (3, (20, 31)), (4, (1, 1)), (4, (9, 16))])
def test_matches_float64_path(scale, shape):
    rng = np.random.default_rng(scale)
    rgb = rng.integers(0, 256, (*shape, 3)).astype(np.float64)
    ycc = rgb2ycbcr(rgb)
    y_sr = rng.random((1, 1, scale * shape[0], scale * shape[1]), dtype=np.float32)  # any network output
    chroma = bicubic_upscale(np.moveaxis(ycc[..., 1:], -1, 0), scale)
    want = _round(ycbcr2rgb(np.stack([y_sr[0, 0].astype(np.float64) * 255, chroma[0], chroma[1]], -1)), 255, np.uint8)
    got = ycbcr_to_rgb8(y_sr, np.moveaxis(ycc[..., 1:], -1, 0), scale)
    assert got.dtype == np.uint8 and got.shape == want.shape == (scale * shape[0], scale * shape[1], 3)
    off = np.abs(got.astype(int) - want)
    assert off.max() <= 1 and np.mean(off > 0) < 1e-3


def test_saturates_instead_of_wrapping():
    ycc = np.full((4, 4, 3), 128.0)
    y_sr = np.full((1, 1, 8, 8), 2.0, np.float32)  # far above white
    assert (ycbcr_to_rgb8(y_sr, np.moveaxis(ycc[..., 1:], -1, 0), 2) == 255).all()
    assert (ycbcr_to_rgb8(-y_sr, np.moveaxis(ycc[..., 1:], -1, 0), 2) == 0).all()
