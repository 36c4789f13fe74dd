"""srexport.data: MATLAB imresize, colour conversion, cropping, image loading.

Expected values are worked out by hand from the definitions. Keys cubic (a = -0.5) at the
offsets that integer x2 resizing uses, in 1/128ths:
    c(0.25) = 111, c(0.75) = 29, c(1.25) = -9, c(1.75) = -3, c(x >= 2) = 0.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from srexport.data import (
    imresize,
    list_images,
    load_image,
    modcrop,
    protocol_pair,
    rgb2ycbcr,
    round_uint8,
    y_channel,
    ycbcr2rgb,
)
from srexport.errors import SRExportError

# ---------------------------------------------------------------- imresize


def test_constant_image_stays_constant():
    img = np.full((6, 5), 37.25)
    for scale in (2, 3, 4, 1 / 2, 1 / 3, 1 / 4, 0.7):
        out = imresize(img, scale)
        np.testing.assert_allclose(out, 37.25, rtol=0, atol=1e-12)


def test_upscaled_ramp_is_a_ramp_in_the_interior():
    # Keys' cubic reproduces linear functions; output pixel x (1-based) sits at input coordinate
    # x/s + (1 - 1/s)/2, so a ramp whose value is its own 1-based index maps to that coordinate.
    ramp = np.arange(1, 13, dtype=np.float64)[None, :].repeat(3, axis=0)
    for s in (2, 3, 4):
        out = imresize(ramp, s)
        x = np.arange(1, out.shape[1] + 1)
        expected = x / s + 0.5 * (1 - 1 / s)
        interior = (expected >= 3) & (expected <= 10)  # taps stay inside 1..12
        np.testing.assert_allclose(out[0, interior], expected[interior], atol=1e-12)


def test_x2_upscale_1x4_by_hand_with_mirrored_border():
    a, b, c, d = 10.0, 200.0, 30.0, 90.0
    out = imresize(np.array([[a, b, c, d]]), 2)
    assert out.shape == (2, 8)
    # Output 1 sits at u = 0.75: taps at 1-based -1, 0, 1, 2 with distances 1.75, 0.75, 0.25,
    # 1.25; the mirror (.. x2 x1 | x1 x2 ..) sends -1 to b and 0 to a.
    o1 = (-3 * b + 29 * a + 111 * a - 9 * b) / 128
    # Output 2 at u = 1.25: taps 0 (-> a), 1, 2, 3 at distances 1.25, 0.25, 0.75, 1.75.
    o2 = (-9 * a + 111 * a + 29 * b - 3 * c) / 128
    # Output 3 at u = 1.75: taps 0 (-> a), 1, 2, 3 at distances 1.75, 0.75, 0.25, 1.25.
    o3 = (-3 * a + 29 * a + 111 * b - 9 * c) / 128
    # Output 4 at u = 2.25: taps 1..4 at distances 1.25, 0.25, 0.75, 1.75 (no mirroring).
    o4 = (-9 * a + 111 * b + 29 * c - 3 * d) / 128
    # The right half mirrors the left half.
    o8 = (140 * d - 12 * c) / 128
    o7 = (102 * d + 29 * c - 3 * b) / 128
    expected = [o1, o2, o3, o4]
    np.testing.assert_allclose(out[0, :4], expected, atol=1e-12)
    np.testing.assert_allclose(out[0, 6:], [o7, o8], atol=1e-12)
    np.testing.assert_allclose(out[0], out[1])  # the single row is mirrored onto itself


def test_x2_upscale_4x4_is_separable_by_hand():
    img = np.arange(16, dtype=np.float64).reshape(4, 4) ** 2
    w = np.zeros((8, 4))  # hand weights of the 1-D x2 upscale of 4 samples, 1/128ths
    w[0, :2] = [140, -12]
    w[1, :3] = [102, 29, -3]
    w[2, :3] = [26, 111, -9]
    w[3, :4] = [-9, 111, 29, -3]
    w[4:] = w[3::-1, ::-1]  # mirror symmetry of the whole operator
    w /= 128
    np.testing.assert_allclose(imresize(img, 2), w @ img @ w.T, atol=1e-10)


def test_half_downscale_uses_widened_antialias_kernel():
    x = np.array([[3.0, 50.0, 7.0, 120.0, 9.0, 200.0, 11.0, 60.0]])
    out = imresize(x, 1 / 2)
    assert out.shape == (1, 4)
    # Kernel 0.5 * c(d / 2), width 8. Output 1 sits at u = 1.5: taps -3..6 at distances
    # 4.5 .. -4.5, i.e. c(2.25, 1.75, 1.25, 0.75, 0.25, 0.25, 0.75, ...) / 2; normalised
    # (sum of c's is 2) each weight is c / 2. Mirror: -2 -> x3, -1 -> x2, 0 -> x1.
    x1, x2, x3, x4, x5 = x[0, :5]
    expected = (-3 * x3 - 9 * x2 + 29 * x1 + 111 * x1 + 111 * x2 + 29 * x3 - 9 * x4 - 3 * x5) / 256
    assert out[0, 0] == pytest.approx(expected, abs=1e-12)


def test_output_size_is_ceil():
    assert imresize(np.zeros((7, 5)), 1 / 3).shape == (3, 2)
    assert imresize(np.zeros((7, 5, 3)), 1 / 3).shape == (3, 2, 3)
    assert imresize(np.zeros((3, 2)), 3).shape == (9, 6)
    assert imresize(np.zeros((5, 4)), (2, 0.5)).shape == (10, 2)


def test_colour_channels_resize_independently_and_uint8_gives_float64():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    out = imresize(img, 1 / 3)
    assert out.dtype == np.float64
    for ch in range(3):
        np.testing.assert_allclose(out[..., ch], imresize(img[..., ch], 1 / 3), atol=1e-12)


def test_no_rounding_or_clipping():
    # A step overshoots under a cubic kernel: values outside [0, 255] must come back as they are.
    out = imresize(np.array([[0.0, 0.0, 255.0, 255.0]]), 2)
    assert out.min() < 0 and out.max() > 255


def test_matches_the_exportable_upsampler():
    # The convolution upsampler in srexport.archs.bicubic is derived independently (phase
    # weights); both are MATLAB bicubic, so they must agree up to its float32-stored weights.
    torch = pytest.importorskip("torch")
    from srexport.archs.bicubic import MatlabBicubicUpsample

    img = np.random.default_rng(1).uniform(0, 255, size=(6, 7))
    for s in (2, 3, 4):
        up = MatlabBicubicUpsample(s).double()
        ref = up(torch.from_numpy(img)[None, None]).numpy()[0, 0]
        np.testing.assert_allclose(imresize(img, s), ref, atol=1e-5)


def test_bad_scale_is_rejected():
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError):
        imresize(np.zeros(4), 2)


# ---------------------------------------------------------------- colour


@pytest.mark.parametrize(
    "rgb, ycbcr",
    [
        ((0, 0, 0), (16, 128, 128)),
        ((255, 255, 255), (235, 128, 128)),
        ((255, 0, 0), (16 + 65.481, 128 - 37.797, 128 + 112)),
        ((0, 255, 0), (16 + 128.553, 128 - 74.203, 128 - 93.786)),
        ((0, 0, 255), (16 + 24.966, 128 + 112, 128 - 18.214)),
    ],
)
def test_rgb2ycbcr_known_values(rgb, ycbcr):
    np.testing.assert_allclose(rgb2ycbcr(np.array(rgb, dtype=float)), ycbcr, atol=1e-10)
    np.testing.assert_allclose(ycbcr2rgb(np.array(ycbcr, dtype=float)), rgb, atol=1e-10)


def test_ycbcr_round_trip():
    x = np.random.default_rng(2).uniform(0, 255, size=(5, 4, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(x)), x, rtol=0, atol=1e-10)


def test_round_uint8_is_half_away_from_zero_and_clips():
    x = np.array([0.5, 1.5, 2.5, 2.4999, -0.4, -3.0, 254.5, 255.6])
    np.testing.assert_array_equal(round_uint8(x), [1, 2, 3, 2, 0, 0, 255, 255])


def test_y_channel():
    rgb = np.array([[[255, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    y = y_channel(rgb)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[81, 235]])  # 81.481 -> 81
    gray = np.array([[0, 7], [255, 128]], dtype=np.uint8)
    np.testing.assert_array_equal(y_channel(gray), gray)  # a grayscale image is its own Y


def test_protocol_pair_shapes_and_rounding():
    hr = np.random.default_rng(3).integers(0, 256, size=(14, 13, 3), dtype=np.uint8)
    hr_y, lr_y = protocol_pair(hr, 3)
    assert hr_y.shape == (12, 12) and lr_y.shape == (4, 4)
    np.testing.assert_array_equal(hr_y, y_channel(hr[:12, :12]))
    np.testing.assert_array_equal(lr_y, round_uint8(imresize(hr_y, 1 / 3)))
    _, lr_float = protocol_pair(hr, 3, round_lr=False)
    np.testing.assert_allclose(lr_float, imresize(hr_y, 1 / 3))


# ---------------------------------------------------------------- modcrop


def test_modcrop():
    img = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    out = modcrop(img, 3)
    assert out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, img[:6, :9])
    assert modcrop(np.zeros((8, 8)), 4).shape == (8, 8)


# ---------------------------------------------------------------- files


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_rgb_and_gray(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    (tmp_path / "c.png").write_bytes(_png_bytes(rgb))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.bmp")
    got = load_image(tmp_path / "c.png")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "g.bmp"), rgb[..., 0])


def test_load_image_errors(tmp_path):
    data = _png_bytes(np.zeros((64, 64, 3), dtype=np.uint8) + 17)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.bmp"
    empty.write_bytes(b"")
    for path in (truncated, empty, tmp_path / "missing.png", tmp_path):
        with pytest.raises(SRExportError) as info:
            load_image(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg


def test_list_images(tmp_path):
    with pytest.raises(SRExportError, match="no such folder"):
        list_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SRExportError, match="no images"):
        list_images(tmp_path)
    for name in ("b.PNG", "a.bmp", "c.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()  # a folder named like an image is not one
    assert [p.name for p in list_images(tmp_path)] == ["a.bmp", "b.PNG", "c.jpeg"]
