"""srexport.budget: timing a call and fitting steps per epoch to the time left."""

from __future__ import annotations

import time

import pytest
import torch

from srexport.budget import PLANNED_SHARE, Calibration, fit_steps_per_epoch, seconds_per_call, timing_for
from srexport.errors import SRExportError


def test_seconds_per_call_times_whole_blocks_after_the_warmup_and_syncs_each():
    calls, syncs = [], []

    def fn():
        calls.append(time.perf_counter())
        time.sleep(0.004)

    seconds, timed = seconds_per_call(fn, warmup=3, block=5, min_calls=10, min_seconds=0.0,
                                      sync=lambda: syncs.append(1))
    assert timed == 10 and len(calls) == 13
    assert len(syncs) == 3  # after the warmup and after each block
    assert 0.004 <= seconds < 0.05  # sleep never returns early; the bound above is loose for a busy machine


def test_seconds_per_call_runs_until_both_minimums_are_met_or_the_maximum_has_passed():
    _, timed = seconds_per_call(lambda: time.sleep(0.01), warmup=0, block=2, min_calls=2, min_seconds=0.1)
    assert timed >= 10 and timed % 2 == 0
    _, timed = seconds_per_call(lambda: time.sleep(0.02), warmup=0, block=1, min_calls=1000, max_seconds=0.1)
    assert 1 <= timed <= 5


def test_seconds_per_call_stops_when_the_processes_agree_to():
    """A distributed run's ranks must time as many steps each: `agree` turns each rank's own decision
    into one for all (distributed.from_main: rank 0's)."""
    asked = []

    def rank0_says(done: bool) -> bool:
        asked.append(done)
        return len(asked) == 3  # as if rank 0 had seen its minimums met after three blocks

    _, timed = seconds_per_call(lambda: None, warmup=0, block=2, min_calls=1, min_seconds=0.0, agree=rank0_says)
    assert timed == 6 and asked == [True, True, True]  # this rank was done after one block, and went on


def test_fit_steps_per_epoch_fills_the_planned_share_of_the_time_left():
    cal = Calibration(step_seconds=0.25, steps_timed=50, validation_seconds=0.5)
    steps = fit_steps_per_epoch(101.0, 10, cal, "vdsr x2")
    assert steps == 36  # 10 epochs of (36 * 0.25 + 0.5) s = 95 s <= 0.95 * 101 s = 95.95 s < 10 epochs of 37 steps
    assert 10 * (steps * 0.25 + 0.5) <= PLANNED_SHARE * 101.0 < 10 * ((steps + 1) * 0.25 + 0.5)
    assert fit_steps_per_epoch(101.0, 1, cal, "vdsr x2") == 381  # (95.95 - 0.5) / 0.25 = 381.8


@pytest.mark.parametrize("seconds_left", [5.0, -3.0])
def test_a_budget_that_fits_no_step_an_epoch_says_what_it_would_need(seconds_left):
    cal = Calibration(step_seconds=0.5, steps_timed=20, validation_seconds=0.5)
    with pytest.raises(SRExportError) as e:
        fit_steps_per_epoch(seconds_left, 10, cal, "drcn x3")
    need = round(10 * 1.0 / PLANNED_SHARE)
    assert str(e.value) == (f"drcn x3: {max(seconds_left, 0):.0f} s of the time budget are left after setup, and 10 "
                            f"epochs of one step (0.5 s) and a validation pass (0.5 s) need at least {need} s; "
                            "give a larger time budget or fewer epochs")


def test_a_cpu_call_is_timed_alone_and_needs_no_sync():
    timing = timing_for(torch.device("cpu"))
    assert timing["block"] == 1 and timing["sync"]() is None


def test_calibration_record():
    assert Calibration(0.01234567, 40, 1.23456).to_dict() == {
        "step_seconds": 0.012346, "steps_timed": 40, "validation_seconds": 1.235}
