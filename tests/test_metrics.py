"""srexport.metrics: PSNR and SSIM checked against their formulas worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from srexport.metrics import psnr, shave, ssim

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def test_shave():
    img = np.arange(6 * 7 * 3).reshape(6, 7, 3)
    np.testing.assert_array_equal(shave(img, 2), img[2:4, 2:5])
    assert shave(img, 0) is img


@pytest.mark.parametrize("e", [1.0, 2.5, 16.0])
def test_psnr_constant_error(e):
    a = np.full((8, 9), 100.0)
    assert psnr(a, a + e, border=0) == pytest.approx(20 * math.log10(255 / e), abs=1e-12)
    assert psnr(a, a - e, border=2, peak=1.0) == pytest.approx(20 * math.log10(1 / e), abs=1e-12)


def test_psnr_identical_is_inf():
    a = np.random.default_rng(0).uniform(0, 255, (5, 5))
    assert psnr(a, a.copy(), border=0) == math.inf


def test_psnr_border_is_cropped():
    a = np.zeros((10, 10))
    b = a.copy()
    b[0, :] = b[:, -1] = 255  # errors only in the outer ring
    assert psnr(a, b, border=1) == math.inf
    b[5, 5] = 10  # one error of 10 among the 8 x 8 kept pixels
    assert psnr(a, b, border=1) == pytest.approx(10 * math.log10(255**2 / (100 / 64)), abs=1e-12)


def test_psnr_shape_mismatch():
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)), border=0)


def test_ssim_identical_is_one():
    a = np.random.default_rng(1).uniform(0, 255, (40, 33))
    assert ssim(a, a.copy(), border=3) == pytest.approx(1.0, abs=1e-12)


def test_ssim_is_symmetric():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 255, (30, 30))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    s = ssim(a, b, border=2)
    assert 0 < s < 1
    assert ssim(b, a, border=2) == pytest.approx(s, abs=1e-14)


def test_ssim_constant_images_by_hand():
    # Both flat: variances and covariance are 0, so SSIM = (2 m n + C1) / (m^2 + n^2 + C1).
    m, n = 100.0, 110.0
    expected = (2 * m * n + C1) / (m * m + n * n + C1)
    assert ssim(np.full((20, 20), m), np.full((20, 20), n), border=0) == pytest.approx(
        expected, abs=1e-12
    )


def test_ssim_ramp_plus_offset_by_hand():
    # b = a + d: var_a = var_b = cov in every window, so the contrast-structure factor is 1 and
    # the map is the luminance term. A linear ramp's Gaussian-weighted mean is its value at the
    # window centre, so the 'valid' map covers centres at columns 5 .. W-6 of the shaved image.
    border, d = 2, 12.0
    a = np.tile(np.arange(30, dtype=np.float64) * 3 + 20, (16, 1))
    centres = shave(a, border)[0, 5:-5]
    lum = (2 * centres * (centres + d) + C1) / (centres**2 + (centres + d) ** 2 + C1)
    assert ssim(a, a + d, border=border) == pytest.approx(lum.mean(), abs=1e-10)


def test_ssim_rejects_small_or_mismatched():
    with pytest.raises(ValueError):
        ssim(np.zeros((12, 12)), np.zeros((12, 12)), border=1)  # 10 x 10 left, window is 11
    with pytest.raises(ValueError):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)), border=0)
