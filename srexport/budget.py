"""Fitting a training run to a wall-clock budget (`srexport train --time-budget`).

A run with a budget times, before its first epoch, a few training steps and one validation pass on
its own device, and sets its steps per epoch so that all of the recipe's epochs, learning-rate
schedule included, end inside the budget. `--time-limit` is the other tool: it cuts a run short at
an epoch boundary, right for a long run resumed slot after slot, wrong for a run that has to be
whole in one slot, since the learning-rate drops of its later epochs never come.
`calibrate` does the timing, `fit_steps_per_epoch` the arithmetic.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .errors import SRExportError
from .steps import make_optimizer, train_step, validate, validation_psnrs

if TYPE_CHECKING:
    from .distributed import Ranks
    from .patches import PatchSet
    from .recipes import Recipe

# The share of the budget the epochs are planned to fill. The rest absorbs what the calibration
# cannot see: checkpoint and resume-file writes after each epoch, the curve at the end, and steps
# that run a little slower than the timed ones.
PLANNED_SHARE = 0.95


@dataclass(frozen=True)
class Calibration:
    step_seconds: float  # one training step (data included), averaged over the timed steps
    steps_timed: int
    validation_seconds: float  # one validation pass, over every scale of the run

    def to_dict(self) -> dict:
        return {"step_seconds": round(self.step_seconds, 6), "steps_timed": self.steps_timed,
                "validation_seconds": round(self.validation_seconds, 3)}


def seconds_per_call(fn: Callable[[], object], *, warmup: int = 2, block: int = 5, min_calls: int = 10,
                     min_seconds: float = 1.0, max_seconds: float = 20.0,
                     sync: Callable[[], object] = lambda: None,
                     agree: Callable[[bool], bool] = lambda done: done) -> tuple[float, int]:
    """Mean wall time of `fn` and how many calls were timed: `warmup` untimed calls (cuDNN's
    autotuning, allocator growth), then blocks of `block` calls, each ended by `sync` (a GPU runs
    behind the Python that queues its work), until at least `min_calls` calls and `min_seconds`
    have gone by, or `max_seconds` has. `agree` makes that decision one for all the processes of a
    distributed run, whose steps must be as many on every rank."""
    for _ in range(warmup):
        fn()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(block):
            fn()
        sync()
        calls += block
        elapsed = time.perf_counter() - start
        if agree((calls >= min_calls and elapsed >= min_seconds) or elapsed >= max_seconds):
            return elapsed / calls, calls


def timing_for(device) -> dict:
    """`seconds_per_call`'s `block` and `sync` for a torch.device: a GPU queues its work, so its calls
    are timed in blocks of 5, each ended by a synchronize; a CPU call is done when it returns."""
    if device.type != "cuda":
        return {"block": 1, "sync": lambda: None}
    return {"block": 5, "sync": lambda: torch.cuda.synchronize(device)}


def fit_steps_per_epoch(seconds_left: float, epochs: int, calibration: Calibration, label: str) -> int:
    """The most steps per epoch with which `epochs` epochs (each one validation pass besides its
    steps) fill PLANNED_SHARE of `seconds_left`."""
    per_epoch = PLANNED_SHARE * seconds_left / epochs - calibration.validation_seconds
    steps = int(per_epoch // calibration.step_seconds) if per_epoch > 0 else 0
    if steps < 1:
        step, val = calibration.step_seconds, calibration.validation_seconds
        raise SRExportError(
            f"{label}: {max(seconds_left, 0.0):.0f} s of the time budget are left after setup, and {epochs} epochs "
            f"of one step ({step:.3g} s) and a validation pass ({val:.3g} s) need at least "
            f"{(step + val) * epochs / PLANNED_SHARE:.0f} s; give a larger time budget or fewer epochs")
    return steps


def calibrate(models: dict[int, nn.Module], patch_sets: dict[int, PatchSet], val_pairs: dict, recipe: Recipe,
              base_lr: float, dev: torch.device, autocast, seed: int, time_budget: float,
              ranks: Ranks | None = None) -> Calibration:
    """Time training steps (going round the scales, as the epochs do) and one validation pass on
    throwaway copies of the models and optimizer, with their own batches, so that the run's weights
    and random state are left as they were: a run fitted to a budget trains exactly as one given
    the fitted steps per epoch. The steps are timed for 1% of the budget (1 to 10 s). With several
    processes (`ranks`) the copies train as the run will, each rank on its share of the batches
    and its share of the validation images, and every rank gets the slowest rank's times."""
    from . import distributed

    several = ranks is not None and ranks.several
    copies = copy.deepcopy(models)  # one deepcopy keeps the scales' shared parameters shared
    scales = list(copies)
    optimizer = make_optimizer(copies[scales[0]], recipe, base_lr)
    rng = np.random.default_rng(seed + 1)
    if several:
        stepped = distributed.data_parallel(copies, ranks)
        shards = {s: patch_sets[s].shards(recipe.batch_size, rng, ranks.rank, ranks.world, steps=2**62)
                  for s in scales}
    turn = itertools.cycle(scales)

    def step() -> None:
        s = next(turn)
        if several:
            batch, share = next(shards[s])
            train_step(stepped[s], optimizer, recipe, batch, dev, autocast, recipe.alpha(0), share, ranks.world)
        else:
            train_step(copies[s], optimizer, recipe, next(batches[s]), dev, autocast, recipe.alpha(0))

    if not several:
        batches = {s: patch_sets[s].batches(recipe.batch_size, rng, steps=2**62) for s in scales}
    agree = (lambda done: bool(distributed.from_main(ranks, done))) if several else (lambda done: done)
    gpu = dev.type == "cuda"  # two warm-up steps a scale on a GPU, for cuDNN's autotuning
    with torch.random.fork_rng(devices=[dev] if gpu else [], device_type=dev.type):
        step_seconds, steps_timed = seconds_per_call(
            step, warmup=(2 if gpu else 1) * len(scales), min_seconds=min(10.0, max(1.0, 0.01 * time_budget)),
            agree=agree, **timing_for(dev))
        t0 = time.perf_counter()
        for s in scales:
            if several:
                mine = distributed.my_part(ranks, len(val_pairs[s]))
                validation_psnrs(copies[s], [val_pairs[s][i] for i in mine], s, dev)
            else:
                validate(copies[s], val_pairs[s], s, dev)
        validation_seconds = time.perf_counter() - t0
    if several:
        step_seconds, validation_seconds = (distributed.largest(ranks, step_seconds),
                                            distributed.largest(ranks, validation_seconds))
    del copies, optimizer
    if gpu:
        torch.cuda.empty_cache()
    return Calibration(step_seconds, steps_timed, validation_seconds)
