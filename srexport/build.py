"""`build_artifacts`: the whole chain for one network and scale, each step verified before the next.

checkpoint -> FP32 ONNX (vs PyTorch, max abs <= 1e-4) -> FP16 ONNX (FP16-rounded tensors, >= 50 dB)
-> engine (TensorRT 10/11 or TensorRT-RTX: parsed layers FP16, then vs PyTorch on the GPU and the
engine's FP16 layer share where a GPU can run it). An existing artifact made from the same weights
and settings and verified is reused; any other existing file needs `force`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
from torch import nn

from .checkpoint import ModelRecord, weights_sha256
from .errors import MissingBackend, SRExportError, VerificationFailed
from .fp16 import KEEP_FP32, activation_peak, fp16_from_onnx, verify_fp16
from .onnx_export import (DEFAULT_OPSET, check_onnx, onnx_from_model, save_verified, verification_path,
                          verify_onnx)
from .verify import DEFAULT_SIZES, real_inputs

# Real LR crops for the FP16 check: small, odd and a batch, plus one larger frame.
FP16_SIZES = (*DEFAULT_SIZES, (1, 96, 128))


@dataclass
class Stage:
    name: str
    artifact: str = ""
    status: str = "pending"  # done | reused | built (not run) | failed | missing | skipped
    figure: str = ""
    seconds: float = 0.0


@dataclass
class BuildReport:
    network: str
    scale: int
    stages: list[Stage] = field(default_factory=list)
    missing: str = ""  # what is missing to finish (TensorRT, a GPU), and how to get it
    not_run: str = ""  # why an engine that was built could not be run and verified here

    def to_dict(self) -> dict:
        return {"network": self.network, "scale": self.scale, "missing": self.missing or None,
                "not_run": self.not_run or None, "stages": [vars(s) for s in self.stages]}

    def table(self) -> str:
        rows = [f"{'stage':<14} {'status':<8} {'figure':<34} artifact"]
        rows += [f"{s.name:<14} {s.status:<8} {s.figure:<34} {s.artifact}" for s in self.stages]
        return "\n".join(rows)


def artifact_paths(out_dir: str | Path, network: str, scale: int, io: str = "fp32") -> dict[str, Path]:
    base = Path(out_dir) / f"{network}_x{scale}"
    fp16 = f"{base}.fp16" if io == "fp32" else f"{base}.fp16-io16"
    return {"onnx": Path(f"{base}.onnx"), "fp16": Path(f"{fp16}.onnx"),
            "engine32": Path(f"{base}.engine"), "engine16": Path(f"{fp16}.engine")}


def build_artifacts(model: nn.Module, record: ModelRecord, *, fp16: bool = True, io: str = "fp32",
                    engine_options=None, engine_settings: dict | None = None, onnx_only: bool = False,
                    out_dir: str | Path = "engines", opset: int = DEFAULT_OPSET, force: bool = False,
                    progress: Callable[[Stage], None] = lambda stage: None) -> BuildReport:
    """Run the chain; report `missing` at the engine step (after writing the ONNX files) when no
    engine flavour is installed or TensorRT has no GPU, and `not_run` when a TensorRT-RTX engine was
    built but no GPU here can run it; raise VerificationFailed when an artifact does not match.
    `engine_settings` go to `engine.engine_from_onnx` (flavour, compute_capabilities,
    memory_budget, shapes, settings)."""
    paths = artifact_paths(out_dir, record.network, record.scale, io)
    report = BuildReport(record.network, record.scale)
    source = weights_sha256(model)

    def run(stage: Stage, fn):
        report.stages.append(stage)
        start = time.perf_counter()
        try:
            fn(stage)
        except MissingBackend:
            stage.status, stage.figure = "missing", "TensorRT or CUDA GPU missing"
            raise
        except Exception:
            stage.status = "failed"
            raise
        finally:
            stage.seconds = round(time.perf_counter() - start, 2)
            progress(stage)

    def reuse(stage: Stage, path: Path) -> bool:
        """Reuse `path` if made from these weights and verified; else make sure it may be written."""
        stage.artifact = str(path)
        if not force and _reusable(path, source):
            stage.status, stage.figure = "reused", _figure(path)
            return True
        _check_free(path, force)
        return False

    def fp32_onnx(stage: Stage):
        if reuse(stage, paths["onnx"]):
            return
        proto = onnx_from_model(model, record, opset=opset)
        check_onnx(proto, stage.artifact)
        result = verify_onnx(proto, model)
        save_verified(proto, result, paths["onnx"], force=force)
        stage.status, stage.figure = "done", f"max abs {result.worst_max_abs:.2g}"

    def fp16_onnx(stage: Stage):
        if reuse(stage, paths["fp16"]):
            return
        kept, why = KEEP_FP32.get(record.network, ((), ""))
        proto16 = fp16_from_onnx(onnx.load(str(paths["onnx"])), io=io, keep_fp32_ops=kept)
        inputs = real_inputs(FP16_SIZES)
        peak = activation_peak(model, inputs)
        extra = {"precision": "fp16", "io_dtype": io, "kept_fp32_ops": json.dumps(list(kept)),
                 "kept_fp32_why": why, "activation_peak": json.dumps(peak)}
        for k, v in extra.items():
            proto16.metadata_props.add(key=k, value=v)
        check_onnx(proto16, stage.artifact)
        result = verify_fp16(proto16, model, inputs=inputs)
        result.note += f"; peak |activation| {peak['max_abs_activation']:.3g} ({peak['layer']}), " \
                       f"FP16 headroom x{peak['fp16_headroom']:.0f}"
        save_verified(proto16, result, paths["fp16"], force=force)
        stage.status, stage.figure = "done", f"PSNR {result.worst_psnr_db:.1f} dB, peak {peak['max_abs_activation']:.2f}"

    def engine(stage: Stage):
        from .engine import engine_from_onnx, read_sidecar, target_label, verify_engine

        onnx_path = paths["fp16"] if fp16 else paths["onnx"]
        engine_path = paths["engine16"] if fp16 else paths["engine32"]
        stage.artifact = str(engine_path)
        built = engine_from_onnx(onnx_path, engine_path, engine_options, force=force, **(engine_settings or {}))
        stage.status = "reused" if built.reused else "done"
        layers = built.sidecar["network_precisions"]
        parsed = f"parsed: {layers['compute_layers']} conv layers {'FP16' if fp16 else 'FP32'}"
        try:
            result = verify_engine(engine_path, model)
        except MissingBackend as e:  # TensorRT-RTX builds without a GPU; running needs an RTX-class one
            stage.status = "reused" if built.reused else "built"
            stage.figure = f"{parsed}; not run, for {target_label(built.sidecar)}"
            report.not_run = str(e)
            return
        share = ((read_sidecar(engine_path) or {}).get("layer_precisions") or {}).get("fp16_share")  # as verified
        stage.figure = (f"PSNR {result.worst_psnr_db:.1f} dB" if fp16 else f"max abs {result.worst_max_abs:.2g}") + \
            (f", FP16 layers {share:.0%}" if share is not None else "")
        if not result:
            raise VerificationFailed(f"{engine_path}: engine verification failed:\n{result}")

    run(Stage("onnx-fp32"), fp32_onnx)
    if fp16:
        run(Stage("onnx-fp16"), fp16_onnx)
    if onnx_only:
        report.stages.append(Stage("engine", status="skipped", figure="--onnx-only"))
        return report
    try:
        run(Stage("engine-fp16" if fp16 else "engine-fp32"), engine)
    except MissingBackend as e:
        report.missing = str(e)
    return report


def _reusable(path: Path, source: str) -> bool:
    """An existing ONNX file from the same weights whose stored verification passed."""
    if not path.is_file() or not verification_path(path).is_file():
        return False
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        passed = json.loads(verification_path(path).read_text()).get("passed") is True
    except Exception:
        return False
    return passed and props.get("weights_sha256") == source


def _check_free(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SRExportError(f"{path}: exists and was made from other weights or failed verification "
                            "(use --force to overwrite)")


def _figure(path: Path) -> str:
    v = json.loads(verification_path(path).read_text())
    worst_psnr = min((c["psnr_db"] for c in v["cases"] if c["psnr_db"] is not None), default=float("inf"))
    return f"max abs {max(c['max_abs'] for c in v['cases']):.2g}" if v["max_abs_limit"] else f"PSNR {worst_psnr:.1f} dB"
