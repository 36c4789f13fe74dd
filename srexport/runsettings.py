"""What a training run trains and how: a new run's settings come from its network's recipe and the
arguments that override it; a resumed run's come from its resume file, and the arguments given
again must agree with it. Either way they are checked here, before any data is read."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .archs import check_scale, get_spec, list_networks
from .checkpoint import load_checkpoint
from .errors import SRExportError
from .recipes import Recipe, recipe_for

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RunSettings:
    network: str
    scales: tuple[int, ...]
    recipe: Recipe  # with the run's batch size, epochs, learning-rate steps and context
    base_lr: float
    hparams: dict
    seed: int
    precision: str
    data_dirs: tuple[Path, ...]  # the training folders, in the order given: one patch pipeline over all
    val_dir: Path | None
    out: Path  # the checkpoint path; {scale} in it for a run over several scales
    steps_per_epoch: int | None  # None: one pass over the patches
    init_source: tuple | None = None  # (model, record) of --init-from, for a new run

    @property
    def label(self) -> str:
        return f"{self.network} {scales_label(self.scales)}"

    @property
    def data_dir(self) -> Path:
        """The first training folder (the only one for a run on one folder)."""
        return self.data_dirs[0]


def scales_label(scales) -> str:
    """(2,) -> 'x2'; (2, 3, 4) -> 'x2+3+4'."""
    return "x" + "+".join(str(s) for s in scales)


def as_folders(data) -> tuple[Path, ...] | None:
    """One folder or several (repeated --data) as a tuple of Paths; None or () for none."""
    if data is None:
        return None
    folders = tuple(Path(d) for d in data) if isinstance(data, (list, tuple)) else (Path(data),)
    return folders or None


def folders_label(folders) -> str:
    """(T91,) -> 'T91'; (T91, BSD200) -> 'T91+BSD200'."""
    return "+".join(Path(f).name for f in folders)


def as_scales(scale) -> tuple[int, ...] | None:
    if scale is None:
        return None
    return tuple(int(s) for s in scale) if isinstance(scale, (list, tuple)) else (int(scale),)


def new_run(network: str | None, scales: tuple[int, ...] | None, data_dir, *, out_path=None, val_dir=None,
            epochs=None, batch_size=None, lr=None, seed=None, steps_per_epoch=None, hparams=None,
            precision=None, init_from=None, step_epochs=None, context=None) -> RunSettings:
    if network is None:
        raise SRExportError("name the network to train")
    if not scales:
        raise SRExportError(f"{network}: pass --scale (2, 3 or 4)")
    data_dirs = as_folders(data_dir)
    if data_dirs is None:
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
    if epochs is not None:
        recipe = recipe.replace(epochs=int(epochs))
    out = Path(out_path if out_path is not None
               else f"{network}_x{scales[0] if len(scales) == 1 else '{scale}'}.safetensors")
    return _checked(RunSettings(
        network, scales, recipe, float(lr) if lr is not None else recipe.lr, dict(hparams or {}),
        0 if seed is None else int(seed), precision or "fp32", data_dirs,
        Path(val_dir) if val_dir is not None else None, out, steps_per_epoch,
        # loaded before the data so that a wrong file fails at once
        load_checkpoint(init_from, network=network) if init_from is not None else None))


def resumed_run(state: dict, network: str | None, scales: tuple[int, ...] | None, data_dir, *, out_path=None,
                val_dir=None, epochs=None, batch_size=None, lr=None, seed=None, steps_per_epoch=None,
                hparams=None, precision=None, init_from=None, step_epochs=None, context=None) -> RunSettings:
    where = state["path"]
    if network is not None and network != state["network"]:
        raise SRExportError(f"{where}: resume file is for network {state['network']!r}, not {network!r}")
    kept_scales = tuple(state["scales"] if "scales" in state else [state["scale"]])  # older files: "scale"
    if scales is not None and scales != kept_scales:
        raise SRExportError(f"{where}: resume file is for {scales_label(kept_scales)}, not {scales_label(scales)}")
    recipe = Recipe.from_dict(state["recipe"])
    kept_precision = state.get("precision", "fp32")
    for name, given, kept in (("batch size", batch_size, recipe.batch_size), ("learning rate", lr, state["base_lr"]),
                              ("seed", seed, state["seed"]), ("precision", precision, kept_precision),
                              ("step epochs", step_epochs, recipe.step_epochs), ("context", context, recipe.context),
                              ("steps per epoch", steps_per_epoch, state["steps_per_epoch"])):
        if given is not None and given != kept:
            raise SRExportError(f"{where}: cannot change the {name} when resuming ({kept} -> {given})")
    if hparams and dict(hparams) != state["hparams"]:
        raise SRExportError(f"{where}: cannot change hyperparameters when resuming")
    if init_from is not None:
        raise SRExportError(f"{where}: a resumed run continues from its own weights; drop --init-from")
    # the outputs sit beside the resume file, so a run's folder may be moved (to another machine)
    out = Path(where).parent / Path(state["out"]).name
    if out_path is not None and Path(out_path).resolve() != out.resolve():
        raise SRExportError(f"{where}: the resumed run writes {out}; omit -o or pass that path")
    val_dir = val_dir if val_dir is not None else state["val_dir"]
    kept_dirs = tuple(Path(d) for d in state.get("data_dirs") or [state["data_dir"]])  # older files: one folder
    data_dirs = as_folders(data_dir) or kept_dirs
    if len(data_dirs) != len(kept_dirs):  # the images themselves are compared once they are listed (train.py)
        raise SRExportError(f"{where}: the run trained on {folders_label(kept_dirs)} "
                            f"({', '.join(map(str, kept_dirs))}), not on {folders_label(data_dirs)} ({', '.join(map(str, data_dirs))})")
    return _checked(RunSettings(
        state["network"], kept_scales, recipe.replace(epochs=int(epochs) if epochs is not None else state["epochs_total"]),
        state["base_lr"], state["hparams"], state["seed"], kept_precision,
        data_dirs, Path(val_dir) if val_dir is not None else None,
        out, state["steps_per_epoch"]))


def _checked(run: RunSettings) -> RunSettings:
    network, recipe = run.network, run.recipe
    scales = tuple(check_scale(s) for s in run.scales)
    if len(set(scales)) != len(scales):
        raise SRExportError(f"{network}: scale given twice in {scales_label(scales)}")
    if len(scales) > 1 and not get_spec(network).scale_free_weights:
        raise SRExportError(f"{network}: its weights depend on the scale, so a run trains one scale "
                            f"(several at once: {', '.join(n for n in list_networks() if get_spec(n).scale_free_weights)})")
    if len({d.resolve() for d in run.data_dirs}) != len(run.data_dirs):
        raise SRExportError(f"{', '.join(map(str, run.data_dirs))}: a training folder is given twice")
    if run.precision not in PRECISIONS:
        raise SRExportError(f"unknown precision {run.precision!r} (choose from {', '.join(PRECISIONS)})")
    if recipe.epochs < 1:
        raise SRExportError(f"epochs must be at least 1, got {recipe.epochs}")
    if recipe.batch_size < 1:
        raise SRExportError(f"batch size must be at least 1, got {recipe.batch_size}")
    if recipe.schedule == "step" and recipe.step_epochs < 1:
        raise SRExportError(f"step epochs must be at least 1, got {recipe.step_epochs}")
    if not run.base_lr > 0:
        raise SRExportError(f"learning rate must be positive, got {run.base_lr}")
    if run.steps_per_epoch is not None and run.steps_per_epoch < 1:
        raise SRExportError(f"steps per epoch must be at least 1, got {run.steps_per_epoch}")
    return replace(run, scales=scales)


def checkpoint_paths(out: str | os.PathLike, scales: tuple[int, ...]) -> dict[int, Path]:
    """The checkpoint written for each scale: `{scale}` in `out`'s file name is replaced by the scale.
    A run over several scales needs it (`vdsr_x{scale}.safetensors`); its checkpoints sit in one
    folder, beside the run's resume file, so that the run folder can be moved and resumed."""
    out = Path(out)
    if "{scale}" in str(out.parent):
        raise SRExportError(f"{out}: put {{scale}} in the file name, not in a folder name (a run's checkpoints "
                            "sit together, beside its resume file)")
    if "{scale}" not in out.name and len(scales) > 1:
        raise SRExportError(f"{out}: a run over {scales_label(scales)} writes a checkpoint per scale; put "
                            "{scale} in the path, e.g. vdsr_x{scale}.safetensors")
    return {s: out.with_name(out.name.replace("{scale}", str(s))) for s in scales}
