"""srexport.runsettings: a new run's settings from its recipe and overrides, a resumed run's from its
resume file, and the checks both get before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from srexport.errors import SRExportError
from srexport.recipes import recipe_for
from srexport.runsettings import as_folders, checkpoint_paths, folders_label, new_run, resumed_run, scales_label


def test_a_new_run_takes_its_recipe_with_the_given_overrides():
    run = new_run("espcn", (3,), "T91", epochs=7, batch_size=8, lr=2e-3, step_epochs=5, context=2)
    assert run.recipe == recipe_for("espcn").replace(epochs=7, batch_size=8, step_epochs=5, context=2)
    assert (run.base_lr, run.seed, run.precision, run.data_dir) == (2e-3, 0, "fp32", Path("T91"))
    assert run.out == Path("espcn_x3.safetensors") and run.label == "espcn x3"
    assert new_run("vdsr", (2, 3, 4), "T91").out == Path("vdsr_x{scale}.safetensors")


@pytest.mark.parametrize("kw, message", [
    (dict(network=None), "name the network to train"),
    (dict(scales=None), "espcn: pass --scale"),
    (dict(data_dir=None), "pass --data FOLDER"),
    (dict(scales=(2, 3)), "espcn: its weights depend on the scale"),
    (dict(network="vdsr", scales=(2, 2)), r"scale given twice in x2\+2"),
    (dict(scales=(5,)), "scale must be one of 2, 3, 4, got 5"),
    (dict(precision="fp16"), "unknown precision 'fp16'"),
    (dict(epochs=0), "epochs must be at least 1, got 0"),
    (dict(batch_size=0), "batch size must be at least 1"),
    (dict(lr=0.0), "learning rate must be positive"),
    (dict(steps_per_epoch=0), "steps per epoch must be at least 1"),
    (dict(network="drcn", step_epochs=3), "drcn: its recipe's schedule is 'plateau'; --step-epochs applies"),
])
def test_a_new_run_refuses_settings_it_cannot_train(kw, message):
    args = dict(network="espcn", scales=(3,), data_dir="T91") | kw
    with pytest.raises(SRExportError, match=message):
        new_run(args.pop("network"), args.pop("scales"), args.pop("data_dir"), **args)


def _state(tmp_path) -> dict:
    """What load_resume returns for a run of ESPCN x3 (the fields resumed_run reads)."""
    return {"path": str(tmp_path / "e.resume.safetensors"), "network": "espcn", "scales": [3],
            "recipe": recipe_for("espcn").to_dict(), "base_lr": 1e-3, "seed": 4, "precision": "bf16",
            "hparams": {}, "data_dir": "/data/T91", "val_dir": None, "out": "/elsewhere/e.safetensors",
            "epochs_total": 10, "steps_per_epoch": 50}


def test_a_resumed_run_keeps_its_own_settings_and_sits_beside_its_resume_file(tmp_path):
    run = resumed_run(_state(tmp_path), None, None, None, epochs=20)
    assert (run.network, run.scales, run.seed, run.precision, run.steps_per_epoch) == ("espcn", (3,), 4, "bf16", 50)
    assert run.recipe.epochs == 20 and run.data_dir == Path("/data/T91")
    assert run.out == tmp_path / "e.safetensors"  # the run's folder may have moved
    assert resumed_run(_state(tmp_path), "espcn", (3,), "/moved/T91", seed=4).data_dir == Path("/moved/T91")


@pytest.mark.parametrize("kw, message", [
    (dict(network="fsrcnn"), "resume file is for network 'espcn', not 'fsrcnn'"),
    (dict(scales=(2,)), "resume file is for x3, not x2"),
    (dict(seed=5), r"cannot change the seed when resuming \(4 -> 5\)"),
    (dict(precision="fp32"), r"cannot change the precision when resuming \(bf16 -> fp32\)"),
    (dict(steps_per_epoch=60), r"cannot change the steps per epoch when resuming \(50 -> 60\)"),
    (dict(hparams={"n1": 32}), "cannot change hyperparameters when resuming"),
    (dict(init_from="x.safetensors"), "drop --init-from"),
    (dict(out_path="other.safetensors"), "the resumed run writes .*e.safetensors; omit -o"),
])
def test_a_resumed_run_refuses_to_change_what_it_was_trained_with(tmp_path, kw, message):
    args = dict(network=None, scales=None, data_dir=None) | kw
    with pytest.raises(SRExportError, match=message):
        resumed_run(_state(tmp_path), args.pop("network"), args.pop("scales"), args.pop("data_dir"), **args)


def test_several_training_folders_are_kept_in_order_and_a_resumed_run_keeps_their_number(tmp_path):
    run = new_run("vdsr", (2, 3, 4), ["T91", Path("BSD200")])
    assert run.data_dirs == (Path("T91"), Path("BSD200")) and run.data_dir == Path("T91")
    assert as_folders(()) is None and as_folders("T91") == (Path("T91"),)
    assert folders_label(run.data_dirs) == "T91+BSD200"
    with pytest.raises(SRExportError, match="T91, BSD200, T91: a training folder is given twice"):
        new_run("vdsr", (2,), ["T91", "BSD200", "T91"])
    state = _state(tmp_path) | {"data_dirs": ["/data/T91", "/data/BSD200"]}
    assert resumed_run(state, None, None, None).data_dirs == (Path("/data/T91"), Path("/data/BSD200"))
    moved = resumed_run(state, None, None, ("/moved/T91", "/moved/BSD200")).data_dirs  # the images are compared later
    assert moved == (Path("/moved/T91"), Path("/moved/BSD200"))
    with pytest.raises(SRExportError, match=r"e.resume.safetensors: the run trained on T91\+BSD200 \(/data/T91, "
                                            r"/data/BSD200\), not on T91 \(T91\)"):
        resumed_run(state, None, None, ["T91"])
    with pytest.raises(SRExportError, match=r"the run trained on T91 \(/data/T91\), not on T91\+BSD200"):
        resumed_run(_state(tmp_path), None, None, ["T91", "BSD200"])  # a resume file from before several folders


def test_checkpoint_paths_put_the_scale_in_the_file_name():
    assert checkpoint_paths("runs/v_x{scale}.safetensors", (2, 4)) == {
        2: Path("runs/v_x2.safetensors"), 4: Path("runs/v_x4.safetensors")}
    assert checkpoint_paths("runs/e.safetensors", (3,)) == {3: Path("runs/e.safetensors")}
    with pytest.raises(SRExportError, match=r"a run over x2\+4 writes a checkpoint per scale"):
        checkpoint_paths("runs/v.safetensors", (2, 4))
    with pytest.raises(SRExportError, match=r"put \{scale\} in the file name, not in a folder name"):
        checkpoint_paths("runs/x{scale}/v.safetensors", (2, 4))
    assert scales_label((2,)) == "x2" and scales_label((2, 3, 4)) == "x2+3+4"
