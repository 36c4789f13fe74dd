"""`verify_artifact`: repeat the verification of an existing ONNX file or engine against the
PyTorch network it was made from."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .catalog import model_for_record
from .checkpoint import ModelRecord, weights_sha256
from .errors import SRExportError
from .verify import VerifyResult, real_inputs


def verify_artifact(path: str | os.PathLike, checkpoint=None) -> VerifyResult:
    path = Path(path)
    if not path.exists():
        raise SRExportError(f"{path}: no such file")
    if path.suffix == ".onnx":
        return _verify_onnx_file(path, checkpoint)
    if path.suffix == ".engine":
        from .engine import read_sidecar, verify_engine

        sidecar = read_sidecar(path)
        if sidecar is None:
            raise SRExportError(f"{path}: engine has no readable JSON sidecar ({path}.json)")
        record = ModelRecord.from_json(json.dumps(sidecar["record"]), str(path))
        return verify_engine(path, model_for_record(record, checkpoint, str(path)))
    raise SRExportError(f"{path}: can verify .onnx files and .engine files, not {path.suffix or 'this'}")


def _verify_onnx_file(path: Path, checkpoint) -> VerifyResult:
    from .build import FP16_SIZES
    from .fp16 import verify_fp16
    from .onnx_export import load_onnx, record_from_onnx, verify_onnx

    record, props = record_from_onnx(path)
    model = model_for_record(record, checkpoint, str(path))
    if props.get("weights_sha256") not in (None, weights_sha256(model)):
        raise SRExportError(f"{path}: was not exported from these weights (weights_sha256 differs)")
    if props.get("precision") == "fp16":
        return verify_fp16(load_onnx(path), model, inputs=real_inputs(FP16_SIZES))
    return verify_onnx(path, model)
