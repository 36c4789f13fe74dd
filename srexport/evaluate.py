"""Evaluation by the published protocol (REFERENCE.md section 2), per image and mean.

For every image of a folder: (hr_y, lr_y) = data.protocol_pair(image, scale); the network runs on
lr_y / 255 as float32 (N = 1); its output * 255 is rounded to 8 bits (data.round_uint8); PSNR and
SSIM against hr_y with a `scale`-pixel border. The bicubic baseline (8-bit MATLAB bicubic of the
same LR) is computed alongside, and the published figure for the network, scale and set (the
folder's name, e.g. "Set5") is attached when published.py has one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import published as pub
from .atomic import atomic_output, check_writable
from .data import imresize, list_images, load_image, protocol_pair, round_uint8
from .errors import SRExportError
from .metrics import psnr, ssim

CROP = 160  # side of the comparison crop, HR pixels


@dataclass
class ImageResult:
    name: str
    width: int  # HR size after modcrop
    height: int
    bicubic_psnr: float
    bicubic_ssim: float
    psnr: float
    ssim: float


@dataclass
class EvalReport:
    network: str | None
    scale: int
    dataset: str
    data_dir: str
    images: list[ImageResult]
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    published: dict | None = None
    published_bicubic: dict | None = None
    unpublished_reason: str | None = None
    seconds: float = 0.0
    saved: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (infinite PSNRs of identical images become null)."""
        return _finite(asdict(self))

    def table(self) -> str:
        """A printable text table: per image, mean, then the published figures."""
        name_w = max([len("image")] + [len(r.name) for r in self.images] + [len("mean")])
        head = f"{'image':<{name_w}}  {'bicubic PSNR':>12} {'SSIM':>7}  {'model PSNR':>10} {'SSIM':>7}  {'gain':>6}"
        title = f"{self.network or 'model'} x{self.scale} on {self.dataset} ({len(self.images)} images, Y channel, border {self.scale})"
        lines = [title, head, "-" * len(head)]

        def row(label, bp, bs, mp, ms):
            return (f"{label:<{name_w}}  {_f(bp, 2):>12} {_f(bs, 4):>7}  {_f(mp, 2):>10} {_f(ms, 4):>7}  "
                    f"{_f(mp - bp, 2, sign=True):>6}")

        for r in self.images:
            lines.append(row(r.name, r.bicubic_psnr, r.bicubic_ssim, r.psnr, r.ssim))
        lines.append("-" * len(head))
        lines.append(row("mean", self.bicubic_psnr, self.bicubic_ssim, self.psnr, self.ssim))
        pb, pm = self.published_bicubic, self.published
        if pb or pm:
            bp = pb["psnr"] if pb else None
            bs = pb["ssim"] if pb else None
            mp = pm["psnr"] if pm else None
            ms = pm["ssim"] if pm else None
            label = "published"
            lines.append(f"{label:<{name_w}}  {_f(bp, 2):>12} {_f(bs, 4):>7}  {_f(mp, 2):>10} {_f(ms, 4):>7}  "
                         + (f"{_f(self.psnr - mp, 2, sign=True):>6} vs published" if mp is not None else ""))
            if pm:
                lines.append(f"  published: {pm['source']}; {pm['note']}")
                if pm.get("t91_psnr") is not None:
                    lines.append(f"  published 91-image-only PSNR: {pm['t91_psnr']:.2f}")
        if not pm and self.network:
            reason = self.unpublished_reason or f"no published figure for {self.network} x{self.scale} on {self.dataset}"
            lines.append(f"  {reason}")
        return "\n".join(lines)


def _f(x, digits: int, sign: bool = False) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class _ModuleRunner:
    def __init__(self, model: nn.Module, device: str | torch.device):
        self.model, self.device = model, torch.device(device)
        self.param = next(iter(model.parameters()), None)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        dtype = self.param.dtype if self.param is not None and self.param.is_floating_point() else torch.float32
        y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, dtype))
        return y.float().cpu().numpy()


def evaluate(model_or_runner: nn.Module | Callable[[np.ndarray], np.ndarray], data_dir: str | os.PathLike,
             scale: int, *, network: str | None = None, save_images: str | os.PathLike | None = None,
             device: str = "cpu", force: bool = False, precision: str = "fp32") -> EvalReport:
    """Evaluate a network (nn.Module) or a runner (callable (1,1,H,W) float32 -> (1,1,sH,sW)) on
    every image of `data_dir` at `scale` by the published protocol.

    `network` names the network for the published lookup (taken from the module when omitted).
    `save_images`: a folder for `<stem>_x<s>_<network>.png` (the SR Y image) and
    `<stem>_x<s>_compare.png` (a bicubic | model | HR crop); existing files need `force`.
    `precision` other than "fp32" runs a network through `runtime.open_runner` at that precision
    (bf16: the checked CPU routes) instead of PyTorch FP32.
    """
    t0 = time.perf_counter()
    scale = int(scale)
    if scale not in (2, 3, 4):
        raise SRExportError(f"scale must be one of 2, 3, 4, got {scale}")
    restore_training = None
    if isinstance(model_or_runner, nn.Module):
        model = model_or_runner
        network = network or getattr(model, "network_name", None)
        model_scale = getattr(model, "scale", None)
        if model_scale is not None and model_scale != scale:
            raise SRExportError(f"{network or 'model'} is a x{model_scale} network, asked to evaluate x{scale}")
        restore_training = model.training
        model.eval()
        if precision == "fp32":
            runner = _ModuleRunner(model, device)
        else:
            from .runtime import open_runner

            runner = open_runner(model=model, precision=precision)
    elif callable(model_or_runner):
        runner = model_or_runner
    else:
        raise SRExportError(f"cannot evaluate a {type(model_or_runner).__name__}: expected a network or a runner")

    data_dir = Path(data_dir)
    paths = list_images(data_dir)
    dataset = data_dir.resolve().name
    tag = network or "model"
    out_dir = Path(save_images) if save_images is not None else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise SRExportError(f"{out_dir}: is not a folder")
        for p in paths:
            for name in _image_names(p, scale, tag):
                check_writable(out_dir / name, force)

    results, saved = [], []
    try:
        for path in paths:
            hr_y, lr_y = protocol_pair(load_image(path), scale)
            x = (lr_y / 255.0).astype(np.float32)[None, None]
            out = np.asarray(runner(x))
            want = (1, 1) + hr_y.shape
            if out.shape != want:
                raise SRExportError(f"{path.name}: network output has shape {out.shape}, expected {want}")
            sr = round_uint8(out[0, 0].astype(np.float64) * 255.0)
            ilr = round_uint8(imresize(lr_y, scale))
            results.append(ImageResult(
                name=path.name, width=hr_y.shape[1], height=hr_y.shape[0],
                bicubic_psnr=psnr(ilr, hr_y, border=scale), bicubic_ssim=ssim(ilr, hr_y, border=scale),
                psnr=psnr(sr, hr_y, border=scale), ssim=ssim(sr, hr_y, border=scale),
            ))
            if out_dir is not None:
                saved += _save(out_dir, path, scale, tag, sr, ilr, hr_y, force)
    finally:
        if restore_training is not None:
            model_or_runner.train(restore_training)

    return EvalReport(
        network=network, scale=scale, dataset=dataset, data_dir=str(data_dir),
        images=results,
        psnr=float(np.mean([r.psnr for r in results])),
        ssim=float(np.mean([r.ssim for r in results])),
        bicubic_psnr=float(np.mean([r.bicubic_psnr for r in results])),
        bicubic_ssim=float(np.mean([r.bicubic_ssim for r in results])),
        published=pub.published(network, scale, dataset) if network else None,
        published_bicubic=pub.bicubic(scale, dataset),
        unpublished_reason=pub.unpublished_reason(network) if network else None,
        seconds=time.perf_counter() - t0,
        saved=saved,
    )


def _image_names(path: Path, scale: int, tag: str) -> tuple[str, str]:
    return f"{path.stem}_x{scale}_{tag}.png", f"{path.stem}_x{scale}_compare.png"


def detail_crop(hr: np.ndarray, size: int) -> tuple[int, int, int]:
    """(top, left, side) of the square window of side <= `size` with the most HR gradient energy."""
    h, w = hr.shape
    side = min(size, h, w)
    g = np.zeros_like(hr)
    g[:, 1:] += np.abs(np.diff(hr, axis=1))
    g[1:, :] += np.abs(np.diff(hr, axis=0))
    c = np.pad(g.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    box = c[side:, side:] - c[:-side, side:] - c[side:, :-side] + c[:-side, :-side]  # (h-side+1, w-side+1)
    top, left = np.unravel_index(int(np.argmax(box)), box.shape)
    return int(top), int(left), side


def _save(out_dir: Path, path: Path, scale: int, tag: str, sr: np.ndarray, ilr: np.ndarray,
          hr: np.ndarray, force: bool) -> list[str]:
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    sr_name, cmp_name = _image_names(path, scale, tag)
    top, left, side = detail_crop(hr, CROP)
    gap = 4
    canvas = np.full((side, 3 * side + 2 * gap), 255, np.uint8)
    for i, img in enumerate((ilr, sr, hr)):
        canvas[:, i * (side + gap): i * (side + gap) + side] = img[top:top + side, left:left + side]
    written = []
    for name, arr in ((sr_name, sr.astype(np.uint8)), (cmp_name, canvas)):
        with atomic_output(out_dir / name, force) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")  # 2-D uint8 -> mode L
        written.append(str(out_dir / name))
    return written
