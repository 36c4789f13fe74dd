"""What the CLI lists and shows: the network table, artifact records, and which networks a
command covers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from torch import nn

from .archs import SCALES, build, check_scale, get_spec, list_networks
from .checkpoint import ModelRecord, load_checkpoint, read_record, resolve_network, shipped_checkpoint
from .complexity import macs_for_output
from .errors import SRExportError


def network_rows() -> list[dict]:
    from .published import published

    rows = []
    for name in list_networks():
        spec = get_spec(name)
        models = {s: build(name, s) for s in SCALES}
        rows.append({
            "network": name,
            "scales": list(SCALES),
            "params": {s: sum(p.numel() for p in m.parameters()) for s, m in models.items()},
            "gmacs_1280x720": {s: round(macs_for_output(m) / 1e9, 2) for s, m in models.items()},
            "checkpoints": {s: str(shipped_checkpoint(name, s)) for s in SCALES if shipped_checkpoint(name, s)},
            "published_set5_psnr": {s: (published(name, s, "Set5") or {}).get("psnr") for s in SCALES},
            "measured_set5_psnr": {s: read_record(p).metrics.get("Set5", {}).get("psnr")
                                   for s in SCALES if (p := shipped_checkpoint(name, s))},
            "upsampling": spec.upsampling,
            "paper": spec.paper,
        })
    return rows


def network_table(rows: list[dict]) -> str:
    def per_scale(d, fmt="{}"):
        return "/".join("-" if d.get(s) is None else fmt.format(d[s]) for s in SCALES)

    lines = [f"{'network':<10} {'params x2/x3/x4':<30} {'GMACs 1280x720 x2/x3/x4':<30} "
             f"{'shipped':<10} {'Set5 PSNR shipped':<20} {'Set5 PSNR paper':<20}"]
    for r in rows:
        shipped = "/".join(f"x{s}" for s in r["checkpoints"]) or "none"
        lines.append(f"{r['network']:<10} {per_scale(r['params'], '{:,}'):<30} "
                     f"{per_scale(r['gmacs_1280x720'], '{:g}'):<30} {shipped:<10} "
                     f"{per_scale(r['measured_set5_psnr'], '{:.2f}'):<20} "
                     f"{per_scale(r['published_set5_psnr'], '{:.2f}'):<20}")
    return "\n".join(lines)


def artifact_info(path: str | os.PathLike) -> dict:
    """The record and facts of a checkpoint, ONNX file or engine (by its JSON sidecar)."""
    path = Path(path)
    if not path.exists():
        raise SRExportError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _with_contract({"kind": "checkpoint", "path": str(path), **read_record(path).to_dict()})
    if path.suffix == ".onnx":
        from .onnx_export import record_from_onnx

        record, props = record_from_onnx(path)
        extra = {k: v for k, v in props.items() if k in ("weights_sha256", "precision", "io_dtype",
                                                          "kept_fp32_ops", "activation_peak")}
        return _with_contract({"kind": "onnx", "path": str(path), **record.to_dict(), **extra})
    if path.suffix == ".engine":
        from .engine import read_sidecar, target_label

        sidecar = read_sidecar(path)
        if sidecar is None:
            raise SRExportError(f"{path}: engine has no readable JSON sidecar ({path}.json)")
        return _with_contract({"kind": "engine", "path": str(path), "built_for": target_label(sidecar),
                               "fp16_share": _engine_fp16_share(sidecar), **sidecar})
    raise SRExportError(f"{path}: unknown artifact type (expected .safetensors, .onnx or .engine)")


def _with_contract(data: dict) -> dict:
    from .contract import io_contract

    return {**data, "io_contract": io_contract(data)}


def _engine_fp16_share(sidecar: dict) -> dict:
    """The share of compute layers in FP16: as the parsed network says (any machine) and as the
    engine inspector says (once the engine has been loaded on a GPU by verify)."""
    return {source: (sidecar.get(key) or {}).get("fp16_share")
            for source, key in (("parsed_network", "network_precisions"), ("engine_inspector", "layer_precisions"))}


def info_text(data: dict) -> str:
    """`srexport info` for people: one line per field, with the training history (thousands of
    epochs) summarised and each evaluated set on one line; `--json` keeps everything."""
    lines = []
    for key, value in data.items():
        if key == "training" and isinstance(value, dict) and value:
            lines.append("training:")
            lines += [f"  {line}" for line in _training_lines(value)]
        elif key == "io_contract" and isinstance(value, dict):
            lines.append("io_contract:")
            lines += [f"  {k}: {_compact(v)}" for k, v in value.items() if k != "checks"]
            lines += [f"  check before running: {check}" for check in value.get("checks", [])]
        elif key == "metrics" and isinstance(value, dict) and value:
            lines.append("metrics:")
            lines += [f"  {line}" for line in _metrics_lines(value)]
        else:
            lines.append(f"{key}: {_compact(value)}")
    return "\n".join(lines)


def _compact(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _training_lines(training: dict) -> list[str]:
    lines = []
    for key, value in training.items():
        if key == "history" and isinstance(value, list) and value:
            vals = [(h["epoch"], h["val_psnr"]) for h in value if h.get("val_psnr") is not None]
            text = f"{len(value)} epochs"
            if vals:
                best = max(vals, key=lambda v: v[1])
                mean = " (mean over the scales)" if "val_psnr_by_scale" in value[0] else ""
                text += (f", validation PSNR{mean} {vals[0][1]:.2f} dB at epoch {vals[0][0]} -> {vals[-1][1]:.2f} "
                         f"at epoch {vals[-1][0]} (best {best[1]:.2f} at epoch {best[0]})")
            lines.append(f"history: {text}; --json prints every epoch")
        elif key == "recipe" and isinstance(value, dict):
            lines.append(f"recipe: {_compact({k: v for k, v in value.items() if k != 'why'})}")
            if value.get("why"):
                lines.append(f"recipe why: {value['why']}")
        else:
            lines.append(f"{key}: {_compact(value)}")
    return lines


def _metrics_lines(metrics: dict) -> list[str]:
    lines = []
    for key, value in metrics.items():
        if isinstance(value, dict) and "psnr" in value:
            text = f"{key}: PSNR {value['psnr']:.2f} dB"
            if value.get("ssim") is not None:
                text += f", SSIM {value['ssim']:.4f}"
            extra = [f"{label} {value[k]:.2f}" for k, label in (("published_psnr", "paper"), ("bicubic_psnr", "bicubic"))
                     if value.get(k) is not None]
            lines.append(text + (f" ({', '.join(extra)})" if extra else ""))
        else:
            lines.append(f"{key}: {_compact(value)}")
    return lines


def chosen_networks(name: str, scale: int | None, checkpoint, random_weights: bool
                    ) -> Iterator[tuple[nn.Module, ModelRecord]]:
    """The (model, record) pairs a command covers: one scale, or every scale that has weights."""
    if checkpoint is not None or scale is not None:
        yield resolve_network(name, scale, checkpoint=checkpoint, random_weights=random_weights)
        return
    get_spec(name)
    scales = SCALES if random_weights else [s for s in SCALES if shipped_checkpoint(name, s)]
    if not scales:
        raise SRExportError(f"no shipped checkpoints for {name}; pass --scale with --checkpoint PATH or --random-weights")
    for s in scales:
        yield resolve_network(name, s, random_weights=random_weights)


def model_for_record(record: ModelRecord, checkpoint, source: str) -> nn.Module:
    """The PyTorch network an artifact was made from: --checkpoint, the seed of random weights,
    or the shipped checkpoint."""
    if checkpoint is not None:
        return load_checkpoint(checkpoint, network=record.network, scale=record.scale)[0]
    if record.training.get("kind") == "random-init":
        return resolve_network(record.network, record.scale, random_weights=True,
                               seed=record.training.get("seed", 0))[0]
    check_scale(record.scale)
    shipped = shipped_checkpoint(record.network, record.scale)
    if shipped is None:
        raise SRExportError(f"{source}: made from a checkpoint that does not ship; pass --checkpoint PATH")
    return load_checkpoint(shipped, network=record.network, scale=record.scale)[0]
