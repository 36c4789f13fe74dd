"""The precision of an engine's layers, read from TensorRT's engine inspector (needs the engine loaded,
so a GPU). The parsed network (network.py) says the same before the build, on any machine."""

from __future__ import annotations

import json
import re

from ..errors import SRExportError

# Compute layers: convolutions (Cask/Cudnn Convolution, Deconvolution, GemmConvolution), matrix
# multiplies (gemm, MatrixMultiply) and activations, which TensorRT often fuses into PointWise layers.
# TensorRT's graph compiler (Myelin, in TensorRT 10+ and TensorRT-RTX) reports its own layer types:
# convolutions as "correlation" and generated fused kernels (a cast + convolution + tanh, a pixel
# shuffle + cast) as "kgen"; missing those would fail a correct FP16 engine for having no FP16 layers.
_COMPUTE = re.compile(r"conv|correlation|kgen|gemm|matrixmultiply|matmul|activation|pointwise", re.IGNORECASE)
_DTYPE_WORDS = {"bf16": "BF16", "bfloat16": "BF16", "fp16": "FP16", "half": "FP16", "float16": "FP16",
                "fp32": "FP32", "float": "FP32", "float32": "FP32", "int8": "INT8", "fp8": "FP8",
                "int32": "INT32", "int64": "INT64", "bool": "BOOL", "uint8": "UINT8", "int4": "INT4", "fp4": "FP4"}


def _tensor_dtype(tensor) -> str:
    """"Row major linear FP16 format" / "Half" / "Float" -> "FP16" / "FP16" / "FP32"; "N/A ..." -> "unknown".
    TensorRT 10 writes one "Format/Datatype" text; later versions split it into "Format" and "Datatype"."""
    if not isinstance(tensor, dict):
        return "unknown"
    text = next((tensor[k] for k in ("Format/Datatype", "Datatype", "DataType") if k in tensor), "")
    for word in re.findall(r"[a-z0-9]+", str(text).lower()):
        if word in _DTYPE_WORDS:
            return _DTYPE_WORDS[word]
    return "unknown"


def _layer_dtype(layer: dict) -> str:
    found = {_tensor_dtype(t) for t in layer.get("Outputs") or []}
    return found.pop() if len(found) == 1 else ("mixed" if found else "unknown")


def precisions_from_inspector_json(text: str) -> dict:
    """Summarise `EngineInspector.get_engine_information(LayerInformationFormat.JSON)`.

    Returns {"layers", "detailed", "by_precision", "compute_layers", "compute_by_precision",
    "fp16_share", "io_tensors"}: a layer's precision is the type of its outputs; fp16_share is the
    share of compute layers whose outputs are FP16 (None when the engine was not built with
    DETAILED profiling verbosity or has no compute layers). Accepts TensorRT 10's "Bindings" (a list
    of names) and TensorRT 11's "I/O Tensors" (a list of objects with "Name").
    """
    try:
        info = json.loads(text)
    except ValueError as e:
        raise SRExportError(f"engine inspector output is not JSON ({e})") from None
    if not isinstance(info, dict):
        raise SRExportError("engine inspector output is not a JSON object")
    layers = info.get("Layers") or []
    io = info.get("Bindings")
    if io is None:
        io = [t.get("Name") if isinstance(t, dict) else t for t in info.get("I/O Tensors") or []]
    detailed = [layer for layer in layers if isinstance(layer, dict)]  # names only below DETAILED
    by_precision: dict[str, int] = {}
    compute: dict[str, int] = {}
    for layer in detailed:
        dtype = _layer_dtype(layer)
        by_precision[dtype] = by_precision.get(dtype, 0) + 1
        if _COMPUTE.search(f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}"):
            compute[dtype] = compute.get(dtype, 0) + 1
    n_compute = sum(compute.values())
    return {
        "layers": len(layers),
        "detailed": bool(layers) and len(detailed) == len(layers),
        "by_precision": dict(sorted(by_precision.items())),
        "compute_layers": n_compute,
        "compute_by_precision": dict(sorted(compute.items())),
        "fp16_share": round(compute.get("FP16", 0) / n_compute, 4) if n_compute else None,
        "io_tensors": list(io),
    }


def fp16_share_from_inspector_json(text: str) -> float | None:
    """Share of compute layers (conv/deconv/matmul/activation) whose outputs are FP16."""
    return precisions_from_inspector_json(text)["fp16_share"]
