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

The run's settings are resolved and checked in `runsettings.py`, the recipes live in `recipes.py`,
the step and its parts in `steps.py`, the resume file's format, the run's file names and the curve
in `runfiles.py`, and the fit to a time budget in `budget.py`.
"""

from __future__ import annotations

import functools
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .archs import build
from .atomic import check_writable
from .budget import calibrate, fit_steps_per_epoch
from .checkpoint import ModelRecord, save_checkpoint
from .data import list_images, load_image, protocol_pair
from .errors import SRExportError
from .patches import PatchSet, default_holdout, split_holdout
from .runfiles import (RESUME_FORMAT, curve_path_for, load_resume, resume_path_for, rng_state, save_resume,
                       set_rng_state, write_curve)
from .runsettings import as_scales, checkpoint_paths, new_run, resumed_run, scales_label
from .steps import (bicubic_psnr, init_weights, make_optimizer, make_scheduler, share_parameters, train_step,
                    validate, warm_start)


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
    limit: str = "the time limit"  # what stops a run before its last epoch: "the end of the time budget"

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
            text += (f"\nstopped at {self.limit} after epoch {self.epochs} of {self.epochs_planned}; "
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
    given = dict(out_path=out_path, val_dir=val_dir, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                 steps_per_epoch=steps_per_epoch, hparams=hparams, precision=precision, init_from=init_from,
                 step_epochs=step_epochs, context=context)
    run = (resumed_run(state, network, as_scales(scale), data_dir, **given) if state is not None
           else new_run(network, as_scales(scale), data_dir, **given))
    if time_limit is not None and not time_limit > 0:
        raise SRExportError(f"time limit must be positive, got {time_limit} s")
    if time_budget is not None:
        if not time_budget > 0:
            raise SRExportError(f"time budget must be positive, got {time_budget} s")
        for clash, why in ((state, f"{resume}: a resumed run keeps its steps per epoch; bound this call with "
                                    "a time limit instead of a budget"),
                           (steps_per_epoch, "a time budget sets the steps per epoch; give one or the other"),
                           (time_limit, "a time budget is also the run's time limit; give one or the other")):
            if clash is not None:
                raise SRExportError(why)
    network, scales, recipe, label, out, precision = (run.network, run.scales, run.recipe, run.label, run.out,
                                                      run.precision)
    total_epochs, steps_per_epoch, data_dir, val_dir = recipe.epochs, run.steps_per_epoch, run.data_dir, run.val_dir
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
    paths = _images_except(data_dir, list(curves.values()))
    if val_dir is not None:
        train_paths, val_paths = paths, _images_except(val_dir, list(curves.values()))
        val_desc = f"{val_dir} ({len(val_paths)} images)"
    else:
        k = n_val if n_val is not None else (state["n_val"] if state else default_holdout(len(paths)))
        train_paths, val_paths = split_holdout(paths, k, run.seed)
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
    np_rng = _seed_everything(run.seed)
    models = {s: build(network, s, **run.hparams) for s in scales}
    model = models[scales[0]]  # holds the parameters; the other scales' models share them
    init_weights(model, recipe.init)
    if state is not None:
        init_record = state.get("init_from")
    elif run.init_source is not None:
        init_record = warm_start(model, *run.init_source, init_from)
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
    optimizer = make_optimizer(model, recipe, run.base_lr)
    scheduler = make_scheduler(optimizer, recipe)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    budget_record = state.get("time_budget") if state is not None else None
    if time_budget is not None:
        calibration = calibrate(models, patch_sets, val_pairs, recipe, run.base_lr, dev, autocast, run.seed, time_budget)
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
            **({"scales": list(scales), "selection": "best mean validation PSNR over the scales",
                "resume_file": resume_file.name}
               if len(scales) > 1 else {}),
            "recipe": recipe.to_dict(),
            "base_lr": run.base_lr,
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
            "seed": run.seed,
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
            "network": network, "scales": list(scales), "hparams": run.hparams,
            "recipe": recipe.to_dict(),
            "base_lr": run.base_lr, "seed": run.seed, "precision": precision, "data_dir": str(data_dir.resolve()),
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
                       float(np.mean(list(bicubic_val.values()))), epochs_done, history, seconds, total_epochs,
                       "the end of the time budget" if time_budget is not None else "the time limit")
