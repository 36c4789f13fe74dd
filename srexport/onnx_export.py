"""ONNX artifacts: `onnx_from_model` (FP32 export), `fp16_from_onnx` (FP16 graph from the FP32 one),
the metadata record in `metadata_props`, and `export_onnx`, which verifies before it writes."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import onnx
import torch
from torch import nn

from .atomic import atomic_output, check_writable, write_text
from .checkpoint import METADATA_KEY, ModelRecord, weights_sha256
from .errors import SRExportError, VerificationFailed
from .runtime import OnnxRuntimeRunner, TorchRunner
from .verify import DEFAULT_SIZES, VerifyResult, compare, real_inputs

INPUT_NAME, OUTPUT_NAME = "lr", "sr"
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
FP32_MAX_ABS = 1e-4
# The exporter logs a warning per torchvision op it cannot register; srexport uses none of them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
MAX_SIDE = 8192  # largest LR height/width declared for the dynamic dims


def onnx_from_model(model: nn.Module, record: ModelRecord, *, opset: int = DEFAULT_OPSET,
                    exporter: str = "dynamo") -> onnx.ModelProto:
    """Export `model` (FP32, CPU) with dynamic batch, height and width and the record attached."""
    if exporter not in EXPORTERS:
        raise SRExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    newest = onnx.defs.onnx_opset_version()
    if not 17 <= opset <= newest:
        raise SRExportError(f"opset must be between 17 and {newest}, got {opset}")
    model = model.float().cpu().eval()
    example = torch.rand(1, 1, 24, 24)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dim = torch.export.Dim
            dims = {0: dim("batch", min=1, max=1024), 2: dim("height", min=1, max=MAX_SIDE),
                    3: dim("width", min=1, max=MAX_SIDE)}
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({k: v for k, v in dims.items()},),
                external_data=False, optimize=True, verbose=False)
            proto = program.model_proto
        else:
            buf = io.BytesIO()
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
            proto = onnx.load_from_string(buf.getvalue())
    # The torch.export-based exporter may write a newer opset than asked for; convert, then insist.
    if _opset(proto) != opset:
        proto = onnx.version_converter.convert_version(proto, opset)
    if _opset(proto) != opset:
        raise SRExportError(f"{exporter} exporter wrote opset {_opset(proto)}, not the requested {opset}")
    set_record(proto, record, weights_sha256=weights_sha256(model))
    return proto


def _opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def set_record(proto: onnx.ModelProto, record: ModelRecord, **extra: str) -> None:
    """Write the record into `metadata_props`: the full JSON under "srexport", plus flat keys an
    application can read without parsing JSON."""
    flat = {
        METADATA_KEY: record.to_json(),
        "network": record.network,
        "scale": str(record.scale),
        "colour_space": record.colour_space,
        "value_range": json.dumps(list(record.value_range)),
        "layout": record.layout,
        **extra,
    }
    kept = [p for p in proto.metadata_props if p.key not in flat]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for k, v in flat.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "srexport"
    proto.doc_string = f"{record.network} x{record.scale} super-resolution ({record.colour_space})"


def record_from_onnx(path: str | os.PathLike) -> tuple[ModelRecord, dict[str, str]]:
    """The record and all metadata_props of an ONNX file (weights are not loaded)."""
    proto = load_onnx(path, load_weights=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise SRExportError(f"{path}: ONNX file has no srexport metadata record")
    return ModelRecord.from_json(props[METADATA_KEY], str(path)), props


def load_onnx(path: str | os.PathLike, *, load_weights: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise SRExportError(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as e:
        raise SRExportError(f"{path}: not a valid ONNX file ({str(e).splitlines()[0][:200]})") from None


def check_onnx(proto: onnx.ModelProto, where: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise SRExportError(f"{where}: onnx.checker failed: {str(e).splitlines()[0][:300]}") from None


def verify_onnx(proto: onnx.ModelProto | str | os.PathLike, model: nn.Module, *,
                sizes: Sequence[Sequence[int]] = DEFAULT_SIZES, max_abs: float | None = FP32_MAX_ABS,
                min_psnr_db: float | None = None, exact_fp16: bool = False, name: str = "onnxruntime-fp32",
                inputs=None) -> VerifyResult:
    """ONNX Runtime (CPU) against PyTorch FP32 on `inputs` (default: image-like inputs of `sizes`)."""
    source = proto.SerializeToString() if isinstance(proto, onnx.ModelProto) else proto
    candidate = OnnxRuntimeRunner(source, exact_fp16=exact_fp16)
    reference = TorchRunner(model)
    return compare(reference, candidate, inputs if inputs is not None else real_inputs(sizes),
                   candidate_name=name, max_abs=max_abs, min_psnr_db=min_psnr_db)


def verification_path(onnx_path: str | os.PathLike) -> Path:
    return Path(onnx_path).with_suffix(".verify.json")


@dataclass
class ExportResult:
    path: Path
    record: ModelRecord
    verification: VerifyResult
    seconds: float
    size_bytes: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "verification_path": str(verification_path(self.path)),
                "network": self.record.network, "scale": self.record.scale,
                "size_bytes": self.size_bytes, "param_bytes": 4 * self.record.param_count,
                "seconds": round(self.seconds, 3), "verification": self.verification.to_dict()}


def save_verified(proto: onnx.ModelProto, result: VerifyResult, path: str | os.PathLike, *,
                  force: bool) -> int:
    """Write the ONNX file and its verification JSON, only if the verification passed."""
    if not result:
        raise VerificationFailed(
            f"{path}: {result.candidate} does not match {result.reference} ({result.limits()}); "
            f"worst max abs {result.worst_max_abs:.3g}, worst PSNR {result.worst_psnr_db:.1f} dB; nothing written")
    data = proto.SerializeToString()
    with atomic_output(path, force) as tmp:
        tmp.write_bytes(data)
    write_text(verification_path(path), json.dumps(result.to_dict(), indent=2), force=True)
    return len(data)


def export_onnx(model: nn.Module, record: ModelRecord, path: str | os.PathLike, *,
                opset: int = DEFAULT_OPSET, exporter: str = "dynamo", force: bool = False,
                sizes: Sequence[Sequence[int]] = DEFAULT_SIZES) -> ExportResult:
    """Export, check, verify against PyTorch FP32 and only then write `path` (+ `.verify.json`)."""
    check_writable(path, force)
    check_writable(verification_path(path), force)
    start = time.perf_counter()
    proto = onnx_from_model(model, record, opset=opset, exporter=exporter)
    check_onnx(proto, str(path))
    result = verify_onnx(proto, model, sizes=sizes)
    size = save_verified(proto, result, path, force=force)
    return ExportResult(Path(path), record, result, time.perf_counter() - start, size)
