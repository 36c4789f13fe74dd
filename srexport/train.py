"""Training: per-network recipes (REFERENCE.md section 4) and a resumable training loop.

`train()` writes three things beside each other:
  <out>.safetensors         the best-validation checkpoint (checkpoint.save_checkpoint, atomic),
                            rewritten whenever validation PSNR improves and once more at the end
                            with the full history;
  <out>.resume.safetensors  written after every epoch: the latest weights, optimizer and scheduler
                            state, epoch, every RNG state and the history, without pickle
                            (tensors in safetensors, everything else as JSON in its metadata);
  <out>.curve.png           training loss and validation PSNR per epoch, at the end.
The checkpoint is written before the resume file, so a run killed at any moment (SIGKILL included)
resumes from the last completed epoch and loses at most the epoch in progress; the resumed run
repeats that epoch with the same optimizer, scheduler and random state, so on the CPU it gives the
same weights as an uninterrupted run (on a GPU, cuDNN's non-deterministic kernels make it equal
only up to floating-point noise).

With precision="bf16" the forward and backward passes run under bfloat16 autocast (weights,
optimizer state, loss and validation stay float32). On CUDA the network is kept channels-last at
either precision, the layout tensor cores read without transposes. Hopper's tensor cores run bf16 at
twice their TF32 rate (NVIDIA's datasheet; not measured side by side here). The default, "fp32", is
what the CPU wants.

Loss is the per-pixel mean squared error on images in [0, 1] (PyTorch's mean reduction) unless a
recipe sets loss_reduction="sum". The papers' Caffe/MatConvNet losses summed over pixels, so their
SGD learning rates are not directly transferable; each recipe's `why` says how its numbers were
chosen, with the short CPU comparisons measured for this module (comment above _SRCNN_WHY).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .archs import build, check_scale, get_spec, list_networks
from .atomic import atomic_output, check_writable
from .checkpoint import METADATA_KEY, ModelRecord, load_checkpoint, save_checkpoint, weights_sha256
from .data import imresize, list_images, load_image, protocol_pair, round_uint8
from .errors import SRExportError
from .metrics import psnr
from .patches import PatchSet, default_holdout, split_holdout

RESUME_KEY = "srexport_resume"
RESUME_FORMAT = 1
PRECISIONS = ("fp32", "bf16")


# ====================================================================== recipes


@dataclass(frozen=True)
class Recipe:
    """How one network is trained. Patch size and stride are in HR pixels (`hr_patch`, `stride`)
    or, when `lr_patch` is set, in LR pixels times the scale (ESPCN's 17r x 17r sub-images)."""

    network: str
    optimizer: str  # "sgd" (with momentum) or "adam"
    lr: float
    epochs: int
    batch_size: int
    hr_patch: int = 0
    stride: int = 0
    lr_patch: int = 0
    lr_stride: int = 0
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0  # L2 added to the gradient (the papers' weight decay)
    lr_mult: dict = field(default_factory=dict)  # module-name prefix -> learning-rate multiplier
    schedule: str = "none"  # "step": x gamma every step_epochs; "plateau": x gamma after `patience` epochs without a better val PSNR
    step_epochs: int = 0
    gamma: float = 0.1
    patience: int = 5
    min_lr: float = 0.0
    clip_theta: float | None = None  # adjustable clipping at theta / current lr (VDSR), see clip_mode
    clip_mode: str = "norm"  # "value": each gradient value in [-theta/lr, theta/lr]; "norm": global L2 norm <= theta/lr
    clip_norm: float | None = None  # plain global-norm clipping at a fixed bound
    loss_reduction: str = "mean"  # "mean": per-pixel mean MSE; "sum": summed over pixels and batch (the papers' Caffe/MatConvNet scale)
    recursive_supervision: bool = False  # DRCN: loss = a*mean(intermediate losses) + (1-a)*ensemble loss
    alpha_start: float = 1.0
    alpha_zero_epoch: int = 0  # a decays linearly from alpha_start to 0 at this epoch
    resize_factors: tuple = (1.0,)  # extra bicubic-downscaled copies of each training image
    init: str = "default"  # "default" (PyTorch), "he", "fsrcnn", "drcn"
    why: str = ""

    def patch_for(self, scale: int) -> tuple[int, int]:
        """(HR patch, HR stride) at `scale`; the LR patch is HR patch // scale."""
        if self.lr_patch:
            return self.lr_patch * scale, self.lr_stride * scale
        return self.hr_patch, self.stride

    def alpha(self, epoch: int) -> float:
        """DRCN's supervision weight for 0-based `epoch`."""
        if not self.recursive_supervision:
            return 0.0
        if self.alpha_zero_epoch <= 0:
            return self.alpha_start
        return self.alpha_start * max(0.0, 1.0 - epoch / self.alpha_zero_epoch)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["resize_factors"] = list(self.resize_factors)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["resize_factors"] = tuple(d.get("resize_factors", (1.0,)))
        return cls(**d)

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)


# Measured here (CPU, T91 at x3, 3 held-out T91 images, 300-900 steps, val PSNR vs bicubic 30.24 dB):
#   SRCNN 9-1-5, batch 64, 900 steps: Adam 1e-3 30.70 | SGD m0.9 lr 0.3 30.43-30.54 | 0.1 30.26 | 0.01 27.1 (300 steps)
#   VDSR, batch 16, 300 steps: Adam 1e-4 30.90 | SGD 0.1 + value clip 0.4/lr: NaN after 2 steps |
#         SGD 0.1, mean loss, norm clip 0.4/lr: stuck at bicubic | SGD 0.1, summed loss, norm clip
#         0.04/lr (the usual PyTorch port): 28.4 -> 29.7 -> 24.8, unstable
#   RED, batch 64, 900 steps: Adam 1e-3 30.98 | 3e-4 30.49 | 1e-4 29.14
#   DRCN (32 ch, 4 recursions), batch 16, 400 steps: Adam 1e-4 30.69 | 1e-3 31.15
#   ESPCN (Adam 1e-3, batch 16, 2400 steps) 30.76; FSRCNN (Adam 1e-3, batch 128, 1200 steps) 30.1-30.4.
_SRCNN_WHY = (
    "Paper: SGD with momentum 0.9, lr 1e-4 (last layer 1e-5) on a Caffe loss summed over the output "
    "pixels, N(0, 0.001) init, 33x33 sub-images stride 14, batch 128, ~1e8 backprops. Kept: patches, "
    "stride, last layer x0.1. Adam 1e-3 with a x0.1 step at epoch 80 of 120 instead: measured here over "
    "900 steps Adam 1e-3 reached 30.70 dB against 30.26-30.54 for SGD momentum 0.9 at lr 0.1-0.3 and "
    "27.1 at 0.01 (bicubic 30.24), so REFERENCE's note that staged SGD beat Adam was not reproduced in "
    "short runs. Batch 16 instead of 128: eight times the updates per epoch, at no more CPU time per "
    "epoch; 9-1-5 x3 on 5 held-out T91 images reached val 29.76 dB (Set5 32.27) in 60 epochs with the "
    "step at 40 (9 minutes on 2 CPU cores), where batch 128 had reached 29.56 (Set5 32.03) in 100 "
    "epochs. PyTorch's default init instead of N(0, 0.001), which makes the start very slow."
)
_FSRCNN_WHY = (
    "Paper: SGD lr 1e-3, deconv 1e-4, He (PReLU) init with deconv N(0, 0.001), scale augmentation "
    "0.9-0.6 and rotations. Plain SGD needs millions of iterations; Adam lr 1e-3 with the deconv at x0.1 "
    "(the paper's ratio) is the widely reproduced substitute (REFERENCE sec. 4). Kept: init, deconv "
    "multiplier, scale augmentation (1.0, 0.9, 0.8, 0.7, 0.6) plus the 8 dihedral transforms. 33-pixel "
    "HR patches (LR 11 at x3) instead of the paper's 7-pixel LR sub-images, because the network here "
    "pads to same size and tiny patches would be mostly border."
)
_SCALE_AUGMENTATION = (1.0, 0.9, 0.8, 0.7, 0.6)  # FSRCNN's bicubic-downscaled copies of each image
_SRCNN_RECIPE = Recipe(
    network="srcnn", optimizer="adam", lr=1e-3, lr_mult={"reconstruction": 0.1},
    schedule="step", step_epochs=80, gamma=0.1, epochs=120, batch_size=16, hr_patch=33, stride=14,
    why=_SRCNN_WHY,
)
_FSRCNN_RECIPE = Recipe(
    network="fsrcnn", optimizer="adam", lr=1e-3, lr_mult={"deconv": 0.1}, schedule="step",
    step_epochs=100, gamma=0.1, epochs=120, batch_size=16, hr_patch=33, stride=14,
    resize_factors=_SCALE_AUGMENTATION, init="fsrcnn", why=_FSRCNN_WHY + (
        " Batch 16 (the paper's is 128), 120 epochs with one x0.1 step at 100: on the 5 held-out T91 "
        "images x3 val reached 30.45 dB (Set5 33.08) at epoch 109 (48 minutes on one CPU core); the "
        "val PSNR was still rising at lr 1e-3 when 60 epochs with the step at 40 stopped at 30.33 "
        "(Set5 32.96), and batch 128 had reached 30.14 in 200 epochs with the step at 140."),
)
_RECIPES = {
    "srcnn": _SRCNN_RECIPE,
    "srcnn_955": _SRCNN_RECIPE.replace(
        network="srcnn_955", step_epochs=50, epochs=65, resize_factors=_SCALE_AUGMENTATION,
        why=_SRCNN_WHY + (
            " 9-5-5 differs: FSRCNN's scale augmentation (1.0, 0.9, 0.8, 0.7, 0.6), 3.3 times the patches "
            "per epoch, and 65 epochs with the step at 50 instead of 120 with the step at 80. x4 held-out val "
            "27.92 -> 27.97 dB (Set5 30.31 -> 30.33; 200 epochs of the 9-1-5 schedule had added 0.01), the "
            "paper's 9-5-5 table being ImageNet-trained. Leaving the outer 4 HR pixels of each patch out of "
            "the loss was worse (val 27.73 against 27.85 at epoch 25), and leaving 8 out left zero-padded image "
            "borders untrained (val 26.9 after 6 epochs)."),
    ),
    "fsrcnn": _FSRCNN_RECIPE,
    "fsrcnn_s": _FSRCNN_RECIPE.replace(network="fsrcnn_s", why=_FSRCNN_WHY + (
        " FSRCNN's schedule: batch 16, 120 epochs, one x0.1 step at 100 (x3 held-out val 29.78 dB, "
        "Set5 32.27, against 29.62 and 32.12 with 60 epochs and the step at 40).")),
    "espcn": Recipe(
        network="espcn", optimizer="adam", lr=1e-3, lr_mult={"body.4": 0.1}, schedule="step",
        step_epochs=800, gamma=0.1, epochs=1200, batch_size=16, lr_patch=17, lr_stride=14,
        why=(
            "Paper: 17r x 17r HR sub-images (stride 14r: (17 - sum(k mod 2)) r), MSE, lr 0.01 falling to "
            "1e-4 when improvement stalls, last layer x0.1. Kept: sub-image size and stride, last layer "
            "x0.1. Adam at 1e-3 instead of the paper's 0.01 because the paper's optimizer and loss "
            "scaling are not given and Adam 1e-3 is the widely reproduced setting. One x0.1 step at "
            "epoch 800 of 1200 instead of decay on a plateau: with 5 held-out validation images the "
            "plateau rule (x0.1 after 10 epochs without a better val PSNR) fired by epoch 70 and held "
            "1e-5 from epoch 90 (x3: val 29.11 dB after 200 epochs, Set5 31.44); the step schedule "
            "reached val 30.01 (Set5 32.45) in 10 minutes on 2 CPU cores. FSRCNN's scale augmentation "
            "(1.0-0.6) for the same number of steps (360 epochs, step at 240) gave the same val: 30.00 at x3, "
            "27.90 at x4 (27.89 without). LR is bicubic (the evaluation protocol), not the paper's Gaussian "
            "blur."
        ),
    ),
    "vdsr": Recipe(
        network="vdsr", optimizer="adam", lr=1e-4, schedule="step",
        step_epochs=30, gamma=0.1, epochs=60, batch_size=64, hr_patch=41, stride=14, init="he",
        why=(
            "Paper: SGD momentum 0.9, weight decay 1e-4, lr 0.1 / 10 every 20 epochs, 80 epochs, batch 64, "
            "41x41 patches with flips/rotations, He init, residual learning, adjustable gradient clipping to "
            "[-theta/lr, theta/lr]. Kept: batch, patches (stride 14, since only the 91 images are assumed, "
            "not the paper's 291), He init, residual learning (the network adds the bicubic image, so MSE on "
            "the output is MSE on the residual). Adam 1e-4 instead of SGD 0.1, measured here over 300 steps: "
            "Adam 30.90 dB (bicubic 30.24); SGD 0.1 with per-value clipping at 0.4/lr diverged to NaN in 2 "
            "steps (the He-initialised residual starts large and a per-value bound allows an update of norm "
            "theta*sqrt(664k)); with global-norm clipping at 0.4/lr it sat at bicubic on the mean loss and "
            "oscillated (24.8-29.7 dB) on the summed loss at 0.04/lr. The adjustable clipping stays available "
            "(clip_theta, clip_mode) for SGD recipes. One x0.1 step half-way through 60 epochs instead of the "
            "paper's four levels over 80: SGD needs its 0.1 start brought down 1000-fold, while Adam at 1e-4 "
            "is already at the small end, and its third and fourth levels (1e-6, 1e-7) would spend half of a "
            "time-limited run barely moving. No weight decay: with Adam the paper's L2 term (1e-4) is "
            "normalised like any gradient, so on weights whose data gradient is small it becomes a full-size "
            "step towards zero; measured on an H200 (x2, 447 steps an epoch), val PSNR peaked at 32.07 dB at "
            "epoch 5 and then fell, with the training loss rising, back to the bicubic 30.84 dB by epoch 46."
        ),
    ),
    "drcn": Recipe(
        network="drcn", optimizer="adam", lr=1e-4, schedule="plateau", gamma=0.1,
        patience=5, min_lr=1e-6, epochs=60, batch_size=64, hr_patch=41, stride=21, clip_norm=1.0,
        recursive_supervision=True, alpha_start=1.0, alpha_zero_epoch=25, init="drcn",
        why=(
            "Paper: 41x41 patches stride 21, batch 64, MSE with recursive supervision, weight decay 1e-4, "
            "lr 0.01 divided by 10 when validation stalls for 5 epochs, stopping at 1e-6. Kept: patches, "
            "batch, recursive supervision (alpha = 1 decaying linearly to 0 by epoch 25, then the ensemble "
            "alone), plateau decay (patience 5, floor 1e-6; REFERENCE notes plateau decay suited DRCN), "
            "He init with the recursive conv zero except identity self-connections and the last "
            "reconstruction conv zero, so that every prediction starts as the bicubic image (with He init "
            "there it started near 8 dB). Adam 1e-4 "
            "instead of SGD 0.01: the 16-fold shared recursion makes plain SGD at 0.01 prone to exploding "
            "gradients (the paper trained 6 days); global-norm clipping at 1.0 as a guard. A 32-channel "
            "4-recursion DRCN trained faster at 1e-3 (31.15 vs 30.69 dB over 400 steps) but the full "
            "256-channel, 16-recursion network diverged at 1e-3 here (30 steps of batch 8 on the CPU: loss "
            "0.92, then stuck at the bicubic image) and improved at 1e-4 (x4 val 26.64 -> 26.72 dB), so "
            "1e-4 stays. No weight decay, for the reason given in VDSR's recipe (Adam turns the L2 term into "
            "full-size steps towards zero)."
        ),
    ),
    "red": Recipe(
        network="red", optimizer="adam", lr=1e-3, schedule="step", step_epochs=140, gamma=0.1, epochs=200,
        batch_size=64, hr_patch=48, stride=24,
        why=(
            "Paper (RED30): Adam lr 1e-4, 50x50 patches. srexport's RED is a small LR-input variant (32 "
            "channels, 5+5 layers, ConvTranspose upsampler), for which Adam 1e-3 trained much faster here "
            "(900 steps: 30.98 dB vs 30.49 at 3e-4 and 29.14 at 1e-4; bicubic 30.24); one x0.1 step at "
            "epoch 140 of 200. Longer was better on the held-out T91 images (x4: val 27.31 dB after 10 "
            "epochs, 28.07 after 50 with the step at 40, 28.34 after 200 with the step at 140; 7 minutes "
            "on 2 CPU cores). 48-pixel HR patches (divisible by 2, 3 and 4), stride 24."
        ),
    ),
}


def recipe_for(network: str) -> Recipe:
    """The training recipe for `network` (unknown names raise SRExportError)."""
    get_spec(network)
    try:
        return _RECIPES[network]
    except KeyError:
        raise SRExportError(f"no training recipe for network {network!r}") from None


# ====================================================================== model pieces


def init_weights(model: nn.Module, how: str) -> None:
    """Re-initialise `model` per the recipe's `init` ("default" keeps PyTorch's)."""
    if how == "default":
        return
    if how not in ("he", "fsrcnn", "drcn"):
        raise SRExportError(f"unknown init {how!r}")
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if how == "fsrcnn" and name == "deconv":
                nn.init.normal_(m.weight, 0.0, 0.001)
            elif how == "fsrcnn":
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")  # PReLU init 0.25
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if how == "drcn" and hasattr(model, "inference"):
        w = model.inference.weight  # (C, C, 3, 3): zero except self-connections -> identity map
        with torch.no_grad():
            w.zero_()
            c, k = w.shape[0], w.shape[-1]
            w[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1.0
            # Every prediction is reconstruction(h) + the bicubic image: a zero last layer makes the
            # network start at bicubic instead of ~8 dB (He init's residual swamps the image).
            last = model.reconstruction[-1]
            last.weight.zero_()
            last.bias.zero_()


def warm_start(model: nn.Module, source: nn.Module, record: ModelRecord, path: str | os.PathLike) -> dict:
    """Copy `source`'s weights (a checkpoint of the same network, for fine-tuning or for another
    scale, as FSRCNN's x2/x4 from x3) into `model`. Tensors whose shape depends on the scale (ESPCN's
    last conv, scale^2 channels) keep the recipe's init and are listed in the returned record."""
    if record.hparams != dict(model.hparams):
        raise SRExportError(f"{path}: holds {record.network} {record.hparams}, "
                            f"this run trains {dict(model.hparams)}")
    target = model.state_dict()
    loaded = {k: v for k, v in source.state_dict().items() if v.shape == target[k].shape}
    model.load_state_dict(loaded, strict=False)
    return {"path": str(Path(path).resolve()), "network": record.network, "scale": record.scale,
            "weights_sha256": weights_sha256(source), "tensors_loaded": len(loaded),
            "tensors_reinitialised": sorted(set(target) - set(loaded))}


def param_groups(model: nn.Module, recipe: Recipe, base_lr: float) -> list[dict]:
    """Optimizer groups: parameters under a `lr_mult` prefix get base_lr * multiplier."""
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        mult = 1.0
        for prefix, m in recipe.lr_mult.items():
            if name == prefix or name.startswith(prefix + "."):
                mult = float(m)
        groups.setdefault(mult, []).append(p)
    return [{"params": ps, "lr": base_lr * mult, "lr_mult": mult} for mult, ps in groups.items()]


def make_optimizer(model: nn.Module, recipe: Recipe, base_lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe, base_lr)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=base_lr, weight_decay=recipe.weight_decay)
    raise SRExportError(f"unknown optimizer {recipe.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, recipe.step_epochs), gamma=recipe.gamma)
    if recipe.schedule == "plateau":
        min_lrs = [recipe.min_lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=recipe.gamma, patience=recipe.patience, min_lr=min_lrs)
    if recipe.schedule == "none":
        return None
    raise SRExportError(f"unknown schedule {recipe.schedule!r}")


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
                  alpha: float = 0.0) -> torch.Tensor:
    """MSE of the network's output; DRCN with recursive supervision:
    alpha * mean_d MSE(prediction_d) + (1 - alpha) * MSE(ensemble)."""
    mse = nn.functional.mse_loss
    if recipe.recursive_supervision and hasattr(model, "forward_with_intermediates"):
        out, preds = model.forward_with_intermediates(x)
        ensemble = mse(out, y)
        if alpha <= 0:
            return ensemble
        intermediate = torch.stack([mse(p, y) for p in preds]).mean()
        return alpha * intermediate + (1.0 - alpha) * ensemble
    return mse(model(x), y)


def clip_gradients(optimizer: torch.optim.Optimizer, recipe: Recipe) -> None:
    if recipe.clip_theta is not None:
        for g in optimizer.param_groups:  # VDSR: bound theta / lr at each group's current lr
            if recipe.clip_mode == "value":
                nn.utils.clip_grad_value_(g["params"], recipe.clip_theta / g["lr"])
            elif recipe.clip_mode == "norm":
                nn.utils.clip_grad_norm_(g["params"], recipe.clip_theta / g["lr"])
            else:
                raise SRExportError(f"unknown clip mode {recipe.clip_mode!r}")
    if recipe.clip_norm is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, recipe.clip_norm)


@torch.no_grad()
def validate(model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, device) -> float:
    """Mean Y-PSNR (border = scale) of the model on protocol pairs, output rounded to 8 bits."""
    was_training = model.training
    model.eval()
    values = []
    try:
        for hr_y, lr_y in pairs:
            x = torch.from_numpy((lr_y / 255.0).astype(np.float32))[None, None].to(device)
            out = model(x)[0, 0].float().cpu().numpy().astype(np.float64)
            values.append(psnr(round_uint8(out * 255.0), hr_y, border=scale))
    finally:
        model.train(was_training)
    return float(np.mean(values))


def bicubic_psnr(pairs: list[tuple[np.ndarray, np.ndarray]], scale: int) -> float:
    return float(np.mean([psnr(round_uint8(imresize(lr, scale)), hr, border=scale) for hr, lr in pairs]))


# ====================================================================== resume state (no pickle)


def _encode(obj, tensors: dict, name: str):
    if isinstance(obj, torch.Tensor):
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{name}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{name}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{name}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{name}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {name} in a resume file")


def _decode(obj, tensors: dict):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def rng_state(np_rng: np.random.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np_rng.bit_generator.state,
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_resume(path: Path, state: dict) -> None:
    """Write a resume state: tensors into safetensors, the rest as JSON metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "s")
    meta = {RESUME_KEY: json.dumps(encoded)}
    with atomic_output(path, force=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_resume(path: str | os.PathLike) -> dict:
    """Read a resume file (or the resume file beside a checkpoint)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SRExportError(f"{path}: no such resume file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if RESUME_KEY not in meta:
                if METADATA_KEY in meta:  # a checkpoint: use its resume file
                    beside = resume_path_for(path)
                    if beside != path and beside.is_file():
                        return load_resume(beside)
                    raise SRExportError(f"{path}: is a checkpoint and its resume file {beside} does not exist")
                raise SRExportError(f"{path}: not an srexport resume file")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        state = _decode(json.loads(meta[RESUME_KEY]), tensors)
    except SRExportError:
        raise
    except Exception as e:
        raise SRExportError(f"{path}: corrupt resume file ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise SRExportError(f"{path}: resume format {state.get('format') if isinstance(state, dict) else '?'} is not supported")
    state["path"] = str(path)
    return state


def _stem(out: Path) -> Path:
    return out.with_suffix("") if out.suffix == ".safetensors" else out


def resume_path_for(out: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.resume.safetensors`."""
    out = Path(out)
    if out.name.endswith(".resume.safetensors"):
        return out
    return _stem(out).with_name(_stem(out).name + ".resume.safetensors")


def curve_path_for(out: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.curve.png`."""
    return _stem(Path(out)).with_name(_stem(Path(out)).name + ".curve.png")


# ====================================================================== the loop


@dataclass
class TrainResult:
    checkpoints: dict[int, Path]  # scale -> checkpoint (several for a run over several scales)
    resume_file: Path
    curve: Path
    record: ModelRecord  # the first scale's
    best_epoch: int
    best_val_psnr: float  # the mean over the scales
    bicubic_val_psnr: float
    epochs: int
    history: list
    seconds: float
    epochs_planned: int

    @property
    def checkpoint(self) -> Path:
        return next(iter(self.checkpoints.values()))

    @property
    def complete(self) -> bool:
        return self.epochs >= self.epochs_planned

    def summary(self) -> str:
        scales = list(self.checkpoints)
        mean = " (mean over the scales)" if len(scales) > 1 else ""
        text = (f"{self.record.network} {scales_label(scales)}: best val PSNR{mean} {self.best_val_psnr:.2f} dB at "
                f"epoch {self.best_epoch}/{self.epochs} (bicubic {self.bicubic_val_psnr:.2f} dB), {self.seconds:.0f} s "
                f"-> {', '.join(map(str, self.checkpoints.values()))}")
        if not self.complete:
            text += (f"\nstopped at the time limit after epoch {self.epochs} of {self.epochs_planned}; "
                     f"continue with: srexport train --resume {self.checkpoint}")
        return text


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SRExportError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SRExportError(f"device {device} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SRExportError(f"device {device} requested but MPS is not available")
    return dev


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":  # training time means little without the core count
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(dev)


def _fingerprint(paths: list[Path]) -> list:
    return [[p.name, p.stat().st_size] for p in paths]


def _seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    return np.random.default_rng(seed)


def _images_except(folder: Path, own_files: list[Path]) -> list[Path]:
    """list_images(folder) without the run's own curve PNGs, which -o may put in that folder."""
    own = {p.resolve() for p in own_files}
    paths = [p for p in list_images(folder) if p.resolve() not in own]
    if not paths:
        names = ", ".join(p.name for p in own_files)
        raise SRExportError(f"{folder}: no images besides this run's training curve {names}")
    return paths


def _as_scales(scale) -> tuple[int, ...] | None:
    if scale is None:
        return None
    return tuple(int(s) for s in scale) if isinstance(scale, (list, tuple)) else (int(scale),)


def scales_label(scales) -> str:
    """(2,) -> 'x2'; (2, 3, 4) -> 'x2+3+4'."""
    return "x" + "+".join(str(s) for s in scales)


def checkpoint_paths(out: str | os.PathLike, scales: tuple[int, ...]) -> dict[int, Path]:
    """The checkpoint written for each scale: `{scale}` in `out` is replaced by the scale. A run
    over several scales needs it (`vdsr_x{scale}.safetensors`)."""
    text = str(out)
    if "{scale}" not in text and len(scales) > 1:
        raise SRExportError(f"{out}: a run over {scales_label(scales)} writes a checkpoint per scale; put "
                            "{scale} in the path, e.g. vdsr_x{scale}.safetensors")
    return {s: Path(text.replace("{scale}", str(s))) for s in scales}


def share_parameters(model: nn.Module, source: nn.Module) -> None:
    """Make `model` use `source`'s parameter tensors, so one optimizer trains both (a network built
    at several scales whose weights do not depend on the scale)."""
    for name, _ in list(model.named_parameters()):
        module_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(module_name), attr, source.get_parameter(name))


def train(network: str | None, scale: int | tuple[int, ...] | None, data_dir: str | os.PathLike | None = None, *,
          out_path: str | os.PathLike | None = None, val_dir: str | os.PathLike | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          device: str = "cpu", resume: str | os.PathLike | None = None, seed: int | None = None,
          steps_per_epoch: int | None = None, force: bool = False, progress: bool = True,
          hparams: dict | None = None, n_val: int | None = None,
          cache_dir: str | os.PathLike | None = None, precision: str | None = None,
          init_from: str | os.PathLike | None = None, step_epochs: int | None = None,
          time_limit: float | None = None) -> TrainResult:
    """Train `network` at `scale` on the images in `data_dir`; see the module docstring.

    `scale` may be several scales, for a network whose weights do not depend on the scale (VDSR's
    paper trains one model for x2, x3 and x4): the steps go round the scales, each on its own
    patches, one checkpoint per scale is written (`{scale}` in `out_path`, default
    NAME_x{scale}.safetensors), all with the weights of the epoch with the best mean validation
    PSNR over the scales, and the resume file sits beside the first scale's checkpoint.

    With `resume` (a resume file, or a checkpoint with its resume file beside it) the run continues
    from its last completed epoch; network, scale, data, recipe and seed come from the resume file
    (they may be given but must agree) and `epochs` may extend the run. With `init_from` (a
    checkpoint of the same network) a new run starts from its weights instead of the recipe's init.
    With `time_limit` (seconds of wall time for this call, setup included) the run stops after the
    first epoch whose successor would end past the limit, judged by the epoch just finished; at
    least one epoch runs, and the stopped run continues with `resume` (for time-limited GPU slots).
    """
    started = time.monotonic()
    dev = _device(device)
    state = load_resume(resume) if resume is not None else None
    scales = _as_scales(scale)

    # ------------------------------------------------------------ settings
    if state is not None:
        if network is not None and network != state["network"]:
            raise SRExportError(f"{state['path']}: resume file is for network {state['network']!r}, not {network!r}")
        kept_scales = tuple(state.get("scales", [state["scale"]]))
        if scales is not None and scales != kept_scales:
            raise SRExportError(f"{state['path']}: resume file is for {scales_label(kept_scales)}, "
                                f"not {scales_label(scales)}")
        network, scales = state["network"], kept_scales
        recipe = Recipe.from_dict(state["recipe"])
        kept_precision = state.get("precision", "fp32")
        for name, given, kept in (("batch size", batch_size, recipe.batch_size), ("learning rate", lr, state["base_lr"]),
                                  ("seed", seed, state["seed"]), ("precision", precision, kept_precision),
                                  ("step epochs", step_epochs, recipe.step_epochs)):
            if given is not None and given != kept:
                raise SRExportError(f"{state['path']}: cannot change the {name} when resuming ({kept} -> {given})")
        if hparams and dict(hparams) != state["hparams"]:
            raise SRExportError(f"{state['path']}: cannot change hyperparameters when resuming")
        if init_from is not None:
            raise SRExportError(f"{state['path']}: a resumed run continues from its own weights; "
                                "drop --init-from")
        hparams = state["hparams"]
        seed = state["seed"]
        precision = kept_precision
        base_lr = state["base_lr"]
        data_dir = data_dir if data_dir is not None else state["data_dir"]
        val_dir = val_dir if val_dir is not None else state["val_dir"]
        # the outputs sit beside the resume file, so a run's folder may be moved (to another machine)
        out = Path(state["path"]).parent / Path(state["out"]).name
        if out_path is not None and Path(out_path).resolve() != out.resolve():
            raise SRExportError(f"{state['path']}: the resumed run writes {out}; omit -o or pass that path")
        total_epochs = int(epochs) if epochs is not None else state["epochs_total"]
        steps_per_epoch = steps_per_epoch if steps_per_epoch is not None else state["steps_per_epoch"]
        if steps_per_epoch != state["steps_per_epoch"]:
            raise SRExportError(f"{state['path']}: cannot change steps per epoch when resuming")
    else:
        if network is None:
            raise SRExportError("name the network to train")
        if not scales:
            raise SRExportError(f"{network}: pass --scale (2, 3 or 4)")
        if data_dir is None:
            raise SRExportError("pass --data FOLDER with the training images")
        recipe = recipe_for(network)
        if batch_size is not None:
            recipe = recipe.replace(batch_size=int(batch_size))
        if step_epochs is not None:
            if recipe.schedule != "step":
                raise SRExportError(f"{network}: its recipe's schedule is {recipe.schedule!r}; "
                                    "--step-epochs applies to step schedules")
            recipe = recipe.replace(step_epochs=int(step_epochs))
        base_lr = float(lr) if lr is not None else recipe.lr
        out = Path(out_path if out_path is not None
                   else f"{network}_x{scales[0] if len(scales) == 1 else '{scale}'}.safetensors")
        total_epochs = int(epochs) if epochs is not None else recipe.epochs
        hparams = dict(hparams or {})
        seed = 0 if seed is None else int(seed)
        precision = precision or "fp32"
        # loaded before the data so that a wrong file fails at once
        init_source = load_checkpoint(init_from, network=network) if init_from is not None else None
    scales = tuple(check_scale(s) for s in scales)
    if len(set(scales)) != len(scales):
        raise SRExportError(f"{network}: scale given twice in {scales_label(scales)}")
    if len(scales) > 1 and not get_spec(network).scale_free_weights:
        raise SRExportError(f"{network}: its weights depend on the scale, so a run trains one scale "
                            f"(several at once: {', '.join(n for n in list_networks() if get_spec(n).scale_free_weights)})")
    if precision not in PRECISIONS:
        raise SRExportError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if total_epochs < 1:
        raise SRExportError(f"epochs must be at least 1, got {total_epochs}")
    if recipe.batch_size < 1:
        raise SRExportError(f"batch size must be at least 1, got {recipe.batch_size}")
    if recipe.schedule == "step" and recipe.step_epochs < 1:
        raise SRExportError(f"step epochs must be at least 1, got {recipe.step_epochs}")
    if not base_lr > 0:
        raise SRExportError(f"learning rate must be positive, got {base_lr}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise SRExportError(f"steps per epoch must be at least 1, got {steps_per_epoch}")
    if time_limit is not None and not time_limit > 0:
        raise SRExportError(f"time limit must be positive, got {time_limit} s")
    recipe = recipe.replace(epochs=total_epochs)
    label = f"{network} {scales_label(scales)}"
    checkpoints = checkpoint_paths(out, scales)
    for path in checkpoints.values():
        if path.suffix != ".safetensors":
            raise SRExportError(f"{path}: the checkpoint path must end in .safetensors")
    first = checkpoints[scales[0]]
    resume_file = resume_path_for(first)
    curves = {s: curve_path_for(p) for s, p in checkpoints.items()}
    if state is None:
        for p in (*checkpoints.values(), resume_file, *curves.values()):
            check_writable(p, force)

    # ------------------------------------------------------------ data
    data_dir = Path(data_dir)
    paths = _images_except(data_dir, list(curves.values()))
    if val_dir is not None:
        val_dir = Path(val_dir)
        train_paths, val_paths = paths, _images_except(val_dir, list(curves.values()))
        val_desc = f"{val_dir} ({len(val_paths)} images)"
    else:
        k = n_val if n_val is not None else (state["n_val"] if state else default_holdout(len(paths)))
        train_paths, val_paths = split_holdout(paths, k, seed)
        val_desc = f"{len(val_paths)} held-out images of {data_dir.name}: {', '.join(p.name for p in val_paths)}"
    fingerprint = _fingerprint(train_paths)
    if state is not None and fingerprint != state["data_fingerprint"]:
        raise SRExportError(
            f"{state['path']}: the training images in {data_dir} differ from those the run started with "
            f"({len(train_paths)} now, {len(state['data_fingerprint'])} then)")
    patch_sets = {s: PatchSet.from_paths(train_paths, s, *recipe.patch_for(s), augment=True,
                                         cache_dir=cache_dir, resize_factors=recipe.resize_factors)
                  for s in scales}
    val_pairs = {s: [protocol_pair(load_image(p), s) for p in val_paths] for s in scales}
    bicubic_val = {s: bicubic_psnr(val_pairs[s], s) for s in scales}
    steps = (steps_per_epoch if steps_per_epoch is not None
             else sum(p.steps_per_epoch(recipe.batch_size) for p in patch_sets.values()))

    # ------------------------------------------------------------ model, optimizer
    np_rng = _seed_everything(seed)
    models = {s: build(network, s, **hparams) for s in scales}
    model = models[scales[0]]  # holds the parameters; the other scales' models share them
    init_weights(model, recipe.init)
    if state is not None:
        init_record = state.get("init_from")
    elif init_source is not None:
        init_record = warm_start(model, *init_source, init_from)
    else:
        init_record = None
    # channels-last is the layout cuDNN's tensor-core kernels read without transposes; the one-channel
    # input needs no conversion (for C=1 both layouts have the same strides)
    memory_format = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    for m in models.values():
        m.to(dev, memory_format=memory_format).train()
        if m is not model:
            share_parameters(m, model)
    autocast = functools.partial(torch.autocast, dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    optimizer = make_optimizer(model, recipe, base_lr)
    scheduler = make_scheduler(optimizer, recipe)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    history: list[dict] = []
    epochs_done, best_epoch, best_psnr, seconds = 0, 0, -math.inf, 0.0
    resumed_at: list[int] = []
    if state is not None:
        model.load_state_dict({k: v.to(dev) for k, v in state["model"].items()})
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        epochs_done, best_epoch, best_psnr = state["epochs_done"], state["best_epoch"], state["best_psnr"]
        seconds = state["seconds"]
        resumed_at = list(state.get("resumed_at", [])) + [epochs_done]
        set_rng_state(state["rng"], np_rng)
        # the other scales' checkpoints hold the same weights and are rewritten from this one
        if epochs_done > 0 and not first.is_file():
            raise SRExportError(f"{first}: checkpoint missing; the resume file says {epochs_done} epochs are done")

    def training_record(done: int, s: int) -> dict:
        return {
            "kind": "trained",
            **({"init_from": init_record} if init_record else {}),
            **({"scales": list(scales), "selection": "best mean validation PSNR over the scales"}
               if len(scales) > 1 else {}),
            "recipe": recipe.to_dict(),
            "base_lr": base_lr,
            "data": {
                "dir": str(data_dir.resolve()),
                "images": len(train_paths),
                "patches": len(patch_sets[s]),
                "hr_patch": patch_sets[s].hr_patch,
                "lr_patch": patch_sets[s].lr_patch,
                "stride": recipe.patch_for(s)[1],
                "augmentation": "8 dihedral transforms per sample"
                                + (f"; resize factors {list(recipe.resize_factors)}" if len(recipe.resize_factors) > 1 else ""),
                "validation": val_desc,
            },
            "epochs": done,
            "epochs_planned": total_epochs,
            "steps_per_epoch": steps,
            "batch_size": recipe.batch_size,
            "precision": precision,
            "best_epoch": best_epoch,
            "seconds": round(seconds, 3),
            "device": _device_name(dev),
            "torch": torch.__version__,
            "srexport": __version__,
            "seed": seed,
            "resumed_at_epochs": resumed_at,
            "history": history,
        }

    def metrics_record(s: int) -> dict:
        best = history[best_epoch - 1]
        return {"val_psnr": best.get("val_psnr_by_scale", {}).get(f"x{s}", best["val_psnr"]),
                "val_bicubic_psnr": bicubic_val[s], "val_border": s, "val_set": val_desc, "epoch": best_epoch}

    def save_checkpoints(done: int) -> list[ModelRecord]:
        records = []
        for s, path in checkpoints.items():
            final = build(network, s, **hparams)  # on the CPU, in the standard layout
            final.load_state_dict(model.state_dict())
            records.append(ModelRecord.for_model(final, training=training_record(done, s), metrics=metrics_record(s)))
            save_checkpoint(final, path, records[-1], force=True)
        return records

    def write_resume() -> None:
        save_resume(resume_file, {
            "format": RESUME_FORMAT,
            "network": network, "scale": scales[0], "scales": list(scales), "hparams": hparams,
            "recipe": recipe.to_dict(),
            "base_lr": base_lr, "seed": seed, "precision": precision, "data_dir": str(data_dir.resolve()),
            "val_dir": str(val_dir.resolve()) if val_dir is not None else None,
            "n_val": len(val_paths) if val_dir is None else None,
            "data_fingerprint": fingerprint, "out": str(out.resolve()), "epochs_total": total_epochs,
            "steps_per_epoch": steps_per_epoch, "epochs_done": epochs_done, "best_epoch": best_epoch,
            "best_psnr": best_psnr, "seconds": seconds, "history": history, "resumed_at": resumed_at,
            "init_from": init_record,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(np_rng),
        })

    # ------------------------------------------------------------ epochs
    from tqdm import tqdm

    bar = tqdm(total=total_epochs * steps, initial=epochs_done * steps, disable=not progress, unit="step",
               desc=label, dynamic_ncols=True, leave=True)
    postfix: dict = {}
    if history:
        postfix = {"val": f"{history[-1]['val_psnr']:.2f}", "best": f"{best_psnr:.2f}"}
    try:
        for epoch in range(epochs_done, total_epochs):
            t0 = time.perf_counter()
            alpha = recipe.alpha(epoch)
            loss_sum = torch.zeros((), device=dev)
            count, shown = 0, 0
            # the steps go round the scales; each scale draws its own batches
            batches = {s: patch_sets[s].batches(recipe.batch_size, np_rng, steps=len(range(i, steps, len(scales))))
                       for i, s in enumerate(scales)}
            for step in range(steps):
                s = scales[step % len(scales)]
                lr_b, hr_b = next(batches[s])
                x = torch.from_numpy(lr_b).to(dev, non_blocking=True).float().div_(255.0)
                y = torch.from_numpy(hr_b).to(dev, non_blocking=True).float().div_(255.0)
                with autocast():
                    loss = training_loss(models[s], x, y, recipe, alpha)
                optimizer.zero_grad(set_to_none=True)
                (loss * y.numel() if recipe.loss_reduction == "sum" else loss).backward()
                clip_gradients(optimizer, recipe)
                optimizer.step()
                loss_sum += loss.detach()
                count += 1
                if progress and (count - shown >= 20 or count == steps):  # a sync only every few steps
                    postfix["loss"] = f"{loss_sum.item() / count:.3g}"
                    bar.set_postfix(postfix, refresh=False)
                    bar.update(count - shown)
                    shown = count
            epoch_loss = loss_sum.item() / max(count, 1)
            vals = {s: validate(models[s], val_pairs[s], s, dev) for s in scales}
            val = float(np.mean(list(vals.values())))
            lr_now = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)
            if scheduler is not None:
                if recipe.schedule == "plateau":
                    scheduler.step(val if math.isfinite(val) else -math.inf)
                else:
                    scheduler.step()
            seconds += time.perf_counter() - t0
            epochs_done = epoch + 1
            entry = {"epoch": epochs_done, "loss": epoch_loss, "val_psnr": val, "lr": lr_now,
                     "seconds": round(time.perf_counter() - t0, 3)}
            if len(scales) > 1:
                entry["val_psnr_by_scale"] = {f"x{s}": v for s, v in vals.items()}
            if recipe.recursive_supervision:
                entry["alpha"] = alpha
            history.append(entry)
            if math.isfinite(val) and (val > best_psnr or best_epoch == 0):
                best_psnr, best_epoch = val, epochs_done
                save_checkpoints(epochs_done)
            write_resume()  # after the checkpoints: a kill between the two only repeats this epoch
            postfix.update(val=f"{val:.2f}", best=f"{best_psnr:.2f}", loss=f"{epoch_loss:.3g}")
            bar.set_postfix(postfix, refresh=False)
            bar.update(steps - shown)
            if time_limit is not None and time.monotonic() - started + entry["seconds"] > time_limit:
                break
    finally:
        bar.close()

    if best_epoch == 0:
        raise SRExportError(f"{label}: training diverged (validation PSNR is not finite); try a lower --lr")

    # ------------------------------------------------------------ final checkpoints and curves
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(first)))  # the best epoch's weights, with the full history
    record = save_checkpoints(epochs_done)[0]
    for path in curves.values():
        write_curve(path, history, bicubic_val, label)
    return TrainResult(checkpoints, resume_file, curves[scales[0]], record, best_epoch, best_psnr,
                       float(np.mean(list(bicubic_val.values()))), epochs_done, history, seconds, total_epochs)


def write_curve(path: Path, history: list[dict], bicubic_val: dict[int, float], title: str) -> Path:
    """Training loss and validation PSNR per epoch as a PNG (atomic). `bicubic_val` maps each scale
    to its bicubic validation PSNR; a run over several scales plots each scale's gain over bicubic."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    marker = "." if len(epochs) < 30 else None
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["loss"] for h in history], marker=marker)
    if all(h["loss"] > 0 for h in history):
        ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (MSE, [0,1] images)")
    ax1.grid(True, alpha=0.3)
    finite = [(i, h["val_psnr"]) for i, h in enumerate(history) if math.isfinite(h["val_psnr"])]
    best = max(finite, key=lambda t: t[1])[0] if finite else None  # the selected epoch (mean over scales)
    if len(bicubic_val) == 1:
        (base,) = bicubic_val.values()
        vals = [h["val_psnr"] for h in history]
        ax2.plot(epochs, vals, marker=marker, label="model")
        if math.isfinite(base):
            ax2.axhline(base, color="gray", linestyle="--", label=f"bicubic {base:.2f}")
        if best is not None:
            ax2.plot([epochs[best]], [vals[best]], "o", color="C3", label=f"best {vals[best]:.2f} @ {epochs[best]}")
        ax2.set_ylabel("validation PSNR (Y, dB)")
    else:
        for i, (s, base) in enumerate(bicubic_val.items()):
            gains = [h["val_psnr_by_scale"][f"x{s}"] - base for h in history]
            ax2.plot(epochs, gains, marker=marker, color=f"C{i}", label=f"x{s} (bicubic {base:.2f})")
            if best is not None:
                ax2.plot([epochs[best]], [gains[best]], "o", color=f"C{i}")
        ax2.axhline(0.0, color="gray", linestyle="--", label="bicubic")
        ax2.set_ylabel("validation PSNR over bicubic (dB)")
    ax2.set_xlabel("epoch")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png")
    return path
