"""The files a training run keeps beside its checkpoint: their names, the resume file, and the
training curve.

A resume file holds the latest weights, optimizer and scheduler state, epoch, every RNG state and
the history, without pickle: tensors in safetensors, everything else as JSON in its metadata.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_output
from .checkpoint import METADATA_KEY
from .errors import SRExportError
from .runsettings import scales_label

RESUME_KEY = "srexport_resume"
RESUME_FORMAT = 1


def _encode(obj, tensors: dict, name: str):
    if isinstance(obj, torch.Tensor):
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{name}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{name}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{name}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{name}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {name} in a resume file")


def _decode(obj, tensors: dict):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def rng_state(np_rng: np.random.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np_rng.bit_generator.state,
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_resume(path: Path, state: dict) -> None:
    """Write a resume state: tensors into safetensors, the rest as JSON metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "s")
    meta = {RESUME_KEY: json.dumps(encoded)}
    with atomic_output(path, force=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_resume(path: str | os.PathLike) -> dict:
    """Read a resume file (or the resume file beside a checkpoint)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SRExportError(f"{path}: no such resume file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if RESUME_KEY not in meta:
                if METADATA_KEY in meta:  # a checkpoint: use its run's resume file
                    return load_resume(_resume_file_of(path, meta[METADATA_KEY]))
                raise SRExportError(f"{path}: not an srexport resume file")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        state = _decode(json.loads(meta[RESUME_KEY]), tensors)
    except SRExportError:
        raise
    except Exception as e:
        raise SRExportError(f"{path}: corrupt resume file ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise SRExportError(f"{path}: resume format {state.get('format') if isinstance(state, dict) else '?'} is not supported")
    state["path"] = str(path)
    return state


def _resume_file_of(checkpoint: Path, record_json: str) -> Path:
    """The resume file of the run that wrote `checkpoint`: beside it, or, for a run over several
    scales, the one its record names (beside the first scale's checkpoint)."""
    beside = resume_path_for(checkpoint)
    if beside.is_file():
        return beside
    try:
        training = json.loads(record_json).get("training") or {}
        named, scales = training.get("resume_file"), [int(s) for s in training.get("scales", [])]
    except (ValueError, TypeError, AttributeError):
        named, scales = None, []
    if isinstance(named, str) and named:
        path = checkpoint.with_name(Path(named).name)
        if path.is_file():
            return path
        raise SRExportError(f"{checkpoint}: is a checkpoint of a run over {scales_label(scales)}, whose resume file "
                            f"{path} does not exist")
    raise SRExportError(f"{checkpoint}: is a checkpoint and its resume file {beside} does not exist")


def _stem(out: Path) -> Path:
    return out.with_suffix("") if out.suffix == ".safetensors" else out


def resume_path_for(out: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.resume.safetensors`."""
    out = Path(out)
    if out.name.endswith(".resume.safetensors"):
        return out
    return _stem(out).with_name(_stem(out).name + ".resume.safetensors")


def curve_path_for(out: str | os.PathLike) -> Path:
    """`x.safetensors` -> `x.curve.png`."""
    return _stem(Path(out)).with_name(_stem(Path(out)).name + ".curve.png")


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
