"""TensorRT engines of every flavour (TensorRT 10.x/11.x, TensorRT-RTX): build, sidecar, run, verify.

`tensorrt` and TensorRT-RTX's bindings are imported inside functions, so this package imports
without them.
"""

from .build import (EngineBuildResult, cache_key, engine_from_onnx, engine_identity, onnx_io, read_sidecar,
                    sha256_file, sidecar_path, target_label)
from .flavours import FLAVOURS, TENSORRT, TENSORRT_RTX, installed_flavours, load_flavour, parse_compute_capabilities
from .inspect import fp16_share_from_inspector_json, precisions_from_inspector_json
from .profiles import DEFAULT_MEMORY_BUDGET, EngineOptions, parse_bytes, parse_shape
from .run import TensorRTRunner, TorchCudaFP32Runner, verification_sizes, verify_engine

__all__ = [
    "DEFAULT_MEMORY_BUDGET", "EngineBuildResult", "EngineOptions", "FLAVOURS", "TENSORRT", "TENSORRT_RTX",
    "TensorRTRunner", "TorchCudaFP32Runner", "cache_key", "engine_from_onnx", "engine_identity",
    "fp16_share_from_inspector_json", "installed_flavours", "load_flavour", "onnx_io", "parse_bytes",
    "parse_compute_capabilities", "parse_shape", "precisions_from_inspector_json", "read_sidecar", "sha256_file",
    "sidecar_path", "target_label", "verification_sizes", "verify_engine",
]
