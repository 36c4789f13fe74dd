"""Checkpoints: a `.safetensors` file of weights whose header metadata carries a `ModelRecord`.

Loading never unpickles: safetensors holds raw tensors, and the network is rebuilt through the
registry from the record, so a checkpoint can only ever become one of srexport's own networks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .archs import build, get_spec
from .atomic import atomic_output
from .errors import SRExportError

SCHEMA_VERSION = 1
METADATA_KEY = "srexport"  # safetensors header key and ONNX metadata_props key of the record JSON
COLOUR_SPACE = "Y of YCbCr BT.601 limited range (MATLAB rgb2ycbcr), Y/255"


@dataclass(frozen=True)
class ModelRecord:
    """What a network artifact is. Travels unchanged from checkpoint to ONNX to engine sidecar."""

    network: str
    scale: int
    hparams: dict
    param_count: int
    upsampling: str
    colour_space: str = COLOUR_SPACE
    value_range: tuple[float, float] = (0.0, 1.0)
    layout: str = "NCHW, C=1: input LR (N,1,H,W), output (N,1,scale*H,scale*W)"
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    srexport_version: str = __version__

    @classmethod
    def for_model(cls, model: nn.Module, *, training: dict | None = None, metrics: dict | None = None) -> ModelRecord:
        name = model.network_name
        return cls(
            network=name,
            scale=model.scale,
            hparams=dict(model.hparams),
            param_count=sum(p.numel() for p in model.parameters()),
            upsampling=get_spec(name).upsampling,
            training=training or {},
            metrics=metrics or {},
        )

    def replace(self, **changes) -> ModelRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["value_range"] = list(self.value_range)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelRecord:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SRExportError(f"{source}: metadata record is not valid JSON ({e.msg})") from None
        if not isinstance(d, dict):
            raise SRExportError(f"{source}: metadata record is not a JSON object")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise SRExportError(
                f"{source}: record schema version {d.get('schema_version')!r} is not supported "
                f"(this srexport reads {SCHEMA_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING} - d.keys()
        if missing:
            raise SRExportError(f"{source}: metadata record lacks {', '.join(sorted(missing))}")
        d = {k: v for k, v in d.items() if k in names}
        d["value_range"] = tuple(d.get("value_range", (0.0, 1.0)))
        return cls(**d)

    def build(self, source: str = "record") -> nn.Module:
        """Rebuild the (untrained) network this record describes."""
        try:
            return build(self.network, self.scale, **self.hparams)
        except SRExportError as e:
            raise SRExportError(f"{source}: {e}") from None


def weights_sha256(model: nn.Module) -> str:
    """Hash of the weights (names, shapes, dtypes, bytes): which weights an artifact came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, record: ModelRecord | None = None,
                    *, force: bool = False) -> Path:
    """Write `model`'s weights and its record atomically to a `.safetensors` file."""
    from safetensors.torch import save_file

    record = record or ModelRecord.for_model(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path, force) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: record.to_json()})
    return Path(path)


def read_record(path: str | os.PathLike) -> ModelRecord:
    """Read only the metadata record of a checkpoint (no tensors are loaded)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for every kind of corruption
        raise SRExportError(f"{path}: not a valid safetensors file ({_first_line(e)})") from None
    if METADATA_KEY not in meta:
        raise SRExportError(f"{path}: safetensors file has no srexport metadata record")
    return ModelRecord.from_json(meta[METADATA_KEY], str(path))


def load_checkpoint(path: str | os.PathLike, *, network: str | None = None,
                    scale: int | None = None) -> tuple[nn.Module, ModelRecord]:
    """Rebuild the network from a checkpoint, checking it is the expected network and scale."""
    from safetensors import safe_open

    path = _existing(path)
    record = read_record(path)
    if network is not None and record.network != network:
        raise SRExportError(f"{path}: holds network {record.network!r}, expected {network!r}")
    if scale is not None and record.scale != scale:
        raise SRExportError(f"{path}: holds a x{record.scale} network, expected x{scale}")
    model = record.build(str(path))
    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if keys != set(expected):
                extra, lacking = sorted(keys - set(expected)), sorted(set(expected) - keys)
                raise SRExportError(
                    f"{path}: tensors do not match {record.network} {record.hparams}"
                    + (f"; unexpected: {', '.join(extra[:3])}" if extra else "")
                    + (f"; missing: {', '.join(lacking[:3])}" if lacking else "")
                )
            state = {k: f.get_tensor(k) for k in sorted(keys)}
    except SRExportError:
        raise
    except Exception as e:
        raise SRExportError(f"{path}: corrupt or truncated tensor data ({_first_line(e)})") from None
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise SRExportError(
                f"{path}: tensor {k} has shape {tuple(v.shape)}, {record.network} expects {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state)
    if sum(p.numel() for p in model.parameters()) != record.param_count:
        raise SRExportError(f"{path}: record says {record.param_count} parameters, the network has a different count")
    return model.eval(), record


def shipped_checkpoint(network: str, scale: int) -> Path | None:
    """The checkpoint that ships for `network` at `scale`, from an installed wheel or a checkout."""
    name = f"{network}_x{scale}.safetensors"
    for folder in _shipped_folders():
        if (folder / name).is_file():
            return folder / name
    return None


def _shipped_folders() -> list[Path]:
    folders = []
    env = os.environ.get("SREXPORT_MODELS")
    if env:
        folders.append(Path(env))
    # `models/` is packaged as srexport._shipped; an editable install maps it to the checkout.
    spec = importlib.util.find_spec("srexport._shipped")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    folders.append(Path(__file__).resolve().parents[1] / "models")
    return folders


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise SRExportError(f"{path}: no such file")
    return path


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def record_metrics(path: str | os.PathLike, key: str, metrics: dict) -> ModelRecord:
    """Store `metrics` under `key` (e.g. "Set5") in a checkpoint's record, rewriting it atomically."""
    model, record = load_checkpoint(path)
    record = record.replace(metrics={**record.metrics, key: metrics})
    save_checkpoint(model, path, record, force=True)
    return record


def resolve_network(network: str | None, scale: int | None, *, checkpoint: str | os.PathLike | None = None,
                    random_weights: bool = False, seed: int = 0) -> tuple[nn.Module, ModelRecord]:
    """The network a command works on: an explicit checkpoint, random weights, or the shipped one."""
    if checkpoint is not None:
        if random_weights:
            raise SRExportError("--checkpoint and --random-weights exclude each other")
        return load_checkpoint(checkpoint, network=network, scale=scale)
    if network is None:
        raise SRExportError("name a network or pass --checkpoint")
    get_spec(network)  # unknown names fail before anything else
    if scale is None:
        raise SRExportError(f"{network}: pass --scale (2, 3 or 4)")
    if random_weights:
        torch.manual_seed(seed)
        model = build(network, scale).eval()
        return model, ModelRecord.for_model(model, training={"kind": "random-init", "seed": seed})
    shipped = shipped_checkpoint(network, scale)
    if shipped is None:
        raise SRExportError(
            f"no shipped checkpoint for {network} x{scale}; pass --checkpoint PATH or --random-weights"
        )
    return load_checkpoint(shipped, network=network, scale=scale)
