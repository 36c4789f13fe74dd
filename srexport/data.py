"""Images and the published SR evaluation protocol, in numpy float64 (no torch needed).

`imresize` is a port of MATLAB `imresize(img, scale, 'bicubic')` from its algorithm definition:
Keys cubic (a = -0.5), antialiasing when shrinking, half-sample symmetric borders, one dimension
at a time. `rgb2ycbcr` is MATLAB's BT.601 limited-range transform. `protocol_pair` makes the
(HR, LR) Y-channel pair the published tables were computed on (REFERENCE.md section 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import SRExportError

IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"})

# MATLAB rgb2ycbcr: YCbCr = OFFSET + MATRIX @ RGB / 255 for RGB in [0, 255].
_YCBCR_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_RGB_MATRIX = np.linalg.inv(_YCBCR_MATRIX / 255.0)


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, MATLAB's bicubic."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = 1.5 * ax3 - 2.5 * ax2 + 1
    far = -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    return np.where(ax <= 1, near, np.where(ax < 2, far, 0.0))


def _contributions(
    in_len: int, out_len: int, scale: float, antialias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's `contributions`: (out_len, P) weights and 0-based input indices."""
    if scale < 1 and antialias:
        width = 4.0 / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * keys_cubic(scale * x)

    else:
        width = 4.0
        kernel = keys_cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Half-sample symmetric mirror: 1..n, n..1 repeated.
    aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    indices = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    return weights, indices


def _resize_axis(img: np.ndarray, axis: int, scale: float, antialias: bool) -> np.ndarray:
    in_len = img.shape[axis]
    out_len = math.ceil(in_len * scale)
    weights, indices = _contributions(in_len, out_len, scale, antialias)
    moved = np.moveaxis(img, axis, 0)
    gathered = moved[indices]  # (out_len, P, ...rest)
    out = np.einsum("op,op...->o...", weights, gathered)
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray, scale: float | tuple[float, float], *, antialias: bool = True
) -> np.ndarray:
    """MATLAB `imresize(img, scale, 'bicubic')` on (H, W) or (H, W, C); float64, unrounded.

    `scale` is one factor or (row factor, column factor); output size is ceil(in * scale).
    Unlike MATLAB on uint8 input, nothing is rounded between or after the two passes.
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize expects an (H, W) or (H, W, C) array, got shape {arr.shape}")
    scales = (float(scale), float(scale)) if np.isscalar(scale) else tuple(map(float, scale))
    if len(scales) != 2 or min(scales) <= 0:
        raise ValueError(f"imresize scale must be positive (one or two factors), got {scale!r}")
    # MATLAB resizes the dimension with the smaller factor first (rows first on a tie).
    for axis in np.argsort(scales, kind="stable"):
        arr = _resize_axis(arr, int(axis), scales[axis], antialias)
    return arr


def round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB `uint8(x)` kept as float64: round half away from zero, clip to [0, 255]."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), 0.0, 255.0)


def rgb2ycbcr(rgb: np.ndarray, dtype=np.float64) -> np.ndarray:
    """MATLAB `rgb2ycbcr` (BT.601, limited range) for float (..., 3) RGB in [0, 255]; unrounded.
    float32 (`dtype`) is for pictures that are rounded to 8 bits afterwards: 4x faster."""
    rgb = np.asarray(rgb, dtype=dtype)
    return rgb @ (_YCBCR_MATRIX.T / 255.0).astype(dtype) + _YCBCR_OFFSET.astype(dtype)


def ycbcr2rgb(ycbcr: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Exact inverse of `rgb2ycbcr`: float (..., 3) YCbCr to RGB in [0, 255] scale; unrounded."""
    ycbcr = np.asarray(ycbcr, dtype=dtype)
    return (ycbcr - _YCBCR_OFFSET.astype(dtype)) @ _RGB_MATRIX.T.astype(dtype)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of `scale`, keeping the top-left corner."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8: (H, W) for grayscale files, (H, W, 3) RGB otherwise."""
    from PIL import Image  # Pillow only where files are read

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            arr = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise SRExportError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise SRExportError(f"{path}: cannot read image ({exc})") from None
    if arr.size == 0:
        raise SRExportError(f"{path}: image has zero size {arr.shape[1]}x{arr.shape[0]}")
    return arr


def y_channel(img: np.ndarray) -> np.ndarray:
    """Y in [0, 255] as float64, rounded to 8 bits like MATLAB's uint8 `rgb2ycbcr`.

    A grayscale (H, W) image is its own Y: pushing it through rgb2ycbcr would compress it to
    [16, 235], which is not how the published tables treated Set14's grayscale `bridge`.
    """
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"y_channel expects (H, W) or (H, W, 3), got shape {arr.shape}")
    return round_uint8(rgb2ycbcr(arr.astype(np.float64))[..., 0])


def protocol_pair(
    hr: np.ndarray, scale: int, *, round_lr: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(hr_y, lr_y) float64 in [0, 255] by the published protocol.

    modcrop the HR image, take its 8-bit Y, and bicubic-downscale that Y by 1/scale, rounding the
    LR to 8 bits unless `round_lr` is False. Downscaling Y rather than RGB is what reproduces the
    published bicubic table. A floating-point LR (as MATLAB pipelines working in single/double
    keep it) lands a few thousandths of a dB closer still; an 8-bit LR is what a deployed model
    is given, so it is the default.
    """
    hr_y = y_channel(modcrop(np.asarray(hr), scale))
    lr_y = imresize(hr_y, 1 / scale)
    return hr_y, (round_uint8(lr_y) if round_lr else lr_y)


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files (bmp/png/jpg/jpeg/tif/tiff/webp) directly inside `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SRExportError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SRExportError(f"{folder}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files
