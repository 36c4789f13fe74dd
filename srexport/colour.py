"""Both colour ends of upscaling an 8-bit RGB picture, and the assembly of an upscaled video
frame, as fused multi-threaded loops (Numba; they release the GIL).

In: 8-bit RGB -> MATLAB `rgb2ycbcr` -> Y / 255 for the network, Cb and Cr kept.
Out: Cb, Cr upscaled by MATLAB bicubic (rows, then columns, as `data.imresize`), the three planes
back to RGB (the exact inverse of `rgb2ycbcr`), rounded half up to 8 bits and interleaved.

Each end reads its inputs once and writes its outputs once, in float64 arithmetic, so the result
equals the float64 NumPy path (`images.upscale_array`; the tests check equality). For a 1920x1080
output on 2 cores the output end took 50-60 ms in NumPy and PyTorch and 23 ms as an ONNX Runtime
graph of whole-image operations, against ESPCN x2's 64 ms; as one fused loop it takes 3 ms, and
the input end 0.5 ms. Video: Y rounded to 8 bits and U, V upscaled and rounded, written straight
into the yuv420p frame. The loops are compiled on first use (1-3 s) and cached on disk.
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


@numba.njit(parallel=True, nogil=True, cache=True)
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


@numba.njit(cache=True)
def _bicubic_row(plane, i, taps, line, out):  # pragma: no cover - compiled
    """Output row i of MATLAB bicubic x s of `plane` (h, w) into `out` (s*w,); `line` (w+4,) is
    scratch. The 5-tap column pass into a padded line, then the row pass phase by phase (phase q's
    weights in registers, contiguous loads): plain unit-stride loops that LLVM vectorises, 4x
    faster than a tap loop per output pixel."""
    s = taps.shape[0]
    h, w = plane.shape
    r, p = i // s, i % s
    r0, r1, r3, r4 = _mirror(r - 2, h), _mirror(r - 1, h), _mirror(r + 1, h), _mirror(r + 2, h)
    a0, a1, a2, a3, a4 = taps[p, 0], taps[p, 1], taps[p, 2], taps[p, 3], taps[p, 4]
    for x in range(w):
        line[x + 2] = (a0 * plane[r0, x] + a1 * plane[r1, x] + a2 * plane[r, x] + a3 * plane[r3, x]
                       + a4 * plane[r4, x])
    for x in (-2, -1, w, w + 1):
        line[x + 2] = line[_mirror(x, w) + 2]
    for q in range(s):
        b0, b1, b2, b3, b4 = taps[q, 0], taps[q, 1], taps[q, 2], taps[q, 3], taps[q, 4]
        for x in range(w):
            out[s * x + q] = b0 * line[x] + b1 * line[x + 1] + b2 * line[x + 2] + b3 * line[x + 3] + b4 * line[x + 4]


@numba.njit(cache=True)
def _round8(v):  # pragma: no cover - compiled
    """Round half up and saturate to 8 bits (images._round)."""
    return np.uint8(min(max(np.floor(v + 0.5), 0.0), 255.0))


@numba.njit(parallel=True, nogil=True, cache=True)
def _ycbcr_to_rgb8(y, cbcr, taps, m, bias, out):  # pragma: no cover - compiled
    s = taps.shape[0]
    h, w = cbcr.shape[1], cbcr.shape[2]
    for i in numba.prange(s * h):
        line = np.empty(w + 4)
        chroma = np.empty((2, s * w))
        for c in range(2):
            _bicubic_row(cbcr[c], i, taps, line, chroma[c])
        # Each colour over the whole row first (vectorised), then the interleave: 5.4 -> 3.2 ms.
        rgb = np.empty((3, s * w))
        for k in range(3):
            my, mb, mr, add = m[k, 0], m[k, 1], m[k, 2], bias[k] + 0.5
            for j in range(s * w):
                v = np.floor(my * (255.0 * y[0, 0, i, j]) + mb * chroma[0, j] + mr * chroma[1, j] + add)
                rgb[k, j] = min(max(v, 0.0), 255.0)
        for j in range(s * w):
            for k in range(3):
                out[i, j, k] = np.uint8(rgb[k, j])


@numba.njit(parallel=True, nogil=True, cache=True)
def _yuv420_frame(y, u, v, taps, oh, ow, out):  # pragma: no cover - compiled
    # out: the frame's Y (oh x ow) then U and V (oh/2 x ow/2 each), flat, as yuv420p is laid out.
    ch, cw = oh // 2, ow // 2
    for i in numba.prange(oh + 2 * ch):
        if i < oh:
            for j in range(ow):
                out[i * ow + j] = _round8(255.0 * y[0, 0, i, j])
        else:
            c, r = (i - oh) // ch, (i - oh) % ch
            plane = u if c == 0 else v
            line = np.empty(plane.shape[1] + 4)
            row = np.empty(taps.shape[0] * plane.shape[1])
            _bicubic_row(plane, r, taps, line, row)
            base = oh * ow + c * ch * cw + r * cw
            for j in range(cw):
                out[base + j] = _round8(row[j])


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


def yuv420_frame(y_sr: np.ndarray, u: np.ndarray, v: np.ndarray, scale: int, size: tuple[int, int]) -> np.ndarray:
    """A video frame's planes after the network: Y (1, 1, >=H, >=W) in [0, 1] rounded to 8 bits,
    the input's 8-bit U and V upscaled by MATLAB bicubic and rounded, cropped to `size` (W, H,
    both even) -> the (H * 3 / 2, W) uint8 array of a yuv420p frame."""
    ow, oh = size
    u = np.ascontiguousarray(u)  # 8-bit planes as they are: the loop reads them into float64
    v = np.ascontiguousarray(v, dtype=u.dtype)
    if u.shape != v.shape or scale * u.shape[0] < oh // 2 or scale * u.shape[1] < ow // 2 \
            or y_sr.shape[2] < oh or y_sr.shape[3] < ow or oh % 2 or ow % 2:
        raise ValueError(f"planes Y {y_sr.shape}, U {u.shape}, V {v.shape} do not make a {ow}x{oh} frame at x{scale}")
    out = np.empty(oh * ow * 3 // 2, np.uint8)
    with _LAUNCH:
        _yuv420_frame(y_sr, u, v, phase_weights(scale), oh, ow, out)
    return out.reshape(oh * 3 // 2, ow)
