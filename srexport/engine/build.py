"""Engines from verified ONNX files, one code path for every flavour: `engine_from_onnx` and its steps.

    network_from_onnx  ONNX -> parsed, strongly typed network (parser errors name the node)
    network_precisions the parsed layers' precisions (no GPU needed), checked against the graph's
    activation_model   two small probe builds -> the activation memory of any profile
    plan_from_network  parsed network + options -> serialized plan
    save_engine        plan -> engine file + JSON sidecar (atomic)

The sidecar says what the engine is (the record, I/O, profile), what it was built for (flavour and
version, the GPU or compute capabilities) and how (every builder option): those fields are the
`engine_identity`, whose hash is the cache key that decides reuse.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..atomic import atomic_output, check_writable, write_text
from ..checkpoint import ModelRecord
from ..contract import io_contract
from ..errors import SRExportError
from ..onnx_export import INPUT_NAME, OUTPUT_NAME, load_onnx, record_from_onnx
from .flavours import Flavour, load_flavour
from .logger import activation_bytes_since, errors_since
from .network import ParsedNetwork, check_precisions, network_from_onnx, network_precisions
from .profiles import DEFAULT_MEMORY_BUDGET, ActivationModel, EngineOptions, human_bytes

SIDECAR_SCHEMA = 2
_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16"}


# --- ONNX facts, identity and cache key -------------------------------------------------------

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
                    flavour: str, tensorrt_version: str, target: dict, cuda: str | None = None,
                    srexport_version: str = __version__) -> dict:
    """Everything an engine is built from: the part of the sidecar the cache key covers.
    `target` is {"gpu": {...}} for TensorRT, {"compute_capabilities": [...], "gpu": ... or None}
    for TensorRT-RTX."""
    gpu = target.get("gpu")
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
        "flavour": flavour,
        "tensorrt_version": tensorrt_version,
        "bindings_cuda": cuda,
        "gpu": {"name": gpu["name"], "compute_capability": gpu["compute_capability"]} if gpu else None,
        "compute_capabilities": target.get("compute_capabilities"),
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


def target_label(sidecar: dict) -> str:
    """"NVIDIA GeForce RTX 4090 (8.9)" or "compute capabilities 8.0, 8.6, 8.9, 12.0"."""
    if sidecar.get("compute_capabilities") and not sidecar.get("gpu"):
        return "compute capabilities " + ", ".join(sidecar["compute_capabilities"])
    gpu = sidecar.get("gpu") or {}
    return f"{gpu.get('name', '?')} ({gpu.get('compute_capability', '?')})"


# --- the steps --------------------------------------------------------------------------------

@dataclass
class Plan:
    data: bytes
    seconds: float
    activation_bytes: int | None  # as the builder reported it
    settings: dict  # flavour settings to record (the timing cache file)


def _config(parsed: ParsedNetwork, options: EngineOptions, target: dict, cache_dir) -> tuple[object, dict]:
    flavour, trt = parsed.flavour, parsed.flavour.trt
    config = parsed.builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    config.builder_optimization_level = options.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports layer types
    # TF32 is on by default; FP32 must mean FP32 to compare with PyTorch FP32 (REFERENCE.md §5).
    # Cleared for FP16 graphs too: any FP32 islands in them are FP32 because they need the precision.
    config.clear_flag(trt.BuilderFlag.TF32)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = parsed.builder.create_optimization_profile()
    shapes = options.profile()
    profile.set_shape(INPUT_NAME, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(profile)
    return config, flavour.configure(config, target, cache_dir)


def plan_from_network(parsed: ParsedNetwork, options: EngineOptions, target: dict, *, cache_dir=None,
                      where="") -> Plan:
    """Build the serialized plan; TensorRT's own error messages go into the raised error."""
    start = time.perf_counter()
    config, settings = _config(parsed, options, target, cache_dir)
    mark = parsed.logger.mark()
    plan = parsed.builder.build_serialized_network(parsed.network, config)
    if plan is None:
        shapes = options.profile()
        raise SRExportError(f"{where}: {parsed.flavour.label} failed to build an engine for profile "
                            f"{shapes['min']}..{shapes['max']} with {options.workspace_gib} GiB workspace: "
                            + (errors_since(parsed.logger, mark) or "it reported no error"))
    parsed.flavour.after_build(config, settings)
    return Plan(bytes(memoryview(plan)), time.perf_counter() - start, activation_bytes_since(parsed.logger, mark),
                settings)


def activation_model(flavour: Flavour, onnx_path: Path, target: dict, options: EngineOptions | None = None,
                     cache_dir=None) -> ActivationModel | None:
    """Fit bytes = fixed + per_pixel * pixels from two static-shape probe builds of this graph; None
    when the flavour's builder does not report its activation memory or a probe cannot be built."""
    settings = {"workspace_gib": options.workspace_gib, "optimization_level": options.optimization_level} \
        if options else {}
    if flavour.probe_workspace_gib:
        settings["workspace_gib"] = flavour.probe_workspace_gib
    points = []
    for side in flavour.probe_sides:
        probe = EngineOptions(min_shape=(side, side), opt_shape=(side, side), max_shape=(side, side), **settings)
        try:
            reported = plan_from_network(network_from_onnx(flavour, onnx_path), probe, target, cache_dir=cache_dir,
                                         where=onnx_path).activation_bytes
        except SRExportError:
            return None  # the real build will say what is wrong
        if reported is None:
            return None
        points.append((side * side, reported))
    (p0, b0), (p1, b1) = points
    per_pixel = max((b1 - b0) / (p1 - p0), 0.0)
    sides = " and ".join(f"{s}x{s}" for s in flavour.probe_sides)
    return ActivationModel(fixed=b0 - per_pixel * p0, per_pixel=per_pixel,
                           measured_by=f"fitted to {flavour.label}'s builder at {sides} inputs")


def resolve_options(scale: int, model: ActivationModel | None, budget: int, *, min_shape=None, opt_shape=None,
                    max_shape=None, **settings) -> EngineOptions:
    """The profile: shapes given by the caller win; the maximum otherwise is the largest that fits
    the memory budget (a 1080p output at most), the minimum a 32x32 tile and opt half the maximum;
    the workspace is at least the budget."""
    if max_shape is None and model is not None:
        max_shape = model.largest_shape(budget, scale)
    # TensorRT-RTX draws activations from the workspace pool: the budget must fit in it.
    settings = {**settings, "workspace_gib": settings.get("workspace_gib") or max(4, budget / (1 << 30))}
    default = EngineOptions.default_for(scale, max_shape=max_shape, **settings)
    min_shape = min_shape or default.min_shape
    if opt_shape is None:
        opt_shape = tuple(min(max(lo, math.ceil(hi / 2)), hi) for lo, hi in zip(min_shape, default.max_shape))
    return default.with_shapes(min_shape=tuple(min_shape), opt_shape=tuple(opt_shape))


def save_engine(plan: Plan, engine_path: Path, sidecar: dict, force: bool) -> None:
    """Engine first, then its sidecar, each atomically: a reader never sees a torn file."""
    with atomic_output(engine_path, force) as tmp:
        tmp.write_bytes(plan.data)
    write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2), force=force)


# --- the whole build --------------------------------------------------------------------------

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
        """From the engine inspector where the engine was loaded, else from the parsed network."""
        for key in ("layer_precisions", "network_precisions"):
            share = (self.sidecar.get(key) or {}).get("fp16_share")
            if share is not None:
                return share
        return None

    def to_dict(self) -> dict:
        return {"engine": str(self.engine_path), "sidecar": str(self.sidecar_path), "reused": self.reused,
                "seconds": round(self.seconds, 3), "precision": self.graph_precision, "fp16_share": self.fp16_share,
                "flavour": self.sidecar.get("flavour"), "built_for": target_label(self.sidecar),
                "cache_key": self.sidecar.get("cache_key")}


def _reusable(engine_path: Path, key: str) -> tuple[dict | None, str]:
    """(the sidecar, "") when the engine on disk is the one built from these inputs, else (None, why)."""
    old = read_sidecar(engine_path)
    if old is None:
        return None, "has no readable sidecar"
    if old.get("cache_key") != key:
        return None, "was built from other inputs or options"
    if old.get("engine_sha256") != sha256_file(engine_path):
        return None, "differs from the engine its sidecar describes"
    return old, ""


def engine_from_onnx(onnx_path: str | os.PathLike, engine_path: str | os.PathLike,
                     options: EngineOptions | None = None, *, flavour: str | Flavour | None = None,
                     compute_capabilities=None, memory_budget: int = DEFAULT_MEMORY_BUDGET, shapes: dict | None = None,
                     settings: dict | None = None, force: bool = False, cache_dir=None) -> EngineBuildResult:
    """Build (or reuse) an engine of `flavour` (default: TensorRT where installed, else TensorRT-RTX)
    for an srexport ONNX file and write it with its sidecar.

    `options` fix the profile and builder settings; without them the profile comes from `shapes`
    ({"min_shape", "opt_shape", "max_shape"}, each optional) and the memory budget, and the builder
    settings from `settings`. Any profile over `memory_budget` is refused before the build. An
    existing engine is reused only when its sidecar's cache key equals the one computed now and the
    file is the one the sidecar describes; any other existing engine is an error unless `force`.
    """
    start = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    record, _ = record_from_onnx(onnx_path)
    io = onnx_io(load_onnx(onnx_path, load_weights=False))
    if [t["name"] for t in io["inputs"]] != [INPUT_NAME] or [t["name"] for t in io["outputs"]] != [OUTPUT_NAME]:
        raise SRExportError(f"{onnx_path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
                            f"{[t['name'] for t in io['inputs']]} -> {[t['name'] for t in io['outputs']]}")
    flavour = flavour if isinstance(flavour, Flavour) else load_flavour(flavour)
    target = flavour.target(compute_capabilities)
    model = activation_model(flavour, onnx_path, target, options, cache_dir)
    if options is None:
        options = resolve_options(record.scale, model, memory_budget, **(shapes or {}), **(settings or {}))
    if flavour.name != "tensorrt" and (options.hardware_compatible or options.version_compatible):
        raise SRExportError(f"hardware and version compatibility are TensorRT 10/11 options; {flavour.label} "
                            "engines move between GPUs by their compute capabilities")
    need = model.check(options, memory_budget, onnx_path) if model else None
    identity = engine_identity(record=record, onnx_sha256=sha256_file(onnx_path), io=io, options=options,
                               flavour=flavour.name, tensorrt_version=flavour.version, target=target,
                               cuda=flavour.cuda_flavour)
    key = cache_key(identity)

    if engine_path.exists() and not force:
        old, why = _reusable(engine_path, key)
        if old is not None:
            return EngineBuildResult(engine_path, sidecar_path(engine_path), old, True, time.perf_counter() - start)
        raise SRExportError(f"{engine_path}: already exists and {why} (use --force to rebuild)")
    check_writable(engine_path, force)
    check_writable(sidecar_path(engine_path), force)

    parsed = network_from_onnx(flavour, onnx_path)
    precisions = network_precisions(parsed)
    check_precisions(precisions, io["precision"], onnx_path)
    plan = plan_from_network(parsed, options, target, cache_dir=cache_dir, where=onnx_path)
    if plan.activation_bytes and plan.activation_bytes > memory_budget:  # the builder's word over the fit
        raise SRExportError(f"{onnx_path}: the built profile up to {options.max_shape[0]}x{options.max_shape[1]} needs "
                            f"{human_bytes(plan.activation_bytes)} of activation memory ({flavour.label}'s builder; "
                            f"{human_bytes(need or 0)} was predicted), over the {human_bytes(memory_budget)} budget; "
                            "lower the maximum shape or raise the budget")
    sidecar = {
        **identity,
        "cache_key": key,
        "engine_sha256": hashlib.sha256(plan.data).hexdigest(),
        "engine_bytes": len(plan.data),
        "onnx_path": str(onnx_path),
        **plan.settings,
        "memory": {"budget_bytes": memory_budget, "predicted_bytes": need,
                   "builder_reported_bytes": plan.activation_bytes, "model": model.to_dict() if model else None},
        "network_precisions": precisions,
        "io_contract": io_contract({"kind": "engine", "path": str(engine_path), **identity}),  # for apps: tile_overlap
        "layer_precisions": None,  # from the engine inspector, once the engine is loaded on a GPU
        "verification": None,  # filled in by verify_engine
        "plan_seconds": round(plan.seconds, 3),
        "build_seconds": round(time.perf_counter() - start, 3),
    }
    save_engine(plan, engine_path, sidecar, force)
    return EngineBuildResult(engine_path, sidecar_path(engine_path), sidecar, False, time.perf_counter() - start)


def memory_summary(sidecar: dict) -> str:
    memory = sidecar.get("memory") or {}
    reported, budget = memory.get("builder_reported_bytes"), memory.get("budget_bytes")
    return (f"activations {human_bytes(reported)}" if reported else "activations not reported") + \
        (f" of a {human_bytes(budget)} budget" if budget else "")
