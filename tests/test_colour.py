"""The fused colour loops equal the float64 NumPy path (`images.upscale_array`'s arithmetic),
including images one or two pixels wide where the symmetric border folds over itself."""

import numpy as np
import pytest

from srexport.colour import rgb8_to_ycbcr, ycbcr_to_rgb8, yuv420_frame
from srexport.data import rgb2ycbcr, ycbcr2rgb
from srexport.images import _round, bicubic_upscale

SHAPES = [(2, (37, 53)), (3, (20, 31)), (4, (1, 1)), (4, (9, 16)), (2, (1, 7)), (3, (2, 1)), (2, (3, 2))]


@pytest.mark.parametrize("scale, shape", SHAPES)
def test_output_end_equals_float64_path(scale, shape):
    rng = np.random.default_rng(scale)
    ycc = rgb2ycbcr(rng.integers(0, 256, (*shape, 3)).astype(np.float64))
    cbcr = np.moveaxis(ycc[..., 1:], -1, 0)
    y_sr = rng.random((1, 1, scale * shape[0], scale * shape[1]), dtype=np.float32)  # any network output
    chroma = bicubic_upscale(cbcr, scale)
    want = _round(ycbcr2rgb(np.stack([y_sr[0, 0].astype(np.float64) * 255, chroma[0], chroma[1]], -1)), 255, np.uint8)
    got = ycbcr_to_rgb8(y_sr, cbcr, scale)
    assert got.dtype == np.uint8 and got.shape == (scale * shape[0], scale * shape[1], 3)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 48)])
def test_input_end_equals_rgb2ycbcr(shape):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3)).astype(np.uint8)
    want = rgb2ycbcr(rgb.astype(np.float64))
    y, cbcr = rgb8_to_ycbcr(rgb)
    assert y.dtype == np.float32 and y.shape == (1, 1, *shape) and cbcr.shape == (2, *shape)
    np.testing.assert_array_equal(y[0, 0], (want[..., 0] / 255).astype(np.float32))
    np.testing.assert_allclose(cbcr, np.moveaxis(want[..., 1:], -1, 0), rtol=0, atol=1e-12)


def test_saturates_instead_of_wrapping():
    cbcr = np.full((2, 4, 4), 128.0)
    y_sr = np.full((1, 1, 8, 8), 2.0, np.float32)  # far above white
    assert (ycbcr_to_rgb8(y_sr, cbcr, 2) == 255).all()
    assert (ycbcr_to_rgb8(-y_sr, cbcr, 2) == 0).all()


def test_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="does not match x2"):
        ycbcr_to_rgb8(np.zeros((1, 1, 8, 9), np.float32), np.zeros((2, 4, 4)), 2)


@pytest.mark.parametrize("scale, chroma_shape, size", [(2, (9, 16), (64, 36)), (3, (5, 7), (42, 30)),
                                                       (3, (5, 7), (40, 28)), (4, (1, 1), (8, 8))])
def test_video_frame_equals_rounded_planes(scale, chroma_shape, size):
    """yuv420p layout: Y rounded, then U and V upscaled, rounded and cropped to the frame size."""
    ow, oh = size
    rng = np.random.default_rng(scale)
    u, v = (rng.integers(0, 256, chroma_shape).astype(np.uint8) for _ in range(2))
    y_sr = rng.random((1, 1, 2 * scale * chroma_shape[0], 2 * scale * chroma_shape[1]), dtype=np.float32)
    frame = yuv420_frame(y_sr, u, v, scale, size)
    assert frame.dtype == np.uint8 and frame.shape == (oh * 3 // 2, ow)
    chroma = _round(bicubic_upscale(np.stack([u, v]).astype(np.float64), scale), 255, np.uint8)[:, :oh // 2, :ow // 2]
    flat = frame.ravel()
    np.testing.assert_array_equal(flat[:oh * ow].reshape(oh, ow), _round(y_sr[0, 0, :oh, :ow].astype(np.float64) * 255, 255, np.uint8))
    np.testing.assert_array_equal(flat[oh * ow:].reshape(2, oh // 2, ow // 2), chroma)


def test_video_frame_rejects_odd_sizes():
    with pytest.raises(ValueError, match="do not make a 7x8 frame"):
        yuv420_frame(np.zeros((1, 1, 8, 8), np.float32), np.zeros((2, 2)), np.zeros((2, 2)), 2, (7, 8))
