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

The training images may come from several folders (T91 and BSD200, VDSR's 291 images): one patch
pipeline runs over all of them, and the record lists each folder with its image count. Under
torchrun, or `srexport train --nproc N`, the run trains data-parallel over N processes as one
process would on the same global batch (`distributed.py`), and may be resumed with another number
of processes; rank 0 alone writes.

The run's settings are resolved and checked in `runsettings.py`, the recipes live in `recipes.py`,
the step and its parts in `steps.py`, the resume file's format, the run's file names and the curve
in `runfiles.py`, the fit to a time budget in `budget.py`, and the processes' teamwork in
`distributed.py`.
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

from . import __version__, distributed
from .archs import build
from .atomic import check_writable
from .budget import calibrate, fit_steps_per_epoch
from .checkpoint import ModelRecord, load_checkpoint, save_checkpoint
from .data import list_images, load_image, protocol_pair
from .errors import SRExportError
from .patches import PatchSet, default_holdout, split_holdout
from .runfiles import (RESUME_FORMAT, curve_path_for, load_resume, resume_path_for, rng_state, save_resume,
                       set_rng_state, write_curve)
from .runsettings import as_scales, checkpoint_paths, folders_label, new_run, resumed_run, scales_label
from .steps import (bicubic_psnr, init_weights, make_optimizer, make_scheduler, share_parameters, train_step,
                    validate, validation_psnrs, warm_start)


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


def _device_name(dev: torch.device, several: bool = False) -> str:
    if dev.type == "cuda":  # several processes: one GPU each
        return f"{'cuda' if several else dev} ({torch.cuda.get_device_name(dev)}{', one each' if several else ''})"
    if dev.type == "cpu":  # training time means little without the core count
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(dev)


def with_device(devices: list[dict], from_epoch: int, device: str, processes: int = 1) -> list[dict]:
    """`devices` (see devices_label) with `device` running from `from_epoch` on, in `processes`
    processes (data-parallel, each on such a device)."""
    kept = [d for d in devices if d["from_epoch"] < from_epoch]  # drops a call killed in its first epoch
    if kept and kept[-1]["device"] == device and kept[-1].get("processes", 1) == processes:
        return kept
    return kept + [{"from_epoch": from_epoch, "device": device, **({"processes": processes} if processes > 1 else {})}]


def _span_name(seg: dict) -> str:
    n = seg.get("processes", 1)
    return seg["device"] if n == 1 else f"{n} processes x {seg['device']}"


def devices_label(devices: list[dict], epochs: int) -> str:
    """The record's device: one name, or which device ran which epochs when a resumed run changed
    device, thread count or number of processes. `devices` holds {"from_epoch", "device"} per
    change, in order, with "processes" where several trained together."""
    if not devices:
        return "not recorded"
    if len(devices) == 1 and devices[0]["from_epoch"] == 1:
        return _span_name(devices[0])
    parts = [f"epochs 1-{devices[0]['from_epoch'] - 1} not recorded"] if devices[0]["from_epoch"] > 1 else []
    for seg, following in zip(devices, devices[1:] + [None]):
        first, last = seg["from_epoch"], (following["from_epoch"] - 1 if following else epochs)
        parts.append(f"{_span_name(seg)} for epoch{f' {first}' if first == last else f's {first}-{last}'}")
    return ", ".join(parts)


def _validate(model, pairs: list, scale: int, dev: torch.device, ranks: distributed.Ranks) -> float:
    """The validation PSNR, as one process computes it; several processes share the images out."""
    if not ranks.several:
        return validate(model, pairs, scale, dev)
    mine = distributed.my_part(ranks, len(pairs))
    values = dict(zip(mine, validation_psnrs(model, [pairs[i] for i in mine], scale, dev)))
    return float(np.mean(distributed.gathered(ranks, values, len(pairs))))


def _fingerprint(paths: list[Path]) -> list:
    return [[p.name, p.stat().st_size] for p in paths]


def _seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    return np.random.default_rng(seed)


def _folder_records(folders: tuple[Path, ...], train_paths: list[Path], paths: list[Path]) -> list[dict]:
    """Each training folder: its name, its path as given, and how many of its images train."""
    training = set(train_paths)
    return [{"name": folder.name, "path": str(folder), "images": sum(p in training for p in folder_paths)}
            for folder, folder_paths in zip(folders, _by_folder(folders, paths))]


def _by_folder(folders: tuple[Path, ...], paths: list[Path]) -> list[list[Path]]:
    return [[p for p in paths if p.parent == folder] for folder in folders]


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
    """Train `network` at `scale` on the images in `data_dir` (a folder, or several: one patch
    pipeline over all their images); see the module docstring.

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
    Run in each process of a torch.distributed group (torchrun, or distributed.launch), it trains
    data-parallel: `batch_size` stays the global batch, shared out over the processes.
    """
    started = time.monotonic()
    ranks, dev = distributed.join(_device(device))
    try:
        return _train(ranks, dev, started, network, scale, data_dir, out_path=out_path, val_dir=val_dir,
                      epochs=epochs, batch_size=batch_size, lr=lr, resume=resume, seed=seed,
                      steps_per_epoch=steps_per_epoch, force=force, progress=progress, hparams=hparams, n_val=n_val,
                      cache_dir=cache_dir, precision=precision, init_from=init_from, step_epochs=step_epochs,
                      context=context, time_limit=time_limit, time_budget=time_budget)
    finally:
        distributed.leave(ranks)


def _train(ranks: distributed.Ranks, dev: torch.device, started: float, network, scale, data_dir, *, out_path,
           val_dir, epochs, batch_size, lr, resume, seed, steps_per_epoch, force, progress, hparams, n_val,
           cache_dir, precision, init_from, step_epochs, context, time_limit, time_budget) -> TrainResult:
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
    total_epochs, steps_per_epoch, data_dirs, val_dir = recipe.epochs, run.steps_per_epoch, run.data_dirs, run.val_dir
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
    paths = [p for folder in data_dirs for p in _images_except(folder, list(curves.values()))]
    if val_dir is not None:
        train_paths, val_paths = paths, _images_except(val_dir, list(curves.values()))
        val_desc = f"{val_dir} ({len(val_paths)} images)"
    else:
        k = n_val if n_val is not None else (state["n_val"] if state else default_holdout(len(paths)))
        train_paths, val_paths = split_holdout(paths, k, run.seed)
        names = [p.name if len(data_dirs) == 1 else f"{p.parent.name}/{p.name}" for p in val_paths]
        val_desc = f"{len(val_paths)} held-out images of {folders_label(data_dirs)}: {', '.join(names)}"
    fingerprint = _fingerprint(train_paths)
    folders = _folder_records(data_dirs, train_paths, paths)
    if state is not None and fingerprint != state["data_fingerprint"]:
        then = state.get("data_folders") or [{"name": Path(state["data_dir"]).name, "path": state["data_dir"]}]
        raise SRExportError(
            f"{state['path']}: the run trained on {len(state['data_fingerprint'])} images of "
            f"{', '.join(f['path'] for f in then)}; {', '.join(map(str, data_dirs))} hold other images "
            f"({len(train_paths)} to train on now)")
    patch_sets = {s: PatchSet.from_paths(train_paths, s, *recipe.patch_for(s), augment=True,
                                         cache_dir=cache_dir, resize_factors=recipe.resize_factors,
                                         context=recipe.context)
                  for s in scales}
    val_pairs = {s: [protocol_pair(load_image(p), s) for p in val_paths] for s in scales}
    bicubic_val = {s: bicubic_psnr(val_pairs[s], s) for s in scales}
    steps = (steps_per_epoch if steps_per_epoch is not None
             else sum(p.steps_per_epoch(recipe.batch_size) for p in patch_sets.values()))

    # ------------------------------------------------------------ model, optimizer
    np_rng = _seed_everything(run.seed)  # the same on every rank: they draw one batch plan
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
        calibration = calibrate(models, patch_sets, val_pairs, recipe, run.base_lr, dev, autocast, run.seed,
                                time_budget, ranks)
        seconds_left = time_budget - (time.monotonic() - started)
        if ranks.several:  # one plan for all: rank 0's clock
            seconds_left = distributed.from_main(ranks, seconds_left)
        steps = steps_per_epoch = fit_steps_per_epoch(seconds_left, total_epochs, calibration, label)
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
        devices = with_device(devices, epochs_done + 1, _device_name(dev, ranks.several), ranks.world)
    # the steps' view of each scale's model: itself, or its share of one DistributedDataParallel
    stepped = distributed.data_parallel(models, ranks) if ranks.several else models

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
                **({"dir": str(data_dirs[0].resolve())} if len(data_dirs) == 1 else {}),
                "folders": folders,
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
            "base_lr": run.base_lr, "seed": run.seed, "precision": precision,
            **({"data_dir": str(data_dirs[0].resolve())} if len(data_dirs) == 1 else {}),  # what older versions read
            "data_dirs": [str(d.resolve()) for d in data_dirs], "data_folders": folders,
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

    progress = progress and ranks.main  # one bar for the run
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
            # the steps go round the scales; each scale draws its own batches (each rank its part of them)
            scale_steps = {s: len(range(i, steps, len(scales))) for i, s in enumerate(scales)}
            if ranks.several:
                batches = {s: patch_sets[s].shards(recipe.batch_size, np_rng, ranks.rank, ranks.world, steps=n)
                           for s, n in scale_steps.items()}
            else:
                batches = {s: patch_sets[s].batches(recipe.batch_size, np_rng, steps=n) for s, n in scale_steps.items()}
            for step in range(steps):
                s = scales[step % len(scales)]
                if ranks.several:
                    batch, share = next(batches[s])
                    loss_sum += train_step(stepped[s], optimizer, recipe, batch, dev, autocast, alpha, share,
                                           ranks.world)
                else:
                    loss_sum += train_step(models[s], optimizer, recipe, next(batches[s]), dev, autocast, alpha)
                count += 1
                if progress and (count - shown >= 20 or count == steps):  # a sync only every few steps
                    # rank 0's part of the losses, scaled up: a glimpse, the epoch's loss is summed below
                    postfix["loss"] = f"{loss_sum.item() * ranks.world / count:.3g}"
                    bar.set_postfix(postfix, refresh=False)
                    bar.update(count - shown)
                    shown = count
            if ranks.several:
                loss_sum = distributed.total(ranks, loss_sum)
            epoch_loss = loss_sum.item() / max(count, 1)
            vals = {s: _validate(models[s], val_pairs[s], s, dev, ranks) for s in scales}
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
                if ranks.main:
                    save_checkpoints(epochs_done)
            if ranks.main:
                write_resume()  # after the checkpoints: a kill between the two only repeats this epoch
            postfix.update(val=f"{val:.2f}", best=f"{best_psnr:.2f}", loss=f"{epoch_loss:.3g}")
            bar.set_postfix(postfix, refresh=False)
            bar.update(steps - shown)
            if time_limit is not None:
                stop = time.monotonic() - started + entry["seconds"] > time_limit
                if stop if not ranks.several else distributed.from_main(ranks, stop):  # rank 0's clock decides
                    break
    finally:
        bar.close()

    if best_epoch == 0:
        raise SRExportError(f"{label}: training diverged (validation PSNR is not finite); try a lower --lr")

    # ------------------------------------------------------------ final checkpoints and curves
    from safetensors.torch import load_file

    if ranks.main:
        model.load_state_dict(load_file(str(first)))  # the best epoch's weights, with the full history
        record = save_checkpoints(epochs_done)[0]
        for path in curves.values():
            write_curve(path, history, bicubic_val, label)
    if ranks.several:
        distributed.barrier(ranks)  # rank 0 has written: the other ranks read its record
        if not ranks.main:
            model.load_state_dict(load_file(str(first)))
            record = load_checkpoint(first)[1]
    return TrainResult(checkpoints, resume_file, curves[scales[0]], record, best_epoch, best_psnr,
                       float(np.mean(list(bicubic_val.values()))), epochs_done, history, seconds, total_epochs,
                       "the end of the time budget" if time_budget is not None else "the time limit")
