"""Tiled upscaling whose result equals the untiled one: overlap >= the receptive radius, each
tile's valid centre cropped and pasted, no blending.

`receptive_radius(model)` is computed from the layers: one forward pass on the meta device under a
TorchFunctionMode that follows every tensor through every op (convolutions, transposed
convolutions, pixel shuffles, additions, concatenations) and keeps, per tensor, how far in LR
pixels it can reach and at what resolution it lives. Each layer adds its own reach: a k x k
convolution with padding p adds max(p, k-1-p) pixels at its resolution, a stride-s transposed
convolution max(p, k-1-p)/s + 1 input pixels, a pixel shuffle 1 input pixel. Concatenations and
slices (the bicubic's mirror padding) are treated as the maximum of their inputs, and the padded
convolution after them then counts its full kernel, so the bicubic's 2 LR pixels count as 4:
conservative by construction.

Borders: a tile is cut from the image and clipped at the image border, so a tile on the border
has the image border itself as its border, and the network treats it exactly as in the full
image (zero padding of the convolutions, MATLAB mirror padding of the internal bicubic). Interior
tile edges are at least `receptive_radius` LR pixels away from every output pixel kept.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from .errors import SRExportError

# Fraction of available memory a frame's activations may take before `auto_tile` tiles it.
MEMORY_FRACTION = 0.25
ACTIVATIONS_ALIVE = 3  # largest activation x this ~ peak working set (input, output, a skip)


class _ReachMode(TorchFunctionMode):
    """Propagates (reach in LR pixels, resolution factor) from inputs to outputs of every op."""

    def __init__(self):
        super().__init__()
        self.state: dict[int, tuple[float, float]] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids valid
        self.largest_per_lr_pixel = 0.0  # elements of the largest activation per LR input pixel
        self.lr_pixels = 1

    def _get(self, t) -> tuple[float, float] | None:
        return self.state.get(id(t)) if isinstance(t, torch.Tensor) else None

    def set(self, t: torch.Tensor, reach: float, factor: float) -> None:
        self.state[id(t)] = (reach, factor)
        self.keep.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        if func in (F.conv2d, F.conv_transpose2d, F.pixel_shuffle):
            src = self._get(args[0])
            if src is None:  # e.g. a convolution of a weight: not on the data path
                return out
            reach, factor = src
        else:
            inputs = [s for s in (self._get(a) for a in _flatten(args, kwargs)) if s is not None]
            if not inputs:
                return out
            reach, factor = max(r for r, _ in inputs), inputs[0][1]
        if func is F.conv2d:
            k = args[1].shape[2:]
            stride = _pair(_arg(args, kwargs, 3, "stride", 1))
            padding = _pair(_arg(args, kwargs, 4, "padding", 0))
            dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
            if isinstance(padding[0], str):  # "same" / "valid"
                padding = tuple(dilation[i] * (k[i] - 1) // 2 for i in range(2)) if padding[0] == "same" else (0, 0)
            reach += max(dilation[i] * max(padding[i], k[i] - 1 - padding[i]) for i in range(2)) / factor
            if max(stride) > 1:
                reach += 1 / factor
                factor /= max(stride)
        elif func is F.conv_transpose2d:
            k = args[1].shape[2:]
            stride = _pair(_arg(args, kwargs, 3, "stride", 1))
            padding = _pair(_arg(args, kwargs, 4, "padding", 0))
            dilation = _pair(_arg(args, kwargs, 7, "dilation", 1))
            s = max(stride)
            extent = max(dilation[i] * max(padding[i], k[i] - 1 - padding[i]) / stride[i] for i in range(2))
            reach += (extent + (1 if s > 1 else 0)) / factor  # +1: an output maps between two inputs
            factor *= s
        elif func is F.pixel_shuffle:
            reach += 1 / factor
            factor *= _arg(args, kwargs, 1, "upscale_factor", 1)
        elif func in (F.interpolate, F.grid_sample):
            raise SRExportError("receptive_radius: interpolate/grid_sample layers are not supported")
        if out.dim() == 4:
            self.largest_per_lr_pixel = max(self.largest_per_lr_pixel, out.numel() / self.lr_pixels)
        self.set(out, reach, factor)
        return out


def _flatten(args, kwargs):
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def _arg(args, kwargs, index, name, default):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _pair(v):
    if isinstance(v, str):
        return (v, v)
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


def _trace(model: nn.Module, h: int = 16, w: int = 16) -> _ReachMode:
    meta = copy.deepcopy(model).to("meta").eval()
    dtype = next((p.dtype for p in meta.parameters()), torch.float32)
    x = torch.empty(1, 1, h, w, device="meta", dtype=dtype)
    mode = _ReachMode()
    mode.lr_pixels = h * w
    mode.set(x, 0.0, 1.0)
    with torch.no_grad(), mode:
        y = meta(x)
    if id(y) not in mode.state:
        raise SRExportError("receptive_radius: could not follow the network's output")
    mode.output = y
    return mode


def receptive_radius(model: nn.Module) -> int:
    """LR pixels an output pixel can depend on in each direction, counted from the layers
    (conservative: never smaller than the true radius)."""
    mode = _trace(model)
    return int(math.ceil(mode.state[id(mode.output)][0] - 1e-9))


def activation_bytes_per_lr_pixel(model: nn.Module) -> float:
    """FP32 bytes of the network's largest activation per LR input pixel (channels x upscaled
    pixels x 4 bytes: VDSR x2 has 64 channels at 4 pixels per LR pixel -> 1024 bytes)."""
    return _trace(model).largest_per_lr_pixel * 4


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; 4 GiB assumed elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def measured_bytes_per_lr_pixel(runner, sizes=((24, 32), (48, 64))) -> float | None:
    """Peak process memory per LR input pixel of `runner`, measured (Linux): the growth of the
    peak resident set from one run at each of two small sizes, divided by the pixels between them.
    Runtimes differ wildly from the layer count: ONNX Runtime runs DRCN's 16 recursions before any
    reconstruction and keeps ~17 of its 256-channel activations alive. None where not measurable."""
    base = _status_bytes("VmRSS")
    if base is None or not _reset_peak():
        return None
    peaks = []
    for h, w in sizes:
        runner(np.zeros((1, 1, h, w), np.float32))
        peaks.append((_status_bytes("VmHWM") or base) - base)
    (h0, w0), (h1, w1) = sizes
    return max(0.0, (peaks[1] - peaks[0]) / (h1 * w1 - h0 * w0))


def runner_bytes_per_lr_pixel(runner) -> float:
    """Peak bytes per LR pixel for tiling decisions: the larger of the measured value and the
    layer estimate (largest activation x ACTIVATIONS_ALIVE); cached on the runner."""
    cached = getattr(runner, "_bytes_per_lr_pixel", None)
    if cached is not None:
        return cached
    arch = runner_arch(runner)
    estimate = activation_bytes_per_lr_pixel(arch) * ACTIVATIONS_ALIVE if arch is not None else 0.0
    measured = None
    if getattr(runner, "max_input_hw", None) is None:  # GPU engines: device memory, not measured here
        try:
            measured = measured_bytes_per_lr_pixel(runner)
        except Exception:  # noqa: BLE001 - a failed probe falls back to the estimate
            measured = None
    value = max(estimate, 1.25 * measured if measured else 0.0)
    try:
        runner._bytes_per_lr_pixel = value
    except AttributeError:
        pass
    return value


def auto_tile(model: nn.Module | None, lr_h: int, lr_w: int, *, budget_bytes: int | None = None,
              max_hw: tuple[int, int] | None = None, overlap: int | None = None,
              bytes_per_lr_pixel: float | None = None) -> tuple[int, int] | None:
    """(tile height, tile width) in LR pixels for a frame that would not fit: the grid of tiles
    whose crops (tile + overlap on each side, clipped to the frame) each stay within the memory
    budget (a quarter of available memory by default) and inside `max_hw` (an engine's largest
    input), with the least total work (pixels computed, overlaps included). None when the whole
    frame fits. `bytes_per_lr_pixel` (peak memory per LR pixel) defaults to the layer estimate."""
    budget = budget_bytes if budget_bytes is not None else int(available_memory() * MEMORY_FRACTION)
    if bytes_per_lr_pixel is not None:
        per_px = bytes_per_lr_pixel
    else:
        per_px = activation_bytes_per_lr_pixel(model) * ACTIVATIONS_ALIVE if model is not None else 0
    ov = overlap if overlap is not None else (receptive_radius(model) if model is not None else 0)
    max_h, max_w = max_hw if max_hw is not None else (lr_h, lr_w)

    def fits(ch, cw):
        return per_px * ch * cw <= budget and ch <= max_h and cw <= max_w

    if fits(lr_h, lr_w):
        return None
    best = None
    for ny in range(1, min(lr_h, 256) + 1):
        th = math.ceil(lr_h / ny)
        ch = lr_h if ny == 1 else min(lr_h, th + 2 * ov)
        for nx in range(1, min(lr_w, 256) + 1):
            tw = math.ceil(lr_w / nx)
            cw = lr_w if nx == 1 else min(lr_w, tw + 2 * ov)
            if fits(ch, cw):
                work = ny * nx * ch * cw  # border tiles are a little smaller: an upper bound
                if best is None or work < best[0]:
                    best = (work, th, tw)
                break  # more columns only add work once one count fits
    if best is None or min(best[1], best[2]) < 4:
        limit = f"engine inputs up to {max_hw[1]}x{max_hw[0]}, " if max_hw is not None else ""
        raise SRExportError(f"not enough memory to tile a {lr_w}x{lr_h} input ({limit}budget "
                            f"{budget / 2**20:.0f} MiB, receptive radius {ov} LR pixels)")
    return best[1], best[2]


def _bounds(n: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, n) into ceil(n / tile) nearly equal parts."""
    parts = max(1, math.ceil(n / tile))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i + 1] > edges[i]]


def runner_arch(runner) -> nn.Module | None:
    """The network architecture behind a runner (weights may be untrained), for radius and memory."""
    return getattr(runner, "arch", None) or getattr(runner, "model", None)


def upscale_tiled(runner, lr: np.ndarray, scale: int, tile: int | tuple[int, int] | str | None,
                  overlap: int | None = None) -> np.ndarray:
    """`runner(lr)` computed tile by tile. `lr` is (N, 1, H, W); `tile` an LR tile side (or
    (height, width)), "auto" (tile only when the frame would not fit in memory or in the engine)
    or None (no tiling); `overlap` defaults to the receptive radius of the runner's network."""
    lr = np.asarray(lr)
    if lr.ndim != 4:
        raise SRExportError(f"expected an (N, 1, H, W) array, got shape {lr.shape}")
    n, c, h, w = lr.shape
    max_hw = getattr(runner, "max_input_hw", None)
    if tile is None and max_hw is not None and (h > max_hw[0] or w > max_hw[1]):
        tile = "auto"  # larger than the engine's optimization profile allows
    if tile is None:
        return runner(lr)
    arch = runner_arch(runner)
    if overlap is None:
        if arch is None:
            raise SRExportError("tiling needs the overlap: the runner has no network to compute it from")
        overlap = receptive_radius(arch)
    if tile == "auto":
        tile = auto_tile(arch, h, w, max_hw=max_hw, overlap=overlap,
                         bytes_per_lr_pixel=runner_bytes_per_lr_pixel(runner))
        if tile is None:
            return runner(lr)
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(int(t) for t in tile)
    if th < 1 or tw < 1:
        raise SRExportError(f"tile size must be positive, got {tile}")
    if th >= h and tw >= w:
        return runner(lr)
    out = None
    for y0, y1 in _bounds(h, th):
        cy0, cy1 = max(0, y0 - overlap), min(h, y1 + overlap)
        for x0, x1 in _bounds(w, tw):
            cx0, cx1 = max(0, x0 - overlap), min(w, x1 + overlap)
            y = runner(np.ascontiguousarray(lr[:, :, cy0:cy1, cx0:cx1]))
            if y.shape[2:] != (scale * (cy1 - cy0), scale * (cx1 - cx0)):
                raise SRExportError(f"runner returned {y.shape[2:]} for a {cy1 - cy0}x{cx1 - cx0} tile at x{scale}")
            if out is None:
                out = np.empty((n, y.shape[1], scale * h, scale * w), dtype=y.dtype)
            out[:, :, scale * y0:scale * y1, scale * x0:scale * x1] = y[
                :, :, scale * (y0 - cy0):scale * (y1 - cy0), scale * (x0 - cx0):scale * (x1 - cx0)]
    return out


def parse_tile(value) -> int | str | None:
    """CLI `--tile N|auto|0`: an int, "auto", or None for no tiling (0 or "none")."""
    if value is None:
        return None
    if isinstance(value, int):
        return value or None
    text = str(value).strip().lower()
    if text in ("", "0", "none", "off"):
        return None
    if text == "auto":
        return "auto"
    try:
        v = int(text)
    except ValueError:
        raise SRExportError(f"--tile must be a positive integer, 'auto' or 0, got {value!r}") from None
    if v < 0:
        raise SRExportError(f"--tile must be a positive integer, 'auto' or 0, got {value!r}")
    return v or None
