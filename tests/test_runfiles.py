"""srexport.runfiles: the resume file round-trips the training state without pickle; file names."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from srexport.checkpoint import METADATA_KEY
from srexport.errors import SRExportError
from srexport.runfiles import RESUME_FORMAT, curve_path_for, load_resume, resume_path_for, save_resume


def test_resume_state_round_trips_tensors_tuples_and_int_keyed_dicts(tmp_path):
    state = {
        "format": RESUME_FORMAT,
        "model": {"w": torch.arange(6.0).reshape(2, 3)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                      "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "python": (3, (1, 2, 3), None),
        "numbers": [np.int64(7), np.float32(0.5), True, "x"],
    }
    path = tmp_path / "r.resume.safetensors"
    save_resume(path, state)
    got = load_resume(path)
    assert got["path"] == str(path)
    assert torch.equal(got["model"]["w"], state["model"]["w"])
    assert list(got["optimizer"]["state"]) == [0]  # an int key stays an int
    assert torch.equal(got["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    assert got["python"] == (3, (1, 2, 3), None) and got["numbers"] == [7, 0.5, True, "x"]
    with pytest.raises(TypeError, match="cannot store object at s/bad in a resume file"):
        save_resume(tmp_path / "bad.resume.safetensors", {"bad": object()})


def test_load_resume_names_the_file_and_what_is_wrong(tmp_path):
    with pytest.raises(SRExportError, match="no such resume file"):
        load_resume(tmp_path / "none.resume.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(SRExportError, match=f"{plain}: not an srexport resume file"):
        load_resume(plain)
    junk = tmp_path / "junk.resume.safetensors"
    junk.write_bytes(b"\x00" * 20)
    with pytest.raises(SRExportError, match=f"{junk}: corrupt resume file"):
        load_resume(junk)
    old = tmp_path / "old.resume.safetensors"
    save_resume(old, {"format": RESUME_FORMAT + 1})
    with pytest.raises(SRExportError, match=f"resume format {RESUME_FORMAT + 1} is not supported"):
        load_resume(old)


def test_a_checkpoint_without_its_resume_file_says_where_that_file_should_be(tmp_path):
    def checkpoint(name, record):
        save_file({"a": torch.zeros(1)}, str(tmp_path / name), metadata={METADATA_KEY: json.dumps(record)})
        return tmp_path / name

    alone = checkpoint("m_x3.safetensors", {"scale": 3, "training": {}})
    with pytest.raises(SRExportError, match=re.escape(f"{alone}: is a checkpoint and its resume file "
                                                      f"{tmp_path / 'm_x3.resume.safetensors'} does not exist")):
        load_resume(alone)
    # a run over several scales keeps one resume file, which each checkpoint's record names
    third = checkpoint("v_3.safetensors", {"scale": 3, "training": {"scales": [2, 3, 4],
                                                                     "resume_file": "v_2.resume.safetensors"}})
    with pytest.raises(SRExportError, match=re.escape(
            f"{third}: is a checkpoint of a run over x2+3+4, whose resume file "
            f"{tmp_path / 'v_2.resume.safetensors'} does not exist")):
        load_resume(third)
    save_resume(tmp_path / "v_2.resume.safetensors", {"format": RESUME_FORMAT, "epochs_done": 7})
    assert load_resume(third)["epochs_done"] == 7


def test_run_file_names_sit_beside_the_checkpoint():
    assert resume_path_for("runs/m.safetensors") == Path("runs/m.resume.safetensors")
    assert resume_path_for("runs/m.resume.safetensors") == Path("runs/m.resume.safetensors")
    assert curve_path_for("runs/m.safetensors") == Path("runs/m.curve.png")
