"""Speed rewrites of an FP32 ONNX graph for ONNX Runtime's CPU provider (the tuned path).

ONNX Runtime runs `ConvTranspose` as a GEMM followed by a scalar, single-threaded col2im, far
slower than its `Conv` kernels (blocked NCHWc layout, fused activations and sums). A
ConvTranspose can be written as a Conv with the same output, exactly (the same products,
summed in another order):

* stride 1: a Conv with the kernel flipped in both spatial axes, input and output channels
  swapped, and padding k - 1 - p (RED's decoder: about twice as fast).
* stride s whose output is exactly s x the input (FSRCNN's 9x9 and RED's final upsampler): every
  output phase (r_h, r_w) of the s x s grid is a Conv of the input with the kernel taps that land
  on that phase; the s² phases become the output channels of one Conv and DepthToSpace (CRD)
  interleaves them, the sub-pixel (ESPCN) form of the same layer. It only pays when the s² x Cout
  outputs fill whole channel blocks (x4 with one output channel), so by default only then.

The other rewrites target the NCHWc kernels, which work on channel blocks of 16 (AVX-512; 8 on
AVX2) and pad smaller counts:

* a PRelu with one slope for every channel (FSRCNN as initialised) becomes LeakyRelu, which ONNX
  Runtime fuses into the convolution; a PRelu is never fused and forces reorders around it. With
  per-channel slopes (trained FSRCNN) the tuned path switches the NCHWc layout off instead, and
  each PRelu becomes Max(x, x * slope), two passes over the tensor instead of ORT's slow PRelu
  (channels with a slope above 1 are negated around it to make that form exact). A per-channel
  PRelu between a Conv and a 1x1 Conv with few outputs (FSRCNN's 56 -> 12 shrink) goes entirely:
  the linear part of PRelu rides through the first Conv as extra channels (`rewrite_prelu_to_relu`).
* a Conv whose output feeds only Convs (through at most one activation) and has a channel count
  short of a block multiple (FSRCNN's 12, 56) gets zero filters up to the multiple and its
  consumers zero weights for them, so ONNX Runtime keeps the tensor blocked.
* a convolution with one output channel (SRCNN's last 5x5 32->1, padded to 16 outputs by the
  kernels) becomes a stride-4 convolution whose 16 outputs are the pixels of a 4x4 block, plus
  DepthToSpace (3x3 kernels: a depthwise convolution plus a 1x1 convolution of ones that adds the
  channels); one with a few (ESPCN's 3x3 32->s²) becomes a 1 x k convolution producing one
  channel per kernel row plus a k x 1 convolution that sums the rows.

`optimize_onnx` applies the rewrites and, unless told not to, checks that ONNX Runtime's outputs
on the rewritten graph stay within `MAX_ABS` (1e-5) of the original's on random inputs of a few
shapes, odd and 1-pixel ones included; when they do not, the original graph is returned unchanged.
The rewrites live in transpose.py (ConvTranspose), prelu.py, blocks.py (the NCHWc-block ones) and
ensemble.py (DRCN's sum); graph.py holds the graph view they share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx

from .blocks import rewrite_narrow_conv, rewrite_pad_channels, rewrite_single_output_conv
from .ensemble import rewrite_ensemble_sum
from .graph import Graph, nchwc_block, node_attributes
from .prelu import rewrite_prelu, rewrite_prelu_to_relu
from .transpose import rewrite_conv_transpose

__all__ = ["CHECK_SIZES", "DEFAULT_PASSES", "MAX_ABS", "PASSES", "OptimizeReport", "max_abs_difference", "nchwc_block",
           "node_attributes", "optimize_onnx", "rewrite_conv_transpose", "rewrite_ensemble_sum", "rewrite_narrow_conv",
           "rewrite_pad_channels", "rewrite_prelu", "rewrite_prelu_to_relu", "rewrite_single_output_conv"]

MAX_ABS = 1e-5
CHECK_SIZES = ((1, 11, 13), (2, 5, 7))  # (N, H, W) LR inputs for the equality check: odd, tiny ones too


@dataclass
class OptimizeReport:
    rewrites: list[str] = field(default_factory=list)  # one line per rewritten node
    checked: bool = False
    max_abs: float | None = None  # worst |optimized - original| over the check inputs
    applied: bool = False  # False when nothing was rewritten or the check failed
    reason: str = ""
    nchwc: bool = True  # False: run without ORT's blocked layout (ORT_ENABLE_EXTENDED), see optimize_onnx

    def to_dict(self) -> dict:
        return {"rewrites": list(self.rewrites), "checked": self.checked, "max_abs": self.max_abs,
                "applied": self.applied, "reason": self.reason, "nchwc": self.nchwc}


def _per_channel_elementwise(proto: onnx.ModelProto) -> bool:
    """Whether the graph has a PRelu, or an elementwise op with a constant of more than one value."""
    g = Graph(proto)
    for node in g.graph.node:
        if node.op_type == "PRelu":
            return True
        if node.op_type in ("Mul", "Add", "Min", "Max") and any(
                (c := g.const(i)) is not None and c.size > 1 for i in node.input):
            return True
    return False


def max_abs_difference(a: onnx.ModelProto, b: onnx.ModelProto,
                       sizes: Sequence[Sequence[int]] = CHECK_SIZES, seed: int = 0) -> float:
    """Worst |a(x) - b(x)| in ONNX Runtime (FP32, all graph optimizations) over random x of `sizes`."""
    from ..runtime import OnnxRuntimeRunner

    ra, rb = OnnxRuntimeRunner(a.SerializeToString()), OnnxRuntimeRunner(b.SerializeToString())
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n, h, w in sizes:
        x = rng.random((n, 1, h, w), dtype=np.float32)
        ya, yb = ra(x), rb(x)
        if ya.shape != yb.shape:
            return float("inf")
        diff = np.abs(ya.astype(np.float64) - yb)
        worst = max(worst, float(diff.max()) if np.all(np.isfinite(diff)) else float("inf"))
    return worst


# The rewrites `optimize_onnx` applies, in order. Measured on a 2-core AVX-512 CPU, ONNX Runtime 1.32,
# x2 at 960x540 -> 1920x1080: stride-1 ConvTranspose -> Conv halves RED's decoder; the narrow-conv
# split halves SRCNN and trims ESPCN; LeakyRelu for a uniform PRelu takes FSRCNN from ~330 to
# ~230 ms, and elementwise ops for trained per-channel slopes from 193 to 148 ms. Strided ConvTranspose -> phase Conv + DepthToSpace is correct but slower than ONNX
# Runtime's own ConvTranspose for FSRCNN's 56->1 layer at x2 and x3 (its s² = 4 or 9 outputs are
# padded to 16 channels) and faster at x4 (16 outputs: 27 vs 32 ms), so it is used only there.
# Padding FSRCNN's 12-channel layers to 16 (zero filters) keeps them in the blocked layout: -10%.
# SRCNN's last 5x5 32->1 as depthwise + channel sum instead of the row split: 147 -> 138 ms at x2,
# 154 -> 141 ms at x4 (side by side); SRCNN 9-5-5 565 -> 558 ms; VDSR's 3x3 64->1 within noise.
# As 4x4 block phases instead of depthwise + sum: SRCNN 132.8 -> 125.4 ms at x2, 136.6 -> 121.0 at
# x3, 133.5 -> 121.1 at x4, 9-5-5 546.3 -> 525.6 (side by side); for 3x3 kernels phases are no
# faster (VDSR 1470 -> 1475 ms at 1/4 of 1080p; DRCN with one of its 16 reconstructions, +1.3%).
# PRelu -> Relu with the linear part as extra channels of the first Conv (side by side, 15 repeats):
# FSRCNN-s 70.6 -> 65.6 ms at x2, 40.7 -> 37.5 at x3, 26.4 -> 24.9 at x4; FSRCNN 126.9 -> 127.5,
# 76.4 -> 74.0, 55.7 -> 55.7 (its 80-channel tensor costs the shrink Conv what the PRelu passes saved).
DEFAULT_PASSES = ("ensemble_sum", "conv_transpose_aligned", "prelu_to_relu", "prelu_uniform", "pad_channels",
                  "single_output_conv", "narrow_conv")
PASSES = {
    "conv_transpose_stride1": lambda p: rewrite_conv_transpose(p, strided=False),
    "conv_transpose": lambda p: rewrite_conv_transpose(p, strided=True),
    "conv_transpose_aligned": lambda p: rewrite_conv_transpose(p, strided="aligned"),
    "prelu_to_relu": rewrite_prelu_to_relu,
    "prelu_uniform": rewrite_prelu,
    "narrow_conv": rewrite_narrow_conv,
    "single_output_conv": rewrite_single_output_conv,
    "pad_channels": rewrite_pad_channels,
    "ensemble_sum": rewrite_ensemble_sum,
}


def optimize_onnx(proto: onnx.ModelProto, *, check: bool = True, max_abs: float = MAX_ABS,
                  sizes: Sequence[Sequence[int]] = CHECK_SIZES,
                  passes: Sequence[str] = DEFAULT_PASSES) -> tuple[onnx.ModelProto, OptimizeReport]:
    """(graph to run, report). Returns `proto` itself when nothing applies or the check fails."""
    report = OptimizeReport()
    rewritten = proto
    for name in passes:
        if name not in PASSES:
            raise ValueError(f"unknown rewrite {name!r}; known: {', '.join(PASSES)}")
        if name == "pad_channels" and _per_channel_elementwise(rewritten):
            # A per-channel PRelu (or the Mul/Min/Max/Add it became) has no blocked (NCHWc) kernel,
            # so ONNX Runtime reorders to NCHW and back around each one; plain NCHW convolutions are
            # faster then (FSRCNN x2 with per-channel slopes, 960x540, 2 cores: 137 ms against 166
            # blocked), and padding channels only adds work there.
            report.nchwc = False
            continue
        rewritten, notes = PASSES[name](rewritten)
        report.rewrites += notes
    if not report.rewrites:
        report.reason = "nothing to rewrite"
        return proto, report
    if check:
        report.checked = True
        report.max_abs = max_abs_difference(proto, rewritten, sizes)
        if not report.max_abs <= max_abs:
            report.reason = f"rewritten graph differs by {report.max_abs:.3g} > {max_abs:g}; kept the original"
            return proto, report
    report.applied = True
    return rewritten, report
