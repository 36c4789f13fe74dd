"""TensorRT engines from verified ONNX files: `engine_from_onnx`, the JSON sidecar and its cache key,
`TensorRTRunner`, `layer_precisions` and `verify_engine`.

One code path serves TensorRT 10.x and 11.x. TensorRT 11 networks are always strongly typed and
dropped the precision builder flags, so precision comes only from the tensor types in the ONNX
graph (an FP16 ONNX gives an FP16 engine) and only names present in both versions are used; the
one exception, STRONGLY_TYPED, is used by name on 10.x only (REFERENCE.md §5).
tests/test_tensorrt_api_names.py checks every name against the extracted 10.x and 11.x bindings.

`tensorrt` is imported inside functions (`_trt()`), so this module imports without it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import __version__
from .atomic import atomic_output, check_writable, write_bytes, write_text
from .checkpoint import ModelRecord
from .errors import MissingBackend, SRExportError
from .onnx_export import INPUT_NAME, OUTPUT_NAME, load_onnx, record_from_onnx
from .verify import VerifyResult, compare, real_inputs

INSTALL_HINT = "TensorRT is not installed: pip install 'srexport[tensorrt]' (needs an NVIDIA GPU, driver and CUDA)"
NO_CUDA = ("no CUDA GPU is available (torch.cuda.is_available() is False): TensorRT engines need an NVIDIA "
           "GPU, its driver and a CUDA build of PyTorch")
SIDECAR_SCHEMA = 1
FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR_DB = 50.0

# Every TensorRT class member this module touches, as "Class.member" with the bindings' class
# names. The AST scan in tests/test_tensorrt_api_names.py finds the `trt.X.Y` chains itself; calls
# on TensorRT objects (builder.create_network(...)) cannot be typed statically, so they are listed.
TENSORRT_NAMES_USED = (
    "__version__", "Logger", "Logger.WARNING",
    "Builder", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
    "ParserError.desc", "INetworkDefinition.num_inputs", "INetworkDefinition.get_input", "ITensor.name",
    "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.builder_optimization_level", "IBuilderConfig.profiling_verbosity",
    "ProfilingVerbosity.DETAILED", "IBuilderConfig.clear_flag", "BuilderFlag.TF32",
    "IOptimizationProfile.set_shape", "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.get_timing_cache", "ITimingCache.serialize", "IHostMemory",
    "Runtime", "Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "TensorIOMode.INPUT", "TensorIOMode.OUTPUT", "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_profile_shape", "ICudaEngine.create_engine_inspector",
    "EngineInspector.execution_context", "EngineInspector.get_engine_information", "LayerInformationFormat.JSON",
    "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
    "DataType.FLOAT", "DataType.HALF", "DataType.BF16",
)
# Names used only inside a version branch, checked against that version's bindings only.
# STRONGLY_TYPED still exists in 11.x but is 0 and ignored there; 11.x gets plain create_network().
VERSION_ONLY_NAMES = {10: ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",)}


# --- backends ---------------------------------------------------------------------------------

def _trt():
    """The tensorrt module, or MissingBackend with the install hint."""
    try:
        import tensorrt
    except (ImportError, OSError):  # OSError: the bindings are there but libnvinfer is not
        raise MissingBackend(INSTALL_HINT) from None
    return tensorrt


def tensorrt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def cuda_available() -> bool:
    return torch.cuda.is_available()


def require_cuda() -> None:
    if not cuda_available():
        raise MissingBackend(NO_CUDA)


def gpu_info() -> dict:
    """The current GPU's name and compute capability: an engine runs only on the GPU family it was built for."""
    require_cuda()
    device = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(device)
    return {"name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


# --- options ----------------------------------------------------------------------------------

def parse_shape(text: str) -> tuple[int, int]:
    """"540x960" -> (540, 960): an LR height x width."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise SRExportError(f"bad shape {text!r}: expected HEIGHTxWIDTH of positive integers, e.g. 540x960")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class EngineOptions:
    """The optimization profile (LR sizes, batch) and builder settings of one engine."""

    min_shape: tuple[int, int]
    opt_shape: tuple[int, int]
    max_shape: tuple[int, int]
    batch: tuple[int, int, int] = (1, 1, 1)
    workspace_gib: float = 4
    optimization_level: int = 3

    def __post_init__(self):
        for name in ("min_shape", "opt_shape", "max_shape", "batch"):  # lists from JSON or a CLI
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        shapes = (self.min_shape, self.opt_shape, self.max_shape)
        if any(len(s) != 2 or any(not isinstance(v, int) or v < 1 for v in s) for s in shapes):
            raise SRExportError(f"profile shapes must be (height, width) of positive integers, got {shapes}")
        if len(self.batch) != 3 or any(not isinstance(v, int) or v < 1 for v in self.batch):
            raise SRExportError(f"batch must be (min, opt, max) positive integers, got {self.batch}")
        for i, what in enumerate(("height", "width")):
            if not self.min_shape[i] <= self.opt_shape[i] <= self.max_shape[i]:
                raise SRExportError(f"profile {what}s must satisfy min <= opt <= max, got "
                                    f"{self.min_shape[i]}, {self.opt_shape[i]}, {self.max_shape[i]}")
        if not self.batch[0] <= self.batch[1] <= self.batch[2]:
            raise SRExportError(f"batch must satisfy min <= opt <= max, got {self.batch}")
        if not self.workspace_gib > 0:
            raise SRExportError(f"workspace must be positive, got {self.workspace_gib} GiB")
        if self.optimization_level not in range(6):
            raise SRExportError(f"optimization level must be 0..5, got {self.optimization_level}")

    @classmethod
    def default_for(cls, scale: int) -> EngineOptions:
        """Max covers a 1080p output; opt is half of that (tiles and 720p-ish frames); min is 1x1,
        so the engine accepts every input the ONNX graph does up to max. TensorRT tunes kernels at
        opt and only has to support min, and nothing in these all-convolutional graphs limits
        small inputs (the bicubic pad is exact at width 1), so a tiny min costs nothing at opt."""
        if not isinstance(scale, int) or scale < 1:
            raise SRExportError(f"scale must be a positive integer, got {scale!r}")
        max_shape = (math.ceil(1080 / scale), math.ceil(1920 / scale))
        opt_shape = (math.ceil(max_shape[0] / 2), math.ceil(max_shape[1] / 2))
        return cls(min_shape=(1, 1), opt_shape=opt_shape, max_shape=max_shape)

    def profile(self) -> dict:
        """The (N, 1, H, W) shapes of the input profile."""
        return {"input": INPUT_NAME,
                **{k: [self.batch[i], 1, *shape] for i, (k, shape) in
                   enumerate((("min", self.min_shape), ("opt", self.opt_shape), ("max", self.max_shape)))}}

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --- ONNX facts, sidecar and cache key --------------------------------------------------------

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16"}


def onnx_io(proto) -> dict:
    """Input/output names and dtypes and the graph precision, read from the ONNX types: the
    precision of a strongly typed engine is that of the graph's weights (FP16 initializers ->
    FP16 engine), whatever the I/O types are (keep_io_types gives FP32 I/O around FP16)."""
    def tensors(values):
        return [{"name": v.name, "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type, "other")} for v in values]

    inputs, outputs = tensors(proto.graph.input), tensors(proto.graph.output)
    types = {_ONNX_DTYPES.get(t.data_type) for t in proto.graph.initializer} | {t["dtype"] for t in inputs}
    precision = "fp16" if "float16" in types else "bf16" if "bfloat16" in types else "fp32"
    return {"inputs": inputs, "outputs": outputs, "precision": precision}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def engine_identity(*, record: ModelRecord, onnx_sha256: str, io: dict, options: EngineOptions,
                    tensorrt_version: str, gpu: dict, srexport_version: str = __version__) -> dict:
    """Everything an engine is built from: the part of the sidecar the cache key covers."""
    return {
        "schema_version": SIDECAR_SCHEMA,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "precision": io["precision"],
        "layout": "NCHW",
        "scale": record.scale,
        "colour_space": record.colour_space,
        "value_range": list(record.value_range),
        "profile": options.profile(),
        "tensorrt_version": tensorrt_version,
        "gpu": {"name": gpu["name"], "compute_capability": gpu["compute_capability"]},
        "onnx_sha256": onnx_sha256,
        "build_options": {**options.to_dict(), "strongly_typed": True, "tf32": False,
                          "profiling_verbosity": "DETAILED"},
        "srexport_version": srexport_version,
        "record": record.to_dict(),
    }


def cache_key(identity: dict) -> str:
    """sha256 of the canonical JSON of `engine_identity(...)` (never of verification or timings)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    return Path(f"{engine_path}.json")


def read_sidecar(engine_path: str | os.PathLike) -> dict | None:
    """The engine's sidecar, or None when it is missing or unreadable (then it cannot vouch for the engine)."""
    try:
        data = json.loads(sidecar_path(engine_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def timing_cache_path(folder: str | os.PathLike | None, tensorrt_version: str, gpu: dict) -> Path:
    """One timing cache per TensorRT version and GPU: TensorRT rejects a cache from another device."""
    if folder is None:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srexport" / "timing"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu["name"]).strip("-").lower()
    return Path(folder) / f"tensorrt-{tensorrt_version}_{slug}_sm{gpu['compute_capability'].replace('.', '')}.cache"


@dataclass
class EngineBuildResult:
    engine_path: Path
    sidecar_path: Path
    sidecar: dict
    reused: bool
    seconds: float

    @property
    def graph_precision(self) -> str:  # not `.precision`: that spelling is a TensorRT 10-only layer member
        return self.sidecar["precision"]

    @property
    def fp16_share(self) -> float | None:
        return (self.sidecar.get("layer_precisions") or {}).get("fp16_share")

    def to_dict(self) -> dict:
        return {"engine": str(self.engine_path), "sidecar": str(self.sidecar_path), "reused": self.reused,
                "seconds": round(self.seconds, 3), "precision": self.graph_precision, "fp16_share": self.fp16_share,
                "cache_key": self.sidecar.get("cache_key")}


# --- building ---------------------------------------------------------------------------------

def engine_from_onnx(onnx_path: str | os.PathLike, engine_path: str | os.PathLike,
                     options: EngineOptions | None = None, *, force: bool = False,
                     timing_cache_dir: str | os.PathLike | None = None) -> EngineBuildResult:
    """Build (or reuse) a TensorRT engine for an srexport ONNX file and write it with its sidecar.

    An existing engine is reused only when its sidecar's cache key equals the one computed now and
    the engine file is the one the sidecar describes; any other existing engine is an error unless
    `force`, which always rebuilds. `options` default to `EngineOptions.default_for(scale)`.
    """
    start = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    record, _ = record_from_onnx(onnx_path)
    io = onnx_io(load_onnx(onnx_path, load_weights=False))
    if [t["name"] for t in io["inputs"]] != [INPUT_NAME] or [t["name"] for t in io["outputs"]] != [OUTPUT_NAME]:
        raise SRExportError(f"{onnx_path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
                            f"{[t['name'] for t in io['inputs']]} -> {[t['name'] for t in io['outputs']]}")
    options = options or EngineOptions.default_for(record.scale)
    trt = _trt()
    gpu = gpu_info()
    identity = engine_identity(record=record, onnx_sha256=sha256_file(onnx_path), io=io, options=options,
                               tensorrt_version=trt.__version__, gpu=gpu)
    key = cache_key(identity)
    sidecar_file = sidecar_path(engine_path)

    if engine_path.exists() and not force:
        old = read_sidecar(engine_path)
        same_inputs = bool(old) and old.get("cache_key") == key
        if same_inputs and old.get("engine_sha256") == sha256_file(engine_path):
            return EngineBuildResult(engine_path, sidecar_file, old, True, time.perf_counter() - start)
        why = ("has no readable sidecar" if old is None else "differs from the engine its sidecar describes"
               if same_inputs else "was built from other inputs or options")
        raise SRExportError(f"{engine_path}: already exists and {why} (use --force to rebuild)")
    check_writable(engine_path, force)
    check_writable(sidecar_file, force)

    cache_file = timing_cache_path(timing_cache_dir, trt.__version__, gpu)
    plan = _build(trt, onnx_path, options, cache_file)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)  # kept in a variable: it must outlive the engine
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise SRExportError(f"{onnx_path}: TensorRT {trt.__version__} built an engine it cannot deserialize")
    engine_io, graph_io = _engine_io(trt, engine), {"inputs": io["inputs"], "outputs": io["outputs"]}
    if engine_io != graph_io:  # a strongly typed engine keeps the graph's I/O names and types
        raise SRExportError(f"{onnx_path}: engine I/O {engine_io} differs from the ONNX graph's {graph_io}")

    sidecar = {
        **identity,
        "cache_key": key,
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "engine_bytes": len(plan),
        "onnx_path": str(onnx_path),
        "timing_cache": str(cache_file),
        "layer_precisions": layer_precisions(engine),
        "verification": None,  # filled in by verify_engine
        "build_seconds": round(time.perf_counter() - start, 3),
    }
    with atomic_output(engine_path, force) as tmp:
        tmp.write_bytes(plan)
    write_text(sidecar_file, json.dumps(sidecar, indent=2), force=force)
    return EngineBuildResult(engine_path, sidecar_file, sidecar, False, time.perf_counter() - start)


def _build(trt, onnx_path: Path, options: EngineOptions, cache_file: Path) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if tensorrt_major(trt) < 11:
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    else:  # always strongly typed; the flag is 0 and ignored
        network = builder.create_network()
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) or parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise SRExportError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: "
                            + (" | ".join(errors) or "no parser error was reported"))
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME:
        raise SRExportError(f"{onnx_path}: TensorRT sees inputs "
                            f"{[network.get_input(i).name for i in range(network.num_inputs)]}, expected [{INPUT_NAME!r}]")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    config.builder_optimization_level = options.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports layer types
    # TF32 is on by default; FP32 must mean FP32 to compare with PyTorch FP32 (REFERENCE.md §5).
    # Cleared for FP16 graphs too: any FP32 islands in them are FP32 because they need the precision.
    config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    shapes = options.profile()
    profile.set_shape(INPUT_NAME, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(profile)
    _attach_timing_cache(config, cache_file)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SRExportError(f"{onnx_path}: TensorRT {trt.__version__} failed to build an engine for profile "
                            f"{shapes['min']}..{shapes['max']} with {options.workspace_gib} GiB workspace "
                            "(see TensorRT's messages above)")
    _save_timing_cache(config, cache_file)
    return bytes(memoryview(plan))


def _attach_timing_cache(config, cache_file: Path) -> None:
    data = b""
    if cache_file.is_file():
        try:
            data = cache_file.read_bytes()
        except OSError as e:
            warnings.warn(f"{cache_file}: cannot read the timing cache ({e}); starting a new one")
    cache = None
    try:
        cache = config.create_timing_cache(data)
    except Exception as e:  # a corrupt file must not stop the build
        warnings.warn(f"{cache_file}: unusable timing cache ({e}); starting a new one")
    if cache is None or not config.set_timing_cache(cache, False):
        if data:
            warnings.warn(f"{cache_file}: TensorRT rejected the timing cache; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config, cache_file: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    try:  # atomic, so concurrent builds never leave a torn file; the last writer wins
        write_bytes(cache_file, bytes(memoryview(cache.serialize())), force=True)
    except OSError as e:
        warnings.warn(f"{cache_file}: cannot save the timing cache ({e})")


# --- running ----------------------------------------------------------------------------------

def _dtype_names(trt) -> dict:
    return {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.BF16: "bfloat16"}


_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _io_names(trt, engine, mode) -> list[str]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return [n for n in names if engine.get_tensor_mode(n) == mode]


def _engine_io(trt, engine) -> dict:
    names = _dtype_names(trt)

    def tensors(mode):
        return [{"name": n, "dtype": names.get(engine.get_tensor_dtype(n), "other")} for n in _io_names(trt, engine, mode)]

    return {"inputs": tensors(trt.TensorIOMode.INPUT), "outputs": tensors(trt.TensorIOMode.OUTPUT)}


class TensorRTRunner:
    """ndarray (N, 1, H, W) -> ndarray (N, 1, sH, sW) through an engine, with torch CUDA tensors as buffers."""

    def __init__(self, engine_path: str | os.PathLike):
        trt = _trt()
        require_cuda()
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise SRExportError(f"{self.path}: no such file")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            built = read_sidecar(self.path) or {}
            raise SRExportError(
                f"{self.path}: TensorRT {trt.__version__} cannot load this engine (built with TensorRT "
                f"{built.get('tensorrt_version', '?')} on {built.get('gpu', {}).get('name', '?')}; engines run "
                "only on the TensorRT version and GPU family they were built for)")
        io = _engine_io(trt, self.engine)
        if len(io["inputs"]) != 1 or len(io["outputs"]) != 1:
            raise SRExportError(f"{self.path}: expected one input and one output, got {io}")
        (self.input_name, in_dtype), (self.output_name, out_dtype) = (
            (t["name"], t["dtype"]) for t in (io["inputs"][0], io["outputs"][0]))
        if in_dtype not in _TORCH_DTYPES or out_dtype not in _TORCH_DTYPES:
            raise SRExportError(f"{self.path}: unsupported engine I/O types {in_dtype} -> {out_dtype}")
        self.input_dtype, self.output_dtype = _TORCH_DTYPES[in_dtype], _TORCH_DTYPES[out_dtype]
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()  # TensorRT warns that the default stream adds synchronisations

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.cuda.stream(self.stream):
            inp = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self.input_dtype).contiguous()
            if not self.context.set_input_shape(self.input_name, tuple(inp.shape)):
                lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
                raise SRExportError(f"{self.path}: input shape {tuple(inp.shape)} is outside the engine's "
                                    f"profile {tuple(lo)}..{tuple(hi)}")
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)),
                              dtype=self.output_dtype, device="cuda")
            self.context.set_tensor_address(self.input_name, inp.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
                raise SRExportError(f"{self.path}: TensorRT failed to run the engine on {tuple(inp.shape)}")
            self.stream.synchronize()
        return out.float().cpu().numpy()


class TorchCudaFP32Runner:
    """PyTorch FP32 on the GPU with TF32 off: the reference an FP32 engine must match to 1e-4.
    The TF32 switches are process-wide, so they are set only for the duration of each call."""

    def __init__(self, model: nn.Module):
        require_cuda()
        self.model = copy.deepcopy(model).float().cuda().eval()  # leave the caller's model where it is

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        try:
            y = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda())
            return y.float().cpu().numpy()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def torch_gpu_reference(model: nn.Module) -> TorchCudaFP32Runner:
    return TorchCudaFP32Runner(model)


# --- layer precisions -------------------------------------------------------------------------

# Compute layers: convolutions (Cask/Cudnn Convolution, Deconvolution, GemmConvolution), matrix
# multiplies (gemm, MatrixMultiply) and activations, which TensorRT often fuses into PointWise layers.
_COMPUTE = re.compile(r"conv|gemm|matrixmultiply|matmul|activation|pointwise", re.IGNORECASE)
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


def layer_precisions(engine, context=None) -> dict:
    """`precisions_from_inspector_json` of a deserialized engine. With dynamic shapes the inspector
    prints "N/A due to dynamic shapes" for every tensor unless it inspects a context whose input
    shapes are set, so without `context` one is made at the profile's opt shape."""
    trt = _trt()
    if context is None:
        context = engine.create_execution_context()
        for name in _io_names(trt, engine, trt.TensorIOMode.INPUT):
            context.set_input_shape(name, tuple(engine.get_tensor_profile_shape(name, 0)[1]))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return precisions_from_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# --- verification -----------------------------------------------------------------------------

def verification_sizes(profile: dict) -> list[tuple[int, int, int]]:
    """(N, H, W) at the profile's min, opt and max, and one odd size inside it."""
    (bn, _, hn, wn), (bo, _, ho, wo), (bx, _, hx, wx) = profile["min"], profile["opt"], profile["max"]

    def odd(lo, opt, hi):
        return min(max((opt * 3 // 4) | 1, lo), hi)

    return [(bn, hn, wn), (bo, ho, wo), (bx, hx, wx), (bn, odd(hn, ho, hx), odd(wn, wo, wx))]


def verify_engine(engine_path: str | os.PathLike, model: nn.Module, *,
                  sizes: Sequence[Sequence[int]] | None = None, inputs: Sequence[np.ndarray] | None = None,
                  fp16: bool | None = None, record: bool = True) -> VerifyResult:
    """The engine against PyTorch FP32 on the GPU (TF32 off), always checking for NaN/Inf.

    FP32 engines must match to max abs <= 1e-4, FP16 ones to a difference PSNR >= 50 dB. `inputs`
    win over `sizes`; by default the sizes are `verification_sizes` of the sidecar's profile and
    `fp16` is the sidecar's precision. With `record`, the result is stored in the sidecar (the
    cache key does not cover it, so the engine stays reusable).
    """
    engine_path = Path(engine_path)
    sidecar = read_sidecar(engine_path)
    if fp16 is None:
        fp16 = bool(sidecar) and sidecar.get("precision") == "fp16"
    if inputs is None:
        if sizes is None:
            if not sidecar:
                raise SRExportError(f"{engine_path}: no readable sidecar; pass sizes or inputs to verify it")
            sizes = verification_sizes(sidecar["profile"])
        inputs = real_inputs(sizes)
    candidate = TensorRTRunner(engine_path)
    result = compare(torch_gpu_reference(model), candidate, inputs, reference_name="pytorch-fp32-cuda",
                     candidate_name=f"tensorrt-{'fp16' if fp16 else 'fp32'}",
                     max_abs=None if fp16 else FP32_MAX_ABS, min_psnr_db=FP16_MIN_PSNR_DB if fp16 else None)
    if record and sidecar is not None:
        sidecar["verification"] = result.to_dict()
        write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2), force=True)
    return result
