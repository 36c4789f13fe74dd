"""PSNR and SSIM as the published SR tables compute them (Y channel, `scale` pixels shaved)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .data import imresize, list_images, load_image, protocol_pair, round_uint8


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """Drop `border` pixels from every side of the first two dimensions."""
    if border <= 0:
        return img
    return img[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, *, border: int, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shape arrays after `shave(border)`; inf when identical."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    mse = float(np.mean((shave(a, border) - shave(b, border)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    # 1-D factor of MATLAB fspecial('gaussian', size, sigma); the 2-D window is its outer
    # product (fspecial's eps cut-off never triggers at these settings).
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB filter2(g g^T, img, 'valid') for a symmetric 1-D window g, done separably."""
    rows = sliding_window_view(img, g.size, axis=1) @ g
    return sliding_window_view(rows, g.size, axis=0) @ g


def ssim(a: np.ndarray, b: np.ndarray, *, border: int) -> float:
    """Mean SSIM of 2-D arrays in [0, 255] as Wang et al.'s ssim_index, after `shave(border)`.

    Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering.
    """
    a = shave(np.asarray(a, dtype=np.float64), border)
    b = shave(np.asarray(b, dtype=np.float64), border)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim: expects two same-shape 2-D arrays, got {a.shape} and {b.shape}")
    g = _gaussian_window()
    if min(a.shape) < g.size:
        raise ValueError(f"ssim: image {a.shape} smaller than the {g.size}x{g.size} window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def bicubic_baseline(folder: str | Path, scale: int, *, round_lr: bool = True) -> dict:
    """Bicubic PSNR/SSIM of a folder by the published protocol.

    Returns {"images": {name: {"psnr": dB, "ssim": s}}, "psnr": mean, "ssim": mean}, where the
    prediction is the 8-bit bicubic upscale of the protocol LR (see `protocol_pair` for
    `round_lr`), compared with the HR Y inside a `scale`-pixel border.
    """
    images: dict[str, dict[str, float]] = {}
    for path in list_images(folder):
        hr_y, lr_y = protocol_pair(load_image(path), scale, round_lr=round_lr)
        ilr = round_uint8(imresize(lr_y, scale))
        images[path.name] = {
            "psnr": psnr(ilr, hr_y, border=scale),
            "ssim": ssim(ilr, hr_y, border=scale),
        }
    return {
        "images": images,
        "psnr": float(np.mean([r["psnr"] for r in images.values()])),
        "ssim": float(np.mean([r["ssim"] for r in images.values()])),
    }
