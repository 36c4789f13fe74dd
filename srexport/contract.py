"""The I/O contract of an artifact in one place: what goes in and comes out, and what an application
must check before it runs an engine. `srexport info --json` shows it as `io_contract`; README's
"Embedding" section describes it; cpp/ and srexport/vapoursynth.py follow it."""

from __future__ import annotations

import json

from .checkpoint import COLOUR_SPACE, ModelRecord
from .errors import SRExportError

INPUT, OUTPUT = "lr", "sr"

# What an application checks, from the sidecar, before it loads an engine (cpp/include/srexport/
# sidecar.hpp checks each; srexport.vapoursynth the ones its plugins need).
ENGINE_CHECKS = (
    "flavour: 'tensorrt' (TensorRT 10.x/11.x, nvinfer; a missing flavour means this) or 'tensorrt-rtx' "
    "(TensorRT for RTX): load it only with that runtime",
    "tensorrt_version: the runtime's major.minor must equal it (engines are not portable across versions)",
    "gpu.compute_capability (tensorrt) or compute_capabilities (tensorrt-rtx): must include this GPU's",
    "scale: must be the factor the application asks for",
    "inputs/outputs: one input 'lr' and one output 'sr', dtype float32 or float16 as listed",
    "layout NCHW, colour_space and value_range as below: the application converts its pictures to them",
    "profile: every input (N, 1, H, W) must lie within min..max; tile larger frames with tile_overlap",
    "engine_bytes / engine_sha256: the engine file must be the one the sidecar was written for",
)


def _receptive_radius(record: ModelRecord) -> int | None:
    from .tiling import receptive_radius  # torch: only where info runs, never in the embedding code

    try:
        return receptive_radius(record.build())
    except Exception:  # noqa: BLE001 - an unknown network leaves the overlap to the application
        return None


def io_contract(info: dict) -> dict:
    """The contract of the artifact `catalog.artifact_info` describes (a checkpoint, ONNX file or
    engine sidecar, with its record's fields at the top level or under `record`)."""
    fields = info.get("record") if info.get("kind") == "engine" and isinstance(info.get("record"), dict) else info
    try:
        record = ModelRecord.from_json(json.dumps(fields), str(info.get("path", "artifact")))
    except SRExportError:
        record = None  # no full record: the contract without tile_overlap
    scale = info.get("scale", fields.get("scale"))
    if info.get("kind") == "engine":
        inputs, outputs = info.get("inputs") or [], info.get("outputs") or []
        profile = info.get("profile")
    else:
        dtype = "float16" if info.get("io_dtype") == "fp16" else "float32"
        inputs, outputs = [{"name": INPUT, "dtype": dtype}], [{"name": OUTPUT, "dtype": dtype}]
        profile = None  # any H, W >= 1
    radius = _receptive_radius(record) if record is not None else None
    contract = {
        "input": {**(inputs[0] if inputs else {}), "shape": ["N", 1, "H", "W"]},
        "output": {**(outputs[0] if outputs else {}), "shape": ["N", 1, f"{scale}*H", f"{scale}*W"]},
        "layout": "NCHW",
        "scale": scale,
        "colour_space": info.get("colour_space", fields.get("colour_space", COLOUR_SPACE)),
        "value_range": list(info.get("value_range", fields.get("value_range", (0.0, 1.0)))),
        "sizes": ("H, W within the profile (min..max)" if profile else "any H, W >= 1"),
        "profile": profile,
        "tile_overlap": radius,
        "tiling": "split each axis into ceil(n / tile) nearly equal parts, run each with tile_overlap LR pixels "
                  "of context on every side (clipped at the frame border), keep its centre: equal to untiled",
        "chroma": "Cb/Cr (or a video's U/V) upscaled by MATLAB bicubic (Keys a = -0.5, half-sample symmetric "
                  "borders), not by the network",
    }
    if info.get("kind") == "engine":
        contract["flavour"] = info.get("flavour") or "tensorrt"
        contract["checks"] = list(ENGINE_CHECKS)
    return contract
