"""srexport.train: the training loop, its records, and kill-and-resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from srexport.archs import build
from srexport.checkpoint import load_checkpoint, weights_sha256
from srexport.data import list_images, load_image, protocol_pair
from srexport.errors import SRExportError
from srexport.recipes import recipe_for
from srexport.runfiles import curve_path_for, load_resume, resume_path_for
from srexport.steps import validate
from srexport.train import devices_label, train, with_device

from _images import texture

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(texture(rng, 78 + 3 * i, 80)).save(d / f"t{i}.png")  # ESPCN's x3 window is 75 pixels
    return d


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    Image.fromarray(texture(np.random.default_rng(9), 48, 48)).save(d / "v0.png")
    return d


def test_context_trains_on_context_windows_records_it_and_stays_on_resume(data, tmp_path):
    out = tmp_path / "c.safetensors"
    r = train("srcnn", 3, data, out_path=out, epochs=2, steps_per_epoch=3, batch_size=4, context=2, progress=False)
    t = load_checkpoint(out, network="srcnn", scale=3)[1].training
    assert recipe_for("srcnn").context == 0
    assert t["recipe"]["context"] == 2 and t["data"]["context"] == 2 and t["data"]["images_smaller_than_window"] == 0
    assert t["data"]["lr_patch"] == 11 and t["data"]["hr_patch"] == 33
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in r.history)
    assert train(None, None, resume=out, epochs=3, progress=False).record.training["recipe"]["context"] == 2
    with pytest.raises(SRExportError, match=r"cannot change the context when resuming \(2 -> 0\)"):
        train(None, None, resume=out, epochs=4, context=0, progress=False)


# ---------------------------------------------------------------- the loop


@pytest.mark.parametrize("net", ["espcn", "fsrcnn_s"])
def test_tiny_run_writes_a_true_record(net, data, tmp_path):
    out = tmp_path / f"{net}.safetensors"
    r = train(net, 3, data, out_path=out, epochs=2, steps_per_epoch=3, batch_size=4, seed=11, progress=False)
    assert out.is_file() and resume_path_for(out).is_file() and curve_path_for(out).is_file()
    assert r.checkpoint == out and r.epochs == 2 and len(r.history) == 2
    with Image.open(curve_path_for(out)) as im:
        assert im.format == "PNG" and im.size[0] > 300
    model, record = load_checkpoint(out, network=net, scale=3)
    t = record.training
    assert t["epochs"] == 2 and t["seed"] == 11 and t["steps_per_epoch"] == 3 and t["batch_size"] == 4
    assert t["recipe"]["network"] == net and t["recipe"]["epochs"] == 2
    assert t["data"]["dir"] == str(data.resolve()) and t["data"]["images"] == 4  # one held out
    assert "held-out" in t["data"]["validation"]
    assert t["torch"] == torch.__version__ and re.fullmatch(rf"cpu \({torch.get_num_threads()} threads?\)", t["device"])
    assert [h["epoch"] for h in t["history"]] == [1, 2]
    assert record.metrics["val_psnr"] == max(h["val_psnr"] for h in t["history"])
    assert record.metrics["epoch"] == t["best_epoch"] == r.best_epoch
    assert record.metrics["val_border"] == 3
    # the checkpoint holds the best epoch's weights
    state = load_resume(resume_path_for(out))
    assert state["epochs_done"] == 2 and state["network"] == net
    if r.best_epoch == 2:
        for k, v in model.state_dict().items():
            assert torch.equal(v, state["model"][k])


def test_resume_file_is_not_pickle(data, tmp_path):
    out = tmp_path / "e.safetensors"
    train("espcn", 2, data, out_path=out, epochs=1, steps_per_epoch=2, batch_size=4, progress=False)
    raw = resume_path_for(out).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])  # plain safetensors: JSON header, raw tensors
    meta = json.loads(header["__metadata__"]["srexport_resume"])
    assert meta["epochs_done"] == 1 and "optimizer" in meta and "rng" in meta
    with safe_open(str(resume_path_for(out)), framework="pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("s/optimizer/state") for k in keys) and "s/rng/torch" in keys


def test_loss_decreases_on_a_tiny_overfit_case(tmp_path):
    d = tmp_path / "one"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(texture(rng, 56, 56)).save(d / f"a{i}.png")  # holds a 50-pixel ESPCN x2 window
    r = train("espcn", 2, d, out_path=tmp_path / "o.safetensors", epochs=4, steps_per_epoch=15, batch_size=8,
              lr=3e-3, progress=False)
    losses = [h["loss"] for h in r.history]
    assert losses[-1] < 0.5 * losses[0]
    assert r.best_val_psnr > r.history[0]["val_psnr"]


def test_explicit_validation_folder_and_drcn_tiny(data, val, tmp_path):
    out = tmp_path / "d.safetensors"
    r = train("drcn", 2, data, out_path=out, val_dir=val, epochs=1, steps_per_epoch=2, batch_size=2,
              hparams={"channels": 4, "recursions": 3}, progress=False)
    _, record = load_checkpoint(out)
    assert record.hparams == {"channels": 4, "recursions": 3}
    assert record.training["data"]["images"] == 5 and str(val) in record.training["data"]["validation"]
    assert "alpha" in r.history[0]


def test_bf16_run_records_its_precision_and_resume_keeps_it(data, tmp_path):
    out = tmp_path / "b.safetensors"
    r = train("drcn", 2, data, out_path=out, epochs=1, steps_per_epoch=2, batch_size=2, precision="bf16",
              hparams={"channels": 4, "recursions": 3}, progress=False)
    assert all(math.isfinite(h["loss"]) for h in r.history)
    model, record = load_checkpoint(out)
    assert record.training["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())  # weights stay float32
    with pytest.raises(SRExportError, match="precision"):
        train("drcn", 2, data, resume=out, epochs=2, precision="fp32", progress=False)
    train("drcn", 2, data, resume=out, epochs=2, progress=False)
    assert load_resume(resume_path_for(out))["precision"] == "bf16"
    with pytest.raises(SRExportError, match="unknown precision 'fp8'"):
        train("espcn", 2, data, out_path=tmp_path / "p.safetensors", precision="fp8", progress=False)


def test_bf16_training_follows_the_fp32_run(data, tmp_path):
    """bf16 autocast only rounds the passes: from the same seed, loss and validation PSNR track fp32's."""
    histories = {}
    for precision in ("fp32", "bf16"):
        r = train("espcn", 2, data, out_path=tmp_path / f"{precision}.safetensors", epochs=3, steps_per_epoch=3,
                  batch_size=4, precision=precision, progress=False)
        histories[precision] = r.history
    for h32, h16 in zip(histories["fp32"], histories["bf16"]):
        assert h16["loss"] == pytest.approx(h32["loss"], rel=0.02)
        assert h16["val_psnr"] == pytest.approx(h32["val_psnr"], abs=0.1)


def test_user_errors(data, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(SRExportError, match="no such folder"):
        train("espcn", 3, tmp_path / "nope", out_path=out, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SRExportError, match="no images"):
        train("espcn", 3, tmp_path / "empty", out_path=out, progress=False)
    with pytest.raises(SRExportError, match="unknown network"):
        train("nosuchnet", 3, data, out_path=out, progress=False)
    with pytest.raises(SRExportError, match="scale"):
        train("espcn", 5, data, out_path=out, progress=False)
    with pytest.raises(SRExportError, match="CUDA"):
        if torch.cuda.is_available():
            raise SRExportError("CUDA present; nothing to check")
        train("espcn", 3, data, out_path=out, device="cuda", progress=False)
    train("espcn", 3, data, out_path=out, epochs=1, steps_per_epoch=1, progress=False)
    with pytest.raises(SRExportError, match="already exists"):
        train("espcn", 3, data, out_path=out, epochs=1, steps_per_epoch=1, progress=False)
    with pytest.raises(SRExportError, match="network 'espcn'"):
        train("fsrcnn", 3, data, resume=resume_path_for(out), progress=False)
    with pytest.raises(SRExportError, match="x3"):
        train("espcn", 2, data, resume=out, progress=False)  # a checkpoint finds its resume file
    with pytest.raises(SRExportError, match="no such resume file"):
        train("espcn", 3, data, resume=tmp_path / "none.resume.safetensors", progress=False)
    with pytest.raises(SRExportError, match="not an srexport resume file"):
        bogus = tmp_path / "b.safetensors"
        from safetensors.torch import save_file
        save_file({"a": torch.zeros(1)}, str(bogus))
        train("espcn", 3, data, resume=bogus, progress=False)


def test_resume_extends_a_finished_run(data, tmp_path):
    out = tmp_path / "r.safetensors"
    train("fsrcnn_s", 2, data, out_path=out, epochs=1, steps_per_epoch=2, batch_size=4, progress=False)
    with pytest.raises(SRExportError, match="omit -o"):
        train("fsrcnn_s", 2, data, out_path=tmp_path / "other.safetensors", resume=out, epochs=2, progress=False)
    with pytest.raises(SRExportError, match="batch size"):
        train("fsrcnn_s", 2, data, resume=out, epochs=2, batch_size=8, progress=False)
    r = train("fsrcnn_s", 2, None, resume=out, epochs=2, progress=False)  # data folder from the resume file
    assert r.epochs == 2 and [h["epoch"] for h in r.history] == [1, 2]
    _, record = load_checkpoint(out)
    assert record.training["epochs"] == 2 and record.training["resumed_at_epochs"] == [1]
    assert record.training["epochs_planned"] == 2


def test_time_limit_stops_at_an_epoch_boundary_and_resume_continues(data, tmp_path):
    out = tmp_path / "t.safetensors"
    kw = dict(steps_per_epoch=2, batch_size=4, progress=False)
    r = train("fsrcnn_s", 2, data, out_path=out, epochs=3, time_limit=1e-3, **kw)  # one epoch always runs
    assert r.epochs == 1 and not r.complete
    assert f"after epoch 1 of 3; continue with: srexport train --resume {out}" in r.summary()
    _, record = load_checkpoint(out)
    assert record.training["epochs"] == 1 and record.training["epochs_planned"] == 3
    assert curve_path_for(out).is_file()
    r = train(None, None, resume=out, time_limit=1e-3, progress=False)
    assert r.epochs == 2 and not r.complete
    r = train(None, None, resume=out, time_limit=3600, progress=False)
    assert r.epochs == 3 and r.complete and "time limit" not in r.summary()
    assert load_checkpoint(out)[1].training["resumed_at_epochs"] == [1, 2]
    with pytest.raises(SRExportError, match="time limit must be positive, got 0 s"):
        train("fsrcnn_s", 2, data, out_path=tmp_path / "z.safetensors", time_limit=0, **kw)


def test_a_run_fitted_to_a_time_budget_trains_as_one_given_the_fitted_steps(data, tmp_path):
    kw = dict(epochs=1, batch_size=4, seed=3, progress=False)
    fitted = train("espcn", 2, data, out_path=tmp_path / "b.safetensors", time_budget=5.0, **kw)
    budget = fitted.record.training["time_budget"]
    steps = fitted.record.training["steps_per_epoch"]
    assert budget["seconds"] == 5.0 and budget["steps_timed"] >= 10
    assert budget["step_seconds"] > 0 and budget["validation_seconds"] > 0
    assert steps * budget["step_seconds"] + budget["validation_seconds"] <= 5.0  # what the fit planned
    assert steps > 10 and fitted.complete
    # the calibration trains throwaway copies on its own batches: the run is the plain run of that many steps
    plain = train("espcn", 2, data, out_path=tmp_path / "p.safetensors", steps_per_epoch=steps, **kw)
    assert "time_budget" not in plain.record.training
    a, b = load_file(tmp_path / "b.safetensors"), load_file(tmp_path / "p.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_resume(tmp_path / "b.safetensors")["time_budget"] == budget  # a resumed run keeps it on record
    cut_short = dataclasses.replace(fitted, epochs=0)  # what a slower epoch than the calibrated ones would give
    assert "stopped at the end of the time budget after epoch 0 of 1; continue with" in cut_short.summary()


def test_time_budget_errors(data, tmp_path):
    kw = dict(epochs=2, batch_size=4, progress=False)
    out = tmp_path / "e.safetensors"
    for extra, message in ((dict(steps_per_epoch=3), "a time budget sets the steps per epoch; give one or the other"),
                           (dict(time_limit=60), "a time budget is also the run's time limit; give one or the other")):
        with pytest.raises(SRExportError, match=re.escape(message)):
            train("espcn", 2, data, out_path=out, time_budget=60, **extra, **kw)
    with pytest.raises(SRExportError, match="time budget must be positive, got -1 s"):
        train("espcn", 2, data, out_path=out, time_budget=-1, **kw)
    with pytest.raises(SRExportError, match=r"espcn x2: 0 s of the time budget are left after setup, and 2 epochs "
                                            r"of one step \(.+ s\) and a validation pass \(.+ s\) need at least"):
        train("espcn", 2, data, out_path=out, time_budget=1e-3, **kw)
    assert not out.exists() and not resume_path_for(out).exists()  # nothing half-written
    train("espcn", 2, data, out_path=out, steps_per_epoch=1, **kw)
    with pytest.raises(SRExportError, match="a resumed run keeps its steps per epoch; bound this call with a time "
                                            "limit instead of a budget"):
        train(None, None, resume=out, epochs=3, time_budget=60, progress=False)


def test_a_run_resumed_with_another_thread_count_records_which_ran_which_epochs(data, tmp_path):
    out = tmp_path / "d.safetensors"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train("fsrcnn_s", 2, data, out_path=out, epochs=4, time_limit=1e-3, steps_per_epoch=2, batch_size=4,
              progress=False)
        assert load_checkpoint(out)[1].training["device"] == "cpu (1 thread)"
        torch.set_num_threads(2)
        train(None, None, resume=out, time_limit=1e-3, progress=False)
        train(None, None, resume=out, time_limit=1e-3, progress=False)  # same threads: the same span
        torch.set_num_threads(1)
        train(None, None, resume=out, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert load_checkpoint(out)[1].training["device"] == (
        "cpu (1 thread) for epoch 1, cpu (2 threads) for epochs 2-3, cpu (1 thread) for epoch 4")


def test_device_spans():
    one = with_device([], 1, "cpu (1 thread)")
    assert devices_label(one, 9) == "cpu (1 thread)"
    two = with_device(one, 7, "cuda:0 (NVIDIA H200)")
    assert devices_label(two, 9) == "cpu (1 thread) for epochs 1-6, cuda:0 (NVIDIA H200) for epochs 7-9"
    # a call killed before it finished its first epoch ran nothing that the checkpoint holds
    assert with_device(two, 7, "cpu (2 threads)") == [*one, {"from_epoch": 7, "device": "cpu (2 threads)"}]
    assert with_device(two, 7, "cpu (1 thread)") == one
    # resume files from before the spans were recorded
    assert devices_label(with_device([], 5, "cpu (2 threads)"), 8) == (
        "epochs 1-4 not recorded, cpu (2 threads) for epochs 5-8")
    assert devices_label([], 8) == "not recorded"
    # data-parallel calls: the number of processes is part of the span
    ddp = with_device(one, 4, "cpu (1 thread)", processes=2)
    assert ddp == [*one, {"from_epoch": 4, "device": "cpu (1 thread)", "processes": 2}]
    assert with_device(ddp, 6, "cpu (1 thread)", processes=2) == ddp
    assert devices_label(with_device(ddp, 6, "cpu (1 thread)"), 7) == (
        "cpu (1 thread) for epochs 1-3, 2 processes x cpu (1 thread) for epochs 4-5, cpu (1 thread) for epochs 6-7")
    assert devices_label(with_device([], 1, "cuda (NVIDIA H100, one each)", 4), 3) == (
        "4 processes x cuda (NVIDIA H100, one each)")


def test_a_run_over_several_folders_records_each_and_resumes_only_on_the_same_images(data, tmp_path):
    jpegs = tmp_path / "jpegs"  # as BSD200's images are
    jpegs.mkdir()
    for i in range(2):
        Image.fromarray(texture(np.random.default_rng(20 + i), 60, 64)).save(jpegs / f"j{i}.jpg", quality=95)
    out = tmp_path / "run" / "f.safetensors"
    kw = dict(epochs=1, steps_per_epoch=2, batch_size=4, progress=False)
    r = train("fsrcnn_s", 2, [data, jpegs], out_path=out, **kw)
    t = r.record.training
    assert "dir" not in t["data"] and t["data"]["images"] == 6  # of 7: one held out
    from_jpegs = held(t).startswith("j")
    assert t["data"]["folders"] == [{"name": data.name, "path": str(data), "images": 5 - (not from_jpegs)},
                                    {"name": "jpegs", "path": str(jpegs), "images": 2 - from_jpegs}]
    assert re.fullmatch(rf"1 held-out images of {data.name}\+jpegs: (jpegs/j\d\.jpg|{data.name}/t\d\.png)",
                        t["data"]["validation"])
    assert load_resume(out)["data_dirs"] == [str(data.resolve()), str(jpegs.resolve())]

    swapped = re.escape(f"f.resume.safetensors: the run trained on 6 images of {data}, {jpegs}; {jpegs}, {data} "
                        "hold other images (6 to train on now)")
    with pytest.raises(SRExportError, match=swapped):
        train(None, None, [jpegs, data], resume=out, epochs=2, progress=False)
    with pytest.raises(SRExportError, match=r"the run trained on .*\+jpegs \(.*\), not on jpegs"):
        train(None, None, [jpegs], resume=out, epochs=2, progress=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    for folder in (data, jpegs):  # the same images elsewhere: a run may move to another machine
        (moved / folder.name).mkdir()
        for f in folder.iterdir():
            (moved / folder.name / f.name).write_bytes(f.read_bytes())
    r = train(None, None, [moved / data.name, moved / "jpegs"], resume=out, epochs=2, progress=False)
    assert r.epochs == 2 and r.record.training["data"]["folders"][1]["path"] == str(moved / "jpegs")
    # a one-folder run lists its folder too, beside the "dir" its records always had
    one = train("fsrcnn_s", 2, data, out_path=tmp_path / "one.safetensors", **kw).record.training["data"]
    assert one["dir"] == str(data.resolve()) and one["folders"] == [{"name": data.name, "path": str(data), "images": 4}]


def held(training: dict) -> str:
    """The held-out image's name in a record's validation line."""
    return training["data"]["validation"].rsplit("/", 1)[-1]


@pytest.mark.skipif(not (Path(__file__).parents[2] / "shared/datasets/BSD200").is_dir(), reason="no ../shared/datasets")
def test_the_bsd200_jpegs_are_training_images():
    folder = Path(__file__).parents[2] / "shared/datasets/BSD200"
    paths = list_images(folder)
    assert len(paths) == 200 and {p.suffix for p in paths} == {".jpg"}
    assert load_image(paths[0]).ndim == 3


def test_one_run_over_several_scales_writes_a_checkpoint_per_scale_with_shared_weights(data, val, tmp_path):
    out = tmp_path / "m_x{scale}.safetensors"
    r = train("srcnn", (2, 3), data, out_path=out, val_dir=val, epochs=2, batch_size=4, progress=False)
    paths = {2: tmp_path / "m_x2.safetensors", 3: tmp_path / "m_x3.safetensors"}
    assert r.checkpoints == paths and r.resume_file == tmp_path / "m_x2.resume.safetensors"
    assert all(curve_path_for(p).is_file() for p in paths.values())
    best = r.history[r.best_epoch - 1]
    assert best["val_psnr"] == pytest.approx(np.mean(list(best["val_psnr_by_scale"].values())))
    models = {s: load_checkpoint(p) for s, p in paths.items()}
    assert weights_sha256(models[2][0]) == weights_sha256(models[3][0])
    for s, (model, record) in models.items():
        assert record.scale == s and record.training["scales"] == [2, 3]
        assert record.training["resume_file"] == "m_x2.resume.safetensors"
        assert record.metrics["val_psnr"] == best["val_psnr_by_scale"][f"x{s}"]
        pairs = [protocol_pair(load_image(p), s) for p in sorted(val.iterdir())]
        assert validate(model, pairs, s, "cpu") == pytest.approx(record.metrics["val_psnr"], abs=1e-6)
    # an epoch is one pass over both scales' patches, the steps alternating between them
    x2, x3 = (record.training["data"]["patches"] for _, record in models.values())
    assert r.record.training["steps_per_epoch"] == math.ceil(x2 / 4) + math.ceil(x3 / 4)

    paths[3].unlink()  # rewritten from the x2 checkpoint, which holds the same weights
    with pytest.raises(SRExportError, match=r"resume file is for x2\+3, not x2"):
        train("srcnn", 2, data, resume=paths[2], epochs=3, progress=False)
    resumed = train(None, None, resume=paths[2], epochs=3, progress=False)
    assert resumed.epochs == 3 and resumed.record.training["resumed_at_epochs"] == [2]
    assert load_resume(paths[3])["path"] == str(r.resume_file)  # any scale's checkpoint finds the run's resume file
    assert set(resumed.history[-1]["val_psnr_by_scale"]) == {"x2", "x3"}
    assert "srcnn x2+3: best val PSNR (mean over the scales)" in resumed.summary()
    assert weights_sha256(load_checkpoint(paths[3])[0]) == weights_sha256(load_checkpoint(paths[2])[0])


def test_several_scales_need_scale_free_weights_and_a_path_per_scale(data, tmp_path):
    with pytest.raises(SRExportError, match="espcn: its weights depend on the scale, so a run trains one scale "
                                           r"\(several at once: srcnn, srcnn_955, vdsr, drcn\)"):
        train("espcn", (2, 3), data, out_path=tmp_path / "e_x{scale}.safetensors", progress=False)
    with pytest.raises(SRExportError, match=r"a run over x2\+4 writes a checkpoint per scale; put \{scale\} in"):
        train("vdsr", (2, 4), data, out_path=tmp_path / "v.safetensors", progress=False)
    with pytest.raises(SRExportError, match=r"put \{scale\} in the file name, not in a folder name"):
        train("vdsr", (2, 4), data, out_path=tmp_path / "x{scale}" / "v.safetensors", progress=False)
    with pytest.raises(SRExportError, match=r"scale given twice in x2\+2"):
        train("vdsr", (2, 2), data, out_path=tmp_path / "v_x{scale}.safetensors", progress=False)
    with pytest.raises(SRExportError, match="scale must be one of 2, 3, 4, got 5"):
        train("vdsr", (2, 5), data, out_path=tmp_path / "v_x{scale}.safetensors", progress=False)


def test_the_default_checkpoint_path_is_name_and_scale(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = train("srcnn", 2, data, epochs=1, steps_per_epoch=1, batch_size=4, progress=False)
    assert r.checkpoint.resolve() == tmp_path / "srcnn_x2.safetensors" and r.checkpoint.is_file()


def test_a_moved_run_folder_resumes_where_it_now_is(data, tmp_path):
    first = tmp_path / "here"
    train("fsrcnn_s", 2, data, out_path=first / "m.safetensors", epochs=1, steps_per_epoch=2, batch_size=4,
          progress=False)
    moved = first.rename(tmp_path / "there")
    r = train(None, None, resume=moved / "m.safetensors", epochs=2, progress=False)
    assert r.checkpoint == moved / "m.safetensors" and r.epochs == 2
    assert sorted(p.name for p in moved.iterdir()) == ["m.curve.png", "m.resume.safetensors", "m.safetensors"]
    assert not first.exists()


def test_step_epochs_moves_the_learning_rate_drop(data, tmp_path):
    out = tmp_path / "s.safetensors"
    r = train("srcnn", 2, data, out_path=out, epochs=3, steps_per_epoch=1, batch_size=4, step_epochs=2, progress=False)
    assert [h["lr"] for h in r.history] == pytest.approx([1e-3, 1e-3, 1e-4])
    assert r.record.training["recipe"]["step_epochs"] == 2
    with pytest.raises(SRExportError, match="cannot change the step epochs when resuming"):
        train(None, None, resume=out, epochs=4, step_epochs=3, progress=False)
    with pytest.raises(SRExportError, match="'plateau'; --step-epochs applies to step schedules"):
        train("drcn", 2, data, out_path=tmp_path / "d.safetensors", step_epochs=2, progress=False)
    with pytest.raises(SRExportError, match="step epochs must be at least 1, got 0"):
        train("srcnn", 2, data, out_path=tmp_path / "z.safetensors", step_epochs=0, progress=False)


def test_init_from_starts_at_the_checkpoint_and_records_it(data, tmp_path):
    source = tmp_path / "x3.safetensors"
    train("srcnn", 3, data, out_path=source, epochs=1, steps_per_epoch=2, batch_size=4, progress=False)
    start, _ = load_checkpoint(source)
    out = tmp_path / "x4.safetensors"
    # a learning rate so small that the one step leaves the starting weights as they were
    train("srcnn", 4, data, out_path=out, epochs=1, steps_per_epoch=1, batch_size=4, lr=1e-12,
          init_from=source, progress=False)
    model, record = load_checkpoint(out, scale=4)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, start.state_dict()[k], rtol=0, atol=1e-9)
    init = record.training["init_from"]
    assert init["path"] == str(source.resolve()) and (init["network"], init["scale"]) == ("srcnn", 3)
    assert init["tensors_loaded"] == 6 and init["tensors_reinitialised"] == []
    assert init["weights_sha256"] == weights_sha256(start)
    source_training = load_checkpoint(source)[1].training
    assert init["training"] == {k: source_training[k] for k in ("epochs", "seconds", "device")}
    train(None, None, resume=out, epochs=2, progress=False)  # the record survives a resume
    assert load_checkpoint(out)[1].training["init_from"] == init
    with pytest.raises(SRExportError, match="drop --init-from"):
        train(None, None, resume=out, epochs=3, init_from=source, progress=False)
    assert "init_from" not in init  # the source started from scratch
    # a run started from a fine-tuned checkpoint records that checkpoint's own start too
    again = tmp_path / "x4b.safetensors"
    train("srcnn", 4, data, out_path=again, epochs=1, steps_per_epoch=1, batch_size=4, init_from=out, progress=False)
    chain = load_checkpoint(again)[1].training["init_from"]
    assert chain["path"] == str(out.resolve()) and chain["init_from"] == init
    scratch = train("srcnn", 4, data, out_path=tmp_path / "s.safetensors", epochs=1, steps_per_epoch=1,
                    progress=False)
    assert "init_from" not in scratch.record.training


def test_init_from_across_scales_reinitialises_only_the_scale_shaped_layer(data, tmp_path):
    source = tmp_path / "e3.safetensors"
    train("espcn", 3, data, out_path=source, epochs=1, steps_per_epoch=1, batch_size=4, progress=False)
    r = train("espcn", 2, data, out_path=tmp_path / "e2.safetensors", epochs=1, steps_per_epoch=1, batch_size=4,
              init_from=source, progress=False)
    init = r.record.training["init_from"]
    assert init["tensors_reinitialised"] == ["body.4.bias", "body.4.weight"]  # scale^2 output channels
    assert init["tensors_loaded"] == len(build("espcn", 2).state_dict()) - 2
    with pytest.raises(SRExportError, match="holds network 'espcn', expected 'fsrcnn'"):
        train("fsrcnn", 3, data, out_path=tmp_path / "f.safetensors", init_from=source, progress=False)
    drcn = tmp_path / "d.safetensors"
    train("drcn", 2, data, out_path=drcn, epochs=1, steps_per_epoch=1, batch_size=2,
          hparams={"channels": 4, "recursions": 3}, progress=False)
    with pytest.raises(SRExportError, match="this run trains"):
        train("drcn", 2, data, out_path=tmp_path / "d2.safetensors", epochs=1, steps_per_epoch=1, batch_size=2,
              hparams={"channels": 4, "recursions": 2}, init_from=drcn, progress=False)
    assert not (tmp_path / "f.safetensors").exists() and not (tmp_path / "d2.safetensors").exists()


def test_a_checkpoint_in_the_data_folder_does_not_train_on_its_own_curve(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(3):
        Image.fromarray(texture(np.random.default_rng(i), 48, 48)).save(data / f"t{i}.png")
    out = data / "net.safetensors"
    train("fsrcnn_s", 2, data, out_path=out, epochs=1, steps_per_epoch=2, batch_size=4, progress=False)
    assert curve_path_for(out).is_file()  # a PNG in the training folder now
    r = train(None, None, None, resume=out, epochs=2, progress=False)  # same images, so the resume is accepted
    assert [h["epoch"] for h in r.history] == [1, 2]
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "net.curve.png").write_bytes(curve_path_for(out).read_bytes())
    with pytest.raises(SRExportError, match="no images besides this run's training curve net.curve.png"):
        train("fsrcnn_s", 2, lone, out_path=lone / "net.safetensors", epochs=1, force=True, progress=False)


# ---------------------------------------------------------------- kill and resume

_SCRIPT = """
import torch
torch.set_num_threads(1)
from srexport.train import train
train("fsrcnn_s", 3, {data!r}, out_path={out!r}, epochs=2, steps_per_epoch={steps}, batch_size=8, seed=5,
      progress=False)
"""


def test_sigkill_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    steps = 200
    ref = tmp_path / "ref" / "m.safetensors"
    train("fsrcnn_s", 3, data, out_path=ref, epochs=2, steps_per_epoch=steps, batch_size=8, seed=5, progress=False)

    out = tmp_path / "run" / "m.safetensors"
    script = _SCRIPT.format(data=str(data), out=str(out), steps=steps)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not resume_path_for(out).exists():  # written right after the first epoch's checkpoint
            if proc.poll() is not None:
                pytest.fail(f"training subprocess ended early: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "first epoch did not finish in 60 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert out.is_file()
    killed = load_resume(resume_path_for(out))
    assert killed["epochs_done"] == 1, "the kill came after epoch 2 finished; make the epoch longer"

    r = train(None, None, resume=resume_path_for(out), progress=False)
    assert r.epochs == 2 and r.record.training["resumed_at_epochs"] == [1]
    got, want = load_resume(resume_path_for(out)), load_resume(resume_path_for(ref))
    assert got["epochs_done"] == want["epochs_done"] == 2
    for k, v in want["model"].items():
        assert torch.equal(got["model"][k], v), k
    for k, v in want["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(got["optimizer"]["state"][k][name], t), (k, name)
    assert got["scheduler"] == want["scheduler"]
    assert [h["loss"] for h in got["history"]] == [h["loss"] for h in want["history"]]
    a, b = load_file(str(out)), load_file(str(ref))
    assert all(torch.equal(a[k], b[k]) for k in b)
