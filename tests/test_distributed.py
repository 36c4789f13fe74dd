"""srexport.distributed: data-parallel training in several processes (gloo on the CPU here), which
must train as one process on the same global batch, and resume with another number of processes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from srexport import distributed
from srexport.checkpoint import load_checkpoint
from srexport.errors import SRExportError
from srexport.runfiles import load_resume, resume_path_for
from srexport.train import train

from _images import texture

torch.set_num_threads(1)

# ESPCN trains with a patch context, so the processes' shares of a batch are loss-mask pixel counts;
# a batch of 7 splits 4 + 3 over two processes, unequal shares
RUN = dict(epochs=2, steps_per_epoch=3, batch_size=7, seed=0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two small training folders, one of PNGs and one of JPEGs (as BSD200 is)."""
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(1)
    a, b = root / "A", root / "B"
    a.mkdir()
    b.mkdir()
    for i in range(3):
        Image.fromarray(texture(rng, 56 + 2 * i, 60)).save(a / f"a{i}.png")
    for i in range(2):
        Image.fromarray(texture(rng, 58, 56 + 2 * i)).save(b / f"b{i}.jpg", quality=95)
    return a, b


@pytest.fixture(scope="module")
def one_process(folders, tmp_path_factory):
    """The reference: one process, global batch 7."""
    out = tmp_path_factory.mktemp("one") / "e.safetensors"
    train("espcn", 2, list(folders), out_path=out, progress=False, **RUN)
    return out


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # as the reference, which runs on one thread


def _cli(*args: str) -> list[str]:
    a, b = args[:2]
    return ["train", "espcn", "-s", "2", "--data", a, "--data", b, "--epochs", str(RUN["epochs"]),
            "--steps-per-epoch", str(RUN["steps_per_epoch"]), "--batch-size", str(RUN["batch_size"]), *args[2:]]


def _close(a_path, b_path) -> float:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_gloo_processes_under_torchrun_train_as_one_process_on_the_global_batch(folders, one_process, tmp_path):
    out = tmp_path / "e.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", "127.0.0.1:0", "--local-addr", "127.0.0.1", "-m", "srexport.cli",
           *_cli(str(folders[0]), str(folders[1]), "-o", str(out))]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("espcn x2: best val PSNR") == 1  # rank 0 alone reports
    # the same weights, up to the order in which float sums were taken
    assert _close(out, one_process) < 1e-5
    ref, got = load_checkpoint(one_process)[1].training, load_checkpoint(out)[1].training
    assert [h["loss"] for h in got["history"]] == pytest.approx([h["loss"] for h in ref["history"]], rel=1e-5)
    assert [h["val_psnr"] for h in got["history"]] == pytest.approx([h["val_psnr"] for h in ref["history"]], abs=1e-4)
    assert got["device"] == "2 processes x cpu (1 thread)" and ref["device"] == "cpu (1 thread)"
    assert got["batch_size"] == 7 and got["steps_per_epoch"] == 3
    # both ran the same plan: the same random state after the run, whatever the number of processes
    rng_after = load_resume(resume_path_for(out))["rng"]["numpy"]
    assert rng_after == load_resume(resume_path_for(one_process))["rng"]["numpy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.curve.png", "e.resume.safetensors", "e.safetensors"]


def test_a_run_stopped_in_two_processes_continues_in_one_from_its_last_epoch(folders, one_process, tmp_path):
    out = tmp_path / "e.safetensors"
    cmd = [sys.executable, "-m", "srexport.cli", *_cli(str(folders[0]), str(folders[1]), "-o", str(out)),
           "--nproc", "2", "--time-limit", "0.001"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 5, done.stderr[-3000:]  # stopped at the time limit, after its first epoch
    assert f"after epoch 1 of 2; continue with: srexport train --resume {out}" in done.stdout
    assert load_resume(resume_path_for(out))["epochs_done"] == 1

    r = train(None, None, resume=out, progress=False)  # one process now
    assert r.complete and [h["epoch"] for h in r.history] == [1, 2]
    t = r.record.training
    assert t["resumed_at_epochs"] == [1]
    assert t["device"] == "2 processes x cpu (1 thread) for epoch 1, cpu (1 thread) for epoch 2"
    assert _close(out, one_process) < 1e-5  # as the uninterrupted one-process run
    assert [f["name"] for f in t["data"]["folders"]] == ["A", "B"]


def test_a_launched_process_reports_a_user_mistake_as_one_error_line(folders, tmp_path, capsys, monkeypatch):
    """What each process `launch` starts runs (here in this process, as rank 0): one error line and
    the error's exit code, which `launch` returns for the command, never a traceback."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else the worker shares this machine's cores out to this process
    kwargs = dict(network="espcn", scale=2, data_dir=(folders[0], tmp_path / "missing"),
                  out_path=tmp_path / "e.safetensors", progress=False)
    assert distributed.worker(kwargs, 1) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such folder\n"
    monkeypatch.setenv("RANK", "1")  # the other ranks stay quiet
    assert distributed.worker(kwargs, 1) == 2
    assert capsys.readouterr().err == ""


def test_launch_and_join_refuse_what_they_cannot_run(monkeypatch):
    with pytest.raises(SRExportError, match="--nproc must be at least 1, got 0"):
        distributed.launch(0, {})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SRExportError, match="under torchrun leave it out"):
        distributed.launch(2, {})
    with pytest.raises(SRExportError, match=r"--device cuda:1: with several processes each takes cuda:LOCAL_RANK"):
        distributed.join(torch.device("cuda", 1))
    with pytest.raises(SRExportError, match="several processes train on cpu"):
        distributed.join(torch.device("meta"))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(SRExportError, match="WORLD_SIZE='two' is not a number of processes"):
        distributed.join(torch.device("cpu"))
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.join(torch.device("cpu")) == (distributed.Ranks(), torch.device("cpu"))
