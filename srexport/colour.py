"""Both colour ends of upscaling an 8-bit RGB picture, as fused multi-threaded loops (Numba).

In: 8-bit RGB -> MATLAB `rgb2ycbcr` -> Y / 255 for the network, Cb and Cr kept.
Out: Cb, Cr upscaled by MATLAB bicubic (rows, then columns, as `data.imresize`), the three planes
back to RGB (the exact inverse of `rgb2ycbcr`), rounded half up to 8 bits and interleaved.

Each end reads its inputs once and writes its outputs once, in float64 arithmetic, so the result
equals the float64 NumPy path (`images.upscale_array`; the tests check equality). For a 1920x1080
output on 2 cores the output end took 50-60 ms in NumPy and PyTorch and 23 ms as an ONNX Runtime
graph of whole-image operations, against ESPCN x2's 64 ms; as one fused loop it takes 5 ms, and
the input end 0.5 ms. The loops are compiled on first use (1-3 s) and cached on disk.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

from .archs.bicubic import phase_weights
from .data import _RGB_MATRIX, _YCBCR_MATRIX, _YCBCR_OFFSET

# Numba's own thread pool, not OpenMP: OpenMP's idle threads spin after each loop and took the
# cores from the network run that follows (ESPCN x2 1080p, 2 cores: colour in plus network 69.7 ms
# with OpenMP, 63.9 with this pool, network alone 62.9). The pool is not safe for concurrent
# launches, hence the lock.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LAUNCH = threading.Lock()

_TO_YCBCR = _YCBCR_MATRIX / 255.0
_TO_RGB_BIAS = -_RGB_MATRIX @ _YCBCR_OFFSET


@numba.njit(parallel=True, cache=True)
def _rgb8_to_ycbcr(rgb, m, offset, y, cbcr):  # pragma: no cover - compiled
    h, w = rgb.shape[0], rgb.shape[1]
    for i in numba.prange(h):
        for j in range(w):
            r, g, b = float(rgb[i, j, 0]), float(rgb[i, j, 1]), float(rgb[i, j, 2])
            y[0, 0, i, j] = (m[0, 0] * r + m[0, 1] * g + m[0, 2] * b + offset[0]) / 255.0
            cbcr[0, i, j] = m[1, 0] * r + m[1, 1] * g + m[1, 2] * b + offset[1]
            cbcr[1, i, j] = m[2, 0] * r + m[2, 1] * g + m[2, 2] * b + offset[2]


@numba.njit(cache=True)
def _mirror(i, n):  # pragma: no cover - compiled
    """MATLAB's half-sample symmetric border: ... x1 x0 | x0 x1 ... x(n-1) | x(n-1) x(n-2) ..."""
    i %= 2 * n
    return i if i < n else 2 * n - 1 - i


@numba.njit(parallel=True, cache=True)
def _ycbcr_to_rgb8(y, cbcr, taps, m, bias, out):  # pragma: no cover - compiled
    # Per output row: the 5-tap column pass into a padded line, the row pass phase by phase (the
    # weights of phase q in registers, contiguous loads), then colour and rounding. Written as
    # plain unit-stride loops so that LLVM vectorises them: 4x faster than per-pixel tap loops.
    s = taps.shape[0]
    h, w = cbcr.shape[1], cbcr.shape[2]
    for i in numba.prange(s * h):
        r, p = i // s, i % s
        r0, r1, r3, r4 = _mirror(r - 2, h), _mirror(r - 1, h), _mirror(r + 1, h), _mirror(r + 2, h)
        a0, a1, a2, a3, a4 = taps[p, 0], taps[p, 1], taps[p, 2], taps[p, 3], taps[p, 4]
        line = np.empty(w + 4)
        chroma = np.empty((2, s * w))
        for c in range(2):
            src = cbcr[c]
            for x in range(w):
                line[x + 2] = a0 * src[r0, x] + a1 * src[r1, x] + a2 * src[r, x] + a3 * src[r3, x] + a4 * src[r4, x]
            for x in (-2, -1, w, w + 1):
                line[x + 2] = line[_mirror(x, w) + 2]
            for q in range(s):
                b0, b1, b2, b3, b4 = taps[q, 0], taps[q, 1], taps[q, 2], taps[q, 3], taps[q, 4]
                for x in range(w):
                    chroma[c, s * x + q] = (b0 * line[x] + b1 * line[x + 1] + b2 * line[x + 2]
                                            + b3 * line[x + 3] + b4 * line[x + 4])
        for j in range(s * w):
            luma = 255.0 * y[0, 0, i, j]
            for k in range(3):
                v = np.floor(m[k, 0] * luma + m[k, 1] * chroma[0, j] + m[k, 2] * chroma[1, j] + bias[k] + 0.5)
                out[i, j, k] = np.uint8(min(max(v, 0.0), 255.0))


def rgb8_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit RGB (H, W, 3) -> (Y / 255 as the network's (1, 1, H, W) float32 input,
    Cb and Cr (2, H, W) float64 in [0, 255]); MATLAB `rgb2ycbcr`, unrounded."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    y, cbcr = np.empty((1, 1, h, w), np.float32), np.empty((2, h, w))
    with _LAUNCH:
        _rgb8_to_ycbcr(rgb, _TO_YCBCR, _YCBCR_OFFSET, y, cbcr)
    return y, cbcr


def ycbcr_to_rgb8(y_sr: np.ndarray, cbcr: np.ndarray, scale: int) -> np.ndarray:
    """Network output Y (1, 1, sH, sW) in [0, 1] and the input's Cb, Cr (2, H, W) in [0, 255] ->
    (sH, sW, 3) uint8 RGB, with Cb and Cr upscaled by MATLAB bicubic."""
    cbcr = np.ascontiguousarray(cbcr, dtype=np.float64)
    y_sr = np.ascontiguousarray(y_sr, dtype=np.float32)
    h, w = cbcr.shape[1:]
    if y_sr.shape != (1, 1, scale * h, scale * w):
        raise ValueError(f"Y of shape {y_sr.shape} does not match x{scale} of a {w}x{h} chroma")
    out = np.empty((scale * h, scale * w, 3), np.uint8)
    with _LAUNCH:
        _ycbcr_to_rgb8(y_sr, cbcr, phase_weights(scale), _RGB_MATRIX, _TO_RGB_BIAS, out)
    return out
