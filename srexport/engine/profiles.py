"""An engine's optimization profile and builder settings (`EngineOptions`), and profiles sized by memory.

TensorRT sizes an engine's activation memory for the profile's largest input, so the default maximum
shape comes from a memory budget rather than a fixed frame: DRCN keeps its 16 recursions' 256-channel
states at once, and a profile covering a 1080p output would need tens of GB. The builder's own figure
is linear in the number of input pixels (checked against real TensorRT-RTX builds in the tests), so
two probe builds (`build.activation_model`) predict it for any shape before the real build.
Frames larger than the profile are tiled by `srexport upscale` with the profile's maximum as the tile.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from ..errors import SRExportError
from ..onnx_export import INPUT_NAME

DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of activations; an RTX card with 8 GB keeps room for the rest
# The default minimum is a real tile, not 1x1: a tiny minimum costs speed at the shapes that matter,
# and TensorRT-RTX specialises kernels per shape range.
DEFAULT_MIN_SIDE = 32
LARGEST_OUTPUT = (1080, 1920)  # the default maximum covers a 1080p output when the budget allows
# The builder's figure is linear in pixels only above a floor of scratch memory (about 9 MB here),
# and its kernels for transposed convolutions change with size: fitted from 128² and 256² probes,
# TensorRT-RTX 1.7's default profiles of all eight networks at x2-x4 came out between 0.79x
# (FSRCNN-s x2 FP16) and 1.14x of its figure (tools/engine_table.py). The default maximum keeps 20 %
# of the budget in hand; a built engine whose reported figure is over the budget is refused.
HEADROOM = 0.8


def parse_shape(text: str) -> tuple[int, int]:
    """"540x960" -> (540, 960): an LR height x width."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise SRExportError(f"bad shape {text!r}: expected HEIGHTxWIDTH of positive integers, e.g. 540x960")
    return int(match[1]), int(match[2])


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10 ** 6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10 ** 9, "gib": 1 << 30}


def parse_bytes(text) -> int:
    """"2GiB" / "1.5 GB" / "512m" / 1048576 -> bytes."""
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = _UNITS.get(match[2].lower()) if match else None
        try:
            value = int(float(match[1]) * unit) if unit else -1
        except ValueError:
            value = -1
    if value <= 0:
        raise SRExportError(f"bad memory size {text!r}: expected a positive size such as 2GiB, 1.5GB or 512MiB")
    return value


def human_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


@dataclass(frozen=True)
class EngineOptions:
    """The optimization profile (LR sizes, batch) and builder settings of one engine."""

    min_shape: tuple[int, int]
    opt_shape: tuple[int, int]
    max_shape: tuple[int, int]
    batch: tuple[int, int, int] = (1, 1, 1)
    workspace_gib: float = 4
    optimization_level: int = 3
    # TensorRT 10/11 only: an engine that runs on every GPU from Ampere on, or on later TensorRT versions.
    hardware_compatible: bool = False
    version_compatible: bool = False

    def __post_init__(self):
        for name in ("min_shape", "opt_shape", "max_shape", "batch"):  # lists from JSON or a CLI
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        shapes = (self.min_shape, self.opt_shape, self.max_shape)
        if any(len(s) != 2 or any(not isinstance(v, int) or v < 1 for v in s) for s in shapes):
            raise SRExportError(f"profile shapes must be (height, width) of positive integers, got {shapes}")
        if len(self.batch) != 3 or any(not isinstance(v, int) or v < 1 for v in self.batch):
            raise SRExportError(f"batch must be (min, opt, max) positive integers, got {self.batch}")
        for i, what in enumerate(("height", "width")):
            if not self.min_shape[i] <= self.opt_shape[i] <= self.max_shape[i]:
                raise SRExportError(f"profile {what}s must satisfy min <= opt <= max, got "
                                    f"{self.min_shape[i]}, {self.opt_shape[i]}, {self.max_shape[i]}")
        if not self.batch[0] <= self.batch[1] <= self.batch[2]:
            raise SRExportError(f"batch must satisfy min <= opt <= max, got {self.batch}")
        if not self.workspace_gib > 0:
            raise SRExportError(f"workspace must be positive, got {self.workspace_gib} GiB")
        if self.optimization_level not in range(6):
            raise SRExportError(f"optimization level must be 0..5, got {self.optimization_level}")

    @classmethod
    def default_for(cls, scale: int, max_shape: tuple[int, int] | None = None, **settings) -> EngineOptions:
        """Max covers a 1080p output (or is `max_shape`, e.g. from `ActivationModel.largest_shape`);
        opt is half of it (tiles and 720p-ish frames); min is a 32x32 tile (or max, if smaller)."""
        if not isinstance(scale, int) or scale < 1:
            raise SRExportError(f"scale must be a positive integer, got {scale!r}")
        max_shape = tuple(max_shape or (math.ceil(LARGEST_OUTPUT[0] / scale), math.ceil(LARGEST_OUTPUT[1] / scale)))
        min_shape = tuple(min(DEFAULT_MIN_SIDE, side) for side in max_shape)
        opt_shape = tuple(max(lo, math.ceil(hi / 2)) for lo, hi in zip(min_shape, max_shape))
        return cls(min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape, **settings)

    def with_shapes(self, **shapes) -> EngineOptions:
        return dataclasses.replace(self, **shapes)

    def profile(self) -> dict:
        """The (N, 1, H, W) shapes of the input profile."""
        return {"input": INPUT_NAME,
                **{k: [self.batch[i], 1, *shape] for i, (k, shape) in
                   enumerate((("min", self.min_shape), ("opt", self.opt_shape), ("max", self.max_shape)))}}

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class ActivationModel:
    """bytes = fixed + per_pixel * (batch * H * W) for the LR input at the profile's maximum: what the
    builder reports as its activation memory, fitted from two probe builds of the same graph."""

    fixed: float
    per_pixel: float
    measured_by: str

    def bytes_for(self, shape: tuple[int, int], batch: int = 1) -> int:
        return int(self.fixed + self.per_pixel * batch * shape[0] * shape[1])

    def largest_shape(self, budget: int, scale: int, batch: int = 1) -> tuple[int, int]:
        """The largest LR shape of 16:9 aspect, up to a 1080p output, whose activations fit `budget`.
        Sides are multiples of 8 (tiles stay aligned) unless the shape is the 1080p cover itself."""
        full = (math.ceil(LARGEST_OUTPUT[0] / scale), math.ceil(LARGEST_OUTPUT[1] / scale))
        usable = budget * HEADROOM
        if self.bytes_for(full, batch) <= usable:
            return full
        pixels = (usable - self.fixed) / (self.per_pixel * batch)
        height = int(math.sqrt(max(pixels, 0) * 9 / 16)) // 8 * 8
        width = int(height * 16 / 9) // 8 * 8
        if height < DEFAULT_MIN_SIDE:
            raise SRExportError(
                f"a memory budget of {human_bytes(budget)} does not fit even a {DEFAULT_MIN_SIDE}x{DEFAULT_MIN_SIDE} "
                f"profile ({human_bytes(self.bytes_for((DEFAULT_MIN_SIDE, DEFAULT_MIN_SIDE), batch))}, "
                f"{self.measured_by}); raise the budget")
        return height, width

    def check(self, options: EngineOptions, budget: int, where) -> int:
        """The activation bytes of `options`' maximum, or SRExportError when over `budget`."""
        need = self.bytes_for(options.max_shape, options.batch[2])
        if need > budget:
            raise SRExportError(
                f"{where}: a profile up to {options.max_shape[0]}x{options.max_shape[1]} (batch {options.batch[2]}) "
                f"would need {human_bytes(need)} of activation memory ({self.measured_by}), over the "
                f"{human_bytes(budget)} budget; lower the maximum shape or raise the budget (larger frames are "
                "tiled through the profile's maximum)")
        return need

    def to_dict(self) -> dict:
        return {"fixed_bytes": round(self.fixed), "bytes_per_input_pixel": round(self.per_pixel, 2),
                "measured_by": self.measured_by}
