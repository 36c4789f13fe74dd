"""Numerical comparison of an artifact against its PyTorch reference.

`compare(reference, candidate, inputs)` runs both on every input and returns a `VerifyResult`:
truthy when every case meets the thresholds, printable as a table, serialisable to JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]

# LR sizes (N, H, W) used when none are given: small, one odd/prime, one batch of 2.
DEFAULT_SIZES = ((1, 24, 24), (2, 15, 21), (1, 37, 53))


@dataclass
class CaseResult:
    input_shape: list[int]
    output_shape: list[int]
    max_abs: float
    mean_abs: float
    psnr_db: float  # PSNR of the difference, peak 1.0 (values live in [0, 1])
    finite: bool
    shape_ok: bool


@dataclass
class VerifyResult:
    reference: str
    candidate: str
    max_abs_limit: float | None
    min_psnr_db: float | None
    cases: list[CaseResult] = field(default_factory=list)
    note: str = ""

    def case_passed(self, c: CaseResult) -> bool:
        ok = c.finite and c.shape_ok
        if self.max_abs_limit is not None:
            ok = ok and c.max_abs <= self.max_abs_limit
        if self.min_psnr_db is not None:
            ok = ok and c.psnr_db >= self.min_psnr_db
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(self.case_passed(c) for c in self.cases)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def worst_max_abs(self) -> float:
        return max(c.max_abs for c in self.cases)

    @property
    def worst_psnr_db(self) -> float:
        return min(c.psnr_db for c in self.cases)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for c in d["cases"]:  # JSON has no infinity
            c["psnr_db"] = None if math.isinf(c["psnr_db"]) else c["psnr_db"]
        return d

    def limits(self) -> str:
        parts = []
        if self.max_abs_limit is not None:
            parts.append(f"max abs <= {self.max_abs_limit:g}")
        if self.min_psnr_db is not None:
            parts.append(f"PSNR >= {self.min_psnr_db:g} dB")
        return ", ".join(parts) or "finite, right shape"

    def __str__(self) -> str:
        lines = [f"{self.candidate} vs {self.reference} ({self.limits()}): {'PASS' if self else 'FAIL'}"]
        lines.append(f"  {'input':>16} {'output':>18} {'max abs':>10} {'mean abs':>10} {'PSNR dB':>8}  ok")
        for c in self.cases:
            lines.append(
                f"  {'x'.join(map(str, c.input_shape)):>16} {'x'.join(map(str, c.output_shape)):>18} "
                f"{c.max_abs:10.3g} {c.mean_abs:10.3g} {c.psnr_db:8.2f}  {'yes' if self.case_passed(c) else 'NO'}"
                + ("" if c.finite else "  (NaN/Inf)") + ("" if c.shape_ok else "  (wrong shape)")
            )
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def diff_case(ref: np.ndarray, out: np.ndarray, inp_shape: Sequence[int]) -> CaseResult:
    finite = bool(np.isfinite(out).all())
    shape_ok = tuple(out.shape) == tuple(ref.shape)
    if shape_ok:
        d = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        d = np.where(np.isfinite(d), d, np.inf)
        max_abs, mean_abs = float(d.max()), float(d.mean())
        mse = float((d * d).mean())
        psnr = math.inf if mse == 0 else (-math.inf if not math.isfinite(mse) else 10 * math.log10(1.0 / mse))
    else:
        max_abs = mean_abs = math.inf
        psnr = -math.inf
    return CaseResult(list(inp_shape), list(out.shape), max_abs, mean_abs, psnr, finite, shape_ok)


def compare(reference: Runner, candidate: Runner, inputs: Sequence[np.ndarray], *,
            reference_name: str = "pytorch-fp32", candidate_name: str = "candidate",
            max_abs: float | None = None, min_psnr_db: float | None = None) -> VerifyResult:
    result = VerifyResult(reference_name, candidate_name, max_abs, min_psnr_db)
    for x in inputs:
        result.cases.append(diff_case(reference(x), candidate(x), x.shape))
    return result


def real_inputs(sizes: Sequence[Sequence[int]] = DEFAULT_SIZES, seed: int = 0) -> list[np.ndarray]:
    """Crops (N, 1, H, W) of the real LR luminance images shipped in `srexport/samples`, in [0, 1].

    Sizes larger than a sample are reached by MATLAB-style symmetric mirroring of the image, so
    any profile size (up to 1080p outputs) is covered by real image content.
    """
    from PIL import Image

    folder = Path(__file__).with_name("samples")
    images = [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted(folder.glob("*.png"))]
    rng = np.random.default_rng(seed)
    out = []
    for n, h, w in sizes:
        batch = []
        for i in range(n):
            img = images[(len(out) + i) % len(images)]
            reps = (-(-h // img.shape[0]), -(-w // img.shape[1]))
            if reps != (1, 1):
                img = np.pad(img, ((0, (reps[0] - 1) * img.shape[0]), (0, (reps[1] - 1) * img.shape[1])),
                             mode="symmetric")
            y, x = rng.integers(0, img.shape[0] - h + 1), rng.integers(0, img.shape[1] - w + 1)
            batch.append(img[y:y + h, x:x + w])
        out.append(np.stack(batch)[:, None].copy())
    return out
