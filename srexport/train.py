"""Training: a resumable loop that trains a network with its recipe (recipes.py).

`train()` writes three things beside each other:
  <out>.safetensors         the best-validation checkpoint (checkpoint.save_checkpoint, atomic),
                            rewritten whenever validation PSNR improves and once more at the end
                            with the full history; one per scale for a run over several scales;
  <out>.resume.safetensors  written after every epoch: the latest weights, optimizer and scheduler
                            state, epoch, every RNG state and the history, without pickle
                            (tensors in safetensors, everything else as JSON in its metadata);
  <out>.curve.png           training loss and validation PSNR per epoch, at the end (and when a
                            time limit stops the run).
The checkpoint is written before the resume file, so a run killed at any moment (SIGKILL included)
resumes from the last completed epoch and loses at most the epoch in progress; the resumed run
repeats that epoch with the same optimizer, scheduler and random state, so on the CPU it gives the
same weights as an uninterrupted run (on a GPU, cuDNN's non-deterministic kernels make it equal
only up to floating-point noise).

With precision="bf16" the forward and backward passes run under bfloat16 autocast (weights,
optimizer state, loss and validation stay float32). On CUDA the network is kept channels-last at
either precision, the layout tensor cores read without transposes. Hopper's tensor cores run bf16 at
twice their TF32 rate (NVIDIA's datasheet; not measured side by side here). A CPU with bfloat16
instructions gains too where convolutions are wide: on this project's 2-core EPYC (AVX512-BF16),
`benchmarks/train_step.py` measured bf16 steps 1.9-2.2x faster for VDSR and DRCN, 1.4-1.7x for
ESPCN and SRCNN 9-5-5, and 0.9-1.1x for FSRCNN and RED (three runs; benchmarks/TRAINING.md). The
default is "fp32".

The recipes live in `recipes.py`, the resume file's format and the run's file names in `runfiles.py`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .archs import build, check_scale, get_spec, list_networks
from .atomic import atomic_output, check_writable
from .budget import Calibration, fit_steps_per_epoch, seconds_per_call, timing_for
from .checkpoint import ModelRecord, load_checkpoint, save_checkpoint, weights_sha256
from .data import imresize, list_images, load_image, protocol_pair, round_uint8
from .errors import SRExportError
from .metrics import psnr
from .patches import PatchSet, default_holdout, split_holdout
from .recipes import Recipe, recipe_for
from .runfiles import (RESUME_FORMAT, curve_path_for, load_resume, resume_path_for, rng_state, save_resume,
                       set_rng_state)

PRECISIONS = ("fp32", "bf16")


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
    last conv, scale^2 channels) keep the recipe's init and are listed in the returned record, with
    the source's own start (its `init_from`) and how long it was trained, so a chain of fine-tunes
    stays traceable after a checkpoint in it has been replaced by its successor."""
    if record.hparams != dict(model.hparams):
        raise SRExportError(f"{path}: holds {record.network} {record.hparams}, "
                            f"this run trains {dict(model.hparams)}")
    target = model.state_dict()
    loaded = {k: v for k, v in source.state_dict().items() if v.shape == target[k].shape}
    model.load_state_dict(loaded, strict=False)
    trained = {k: record.training[k] for k in ("epochs", "seconds", "device") if k in record.training}
    return {"path": str(Path(path).resolve()), "network": record.network, "scale": record.scale,
            "weights_sha256": weights_sha256(source), "tensors_loaded": len(loaded),
            "tensors_reinitialised": sorted(set(target) - set(loaded)),
            **({"training": trained} if trained else {}),
            **({"init_from": record.training["init_from"]} if record.training.get("init_from") else {})}


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


def masked_mse(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the pixels where `mask` is 1 (all pixels without a mask)."""
    if mask is None:
        return nn.functional.mse_loss(out, y)
    return ((out - y).square() * mask).sum() / mask.sum()


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
                  alpha: float = 0.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of the network's output (over `mask`, see patches.PatchSet.loss_mask); DRCN with
    recursive supervision: alpha * mean_d MSE(prediction_d) + (1 - alpha) * MSE(ensemble)."""
    mse = functools.partial(masked_mse, mask=mask)
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


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, batch: tuple, dev: torch.device,
               autocast, alpha: float) -> torch.Tensor:
    """One optimizer step on a uint8 (LR, HR, loss mask) batch from PatchSet.batches; returns the
    loss, detached and left on the device (reading it would wait for the GPU)."""
    lr_b, hr_b, mask_b = batch
    x = torch.from_numpy(lr_b).to(dev, non_blocking=True).float().div_(255.0)
    y = torch.from_numpy(hr_b).to(dev, non_blocking=True).float().div_(255.0)
    mask = None if mask_b is None else torch.from_numpy(mask_b).to(dev, non_blocking=True).float()
    with autocast():
        loss = training_loss(model, x, y, recipe, alpha, mask)
    optimizer.zero_grad(set_to_none=True)
    if recipe.loss_reduction == "sum":  # the papers' scale: summed over the pixels in the loss
        (loss * (y.numel() if mask is None else mask.sum())).backward()
    else:
        loss.backward()
    clip_gradients(optimizer, recipe)
    optimizer.step()
    return loss.detach()


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


def with_device(devices: list[dict], from_epoch: int, device: str) -> list[dict]:
    """`devices` (see devices_label) with `device` running from `from_epoch` on."""
    kept = [d for d in devices if d["from_epoch"] < from_epoch]  # drops a call killed in its first epoch
    if kept and kept[-1]["device"] == device:
        return kept
    return kept + [{"from_epoch": from_epoch, "device": device}]


def devices_label(devices: list[dict], epochs: int) -> str:
    """The record's device: one name, or which device ran which epochs when a resumed run changed
    device or thread count. `devices` holds {"from_epoch", "device"} per change, in order."""
    if not devices:
        return "not recorded"
    if len(devices) == 1 and devices[0]["from_epoch"] == 1:
        return devices[0]["device"]
    parts = [f"epochs 1-{devices[0]['from_epoch'] - 1} not recorded"] if devices[0]["from_epoch"] > 1 else []
    for seg, following in zip(devices, devices[1:] + [None]):
        first, last = seg["from_epoch"], (following["from_epoch"] - 1 if following else epochs)
        parts.append(f"{seg['device']} for epoch{f' {first}' if first == last else f's {first}-{last}'}")
    return ", ".join(parts)


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


def calibrate(models: dict[int, nn.Module], patch_sets: dict[int, PatchSet], val_pairs: dict, recipe: Recipe,
              base_lr: float, dev: torch.device, autocast, seed: int, time_budget: float) -> Calibration:
    """Time training steps (going round the scales, as the epochs do) and one validation pass on
    throwaway copies of the models and optimizer, with their own batches, so that the run's weights
    and random state are left as they were: a run fitted to a budget trains exactly as one given
    the fitted steps per epoch. The steps are timed for 1% of the budget (1 to 10 s)."""
    copies = copy.deepcopy(models)  # one deepcopy keeps the scales' shared parameters shared
    scales = list(copies)
    optimizer = make_optimizer(copies[scales[0]], recipe, base_lr)
    rng = np.random.default_rng(seed + 1)
    batches = {s: patch_sets[s].batches(recipe.batch_size, rng, steps=2**62) for s in scales}
    turn = itertools.cycle(scales)

    def step() -> None:
        s = next(turn)
        train_step(copies[s], optimizer, recipe, next(batches[s]), dev, autocast, recipe.alpha(0))

    gpu = dev.type == "cuda"  # two warm-up steps a scale on a GPU, for cuDNN's autotuning
    with torch.random.fork_rng(devices=[dev] if gpu else [], device_type=dev.type):
        step_seconds, steps_timed = seconds_per_call(
            step, warmup=(2 if gpu else 1) * len(scales), min_seconds=min(10.0, max(1.0, 0.01 * time_budget)),
            **timing_for(dev))
        t0 = time.perf_counter()
        for s in scales:
            validate(copies[s], val_pairs[s], s, dev)
        validation_seconds = time.perf_counter() - t0
    del copies, optimizer
    if gpu:
        torch.cuda.empty_cache()
    return Calibration(step_seconds, steps_timed, validation_seconds)


def train(network: str | None, scale: int | tuple[int, ...] | None, data_dir: str | os.PathLike | None = None, *,
          out_path: str | os.PathLike | None = None, val_dir: str | os.PathLike | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          device: str = "cpu", resume: str | os.PathLike | None = None, seed: int | None = None,
          steps_per_epoch: int | None = None, force: bool = False, progress: bool = True,
          hparams: dict | None = None, n_val: int | None = None,
          cache_dir: str | os.PathLike | None = None, precision: str | None = None,
          init_from: str | os.PathLike | None = None, step_epochs: int | None = None,
          context: int | None = None, time_limit: float | None = None,
          time_budget: float | None = None) -> TrainResult:
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
    `batch_size`, `lr`, `step_epochs` and `context` (LR pixels around each training patch, see
    patches.py) override the recipe's.
    With `time_limit` (seconds of wall time for this call, setup included) the run stops after the
    first epoch whose successor would end past the limit, judged by the epoch just finished; at
    least one epoch runs, and the stopped run continues with `resume` (for time-limited GPU slots).
    With `time_budget` (seconds for this call, setup included) a new run instead fits its steps per
    epoch so that all its epochs end within the budget (see budget.py and `calibrate`); the budget
    is also its time limit.
    """
    started = time.monotonic()
    dev = _device(device)
    state = load_resume(resume) if resume is not None else None
    scales = _as_scales(scale)

    # ------------------------------------------------------------ settings
    if state is not None:
        if network is not None and network != state["network"]:
            raise SRExportError(f"{state['path']}: resume file is for network {state['network']!r}, not {network!r}")
        kept_scales = tuple(state["scales"] if "scales" in state else [state["scale"]])  # older files: "scale"
        if scales is not None and scales != kept_scales:
            raise SRExportError(f"{state['path']}: resume file is for {scales_label(kept_scales)}, "
                                f"not {scales_label(scales)}")
        network, scales = state["network"], kept_scales
        recipe = Recipe.from_dict(state["recipe"])
        kept_precision = state.get("precision", "fp32")
        for name, given, kept in (("batch size", batch_size, recipe.batch_size), ("learning rate", lr, state["base_lr"]),
                                  ("seed", seed, state["seed"]), ("precision", precision, kept_precision),
                                  ("step epochs", step_epochs, recipe.step_epochs),
                                  ("context", context, recipe.context)):
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
        if context is not None:
            recipe = recipe.replace(context=int(context))
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
    if time_budget is not None:
        if not time_budget > 0:
            raise SRExportError(f"time budget must be positive, got {time_budget} s")
        for given, why in ((state, f"{resume}: a resumed run keeps its steps per epoch; bound this call with "
                                    "a time limit instead of a budget"),
                           (steps_per_epoch, "a time budget sets the steps per epoch; give one or the other"),
                           (time_limit, "a time budget is also the run's time limit; give one or the other")):
            if given is not None:
                raise SRExportError(why)
    recipe = recipe.replace(epochs=total_epochs)
    label = f"{network} {scales_label(scales)}"
    checkpoints = checkpoint_paths(out, scales)
    first = checkpoints[scales[0]]
    if first.suffix != ".safetensors":  # every scale's path comes from the same template
        raise SRExportError(f"{first}: the checkpoint path must end in .safetensors")
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
                                         cache_dir=cache_dir, resize_factors=recipe.resize_factors,
                                         context=recipe.context)
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
    budget_record = state.get("time_budget") if state is not None else None
    if time_budget is not None:
        calibration = calibrate(models, patch_sets, val_pairs, recipe, base_lr, dev, autocast, seed, time_budget)
        steps = steps_per_epoch = fit_steps_per_epoch(time_budget - (time.monotonic() - started), total_epochs,
                                                      calibration, label)
        budget_record = {"seconds": time_budget, **calibration.to_dict()}
        time_limit = time_budget

    history: list[dict] = []
    epochs_done, best_epoch, best_psnr, seconds = 0, 0, -math.inf, 0.0
    resumed_at: list[int] = []
    devices: list[dict] = []  # resume files written before this list existed lack it
    if state is not None:
        model.load_state_dict({k: v.to(dev) for k, v in state["model"].items()})
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        epochs_done, best_epoch, best_psnr = state["epochs_done"], state["best_epoch"], state["best_psnr"]
        seconds = state["seconds"]
        resumed_at = list(state.get("resumed_at", [])) + [epochs_done]
        devices = list(state.get("devices", []))
        set_rng_state(state["rng"], np_rng)
        # the other scales' checkpoints hold the same weights and are rewritten from this one
        if epochs_done > 0 and not first.is_file():
            raise SRExportError(f"{first}: checkpoint missing; the resume file says {epochs_done} epochs are done")
    if epochs_done < total_epochs:
        devices = with_device(devices, epochs_done + 1, _device_name(dev))

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
                **({"context": recipe.context,
                    "images_smaller_than_window": len(train_paths) - patch_sets[s].images_used}
                   if recipe.context else {}),
                "stride": recipe.patch_for(s)[1],
                "augmentation": "8 dihedral transforms per sample"
                                + (f"; resize factors {list(recipe.resize_factors)}" if len(recipe.resize_factors) > 1 else ""),
                "validation": val_desc,
            },
            "epochs": done,
            "epochs_planned": total_epochs,
            "steps_per_epoch": steps,
            **({"time_budget": budget_record} if budget_record else {}),
            "batch_size": recipe.batch_size,
            "precision": precision,
            "best_epoch": best_epoch,
            "seconds": round(seconds, 3),
            "device": devices_label(devices, done),
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
        for s, path in checkpoints.items():  # save_checkpoint writes CPU, contiguous tensors
            records.append(ModelRecord.for_model(models[s], training=training_record(done, s),
                                                 metrics=metrics_record(s)))
            save_checkpoint(models[s], path, records[-1], force=True)
        return records

    def write_resume() -> None:
        save_resume(resume_file, {
            "format": RESUME_FORMAT,
            "network": network, "scales": list(scales), "hparams": hparams,
            "recipe": recipe.to_dict(),
            "base_lr": base_lr, "seed": seed, "precision": precision, "data_dir": str(data_dir.resolve()),
            "val_dir": str(val_dir.resolve()) if val_dir is not None else None,
            "n_val": len(val_paths) if val_dir is None else None,
            "data_fingerprint": fingerprint, "out": str(out.resolve()), "epochs_total": total_epochs,
            "steps_per_epoch": steps_per_epoch, "epochs_done": epochs_done, "best_epoch": best_epoch,
            "best_psnr": best_psnr, "seconds": seconds, "history": history, "resumed_at": resumed_at,
            "devices": devices,
            "init_from": init_record,
            "time_budget": budget_record,
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
                loss_sum += train_step(models[s], optimizer, recipe, next(batches[s]), dev, autocast, alpha)
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
