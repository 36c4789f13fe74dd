"""The engine flavours: TensorRT 10.x/11.x and TensorRT for RTX, and the little that differs between them.

Everything else (parsing, profiles, building, the sidecar, the cache key, running, the checks) is
shared and lives in the other modules of this package. A flavour supplies:
  * its bindings module, imported lazily (`tensorrt`; `tensorrt_rtx`, else `tensorrt_rtx_bindings`);
  * how a strongly typed network is created (by name on TensorRT 10, plainly on 11 and RTX, where
    every network is strongly typed and the flag is 0);
  * what a plan is built for and the builder settings that go with it: the GPU and a timing cache
    for TensorRT, a list of compute capabilities for TensorRT-RTX, which builds ahead of time
    without a GPU;
  * what a GPU must be to run its engines, and how an execution context is made (TensorRT-RTX
    compiles kernels just in time: a runtime cache keeps them, and the eager strategy compiles the
    dynamic-shape kernels at the first run rather than at every new shape).

tests/test_tensorrt_api_names.py checks every name used here against the real bindings: TensorRT
10.x and 11.x from the extracted name files, TensorRT-RTX from the installed module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from pathlib import Path

import torch

from ..errors import MissingBackend, SRExportError

TENSORRT, TENSORRT_RTX = "tensorrt", "tensorrt-rtx"
FLAVOURS = (TENSORRT, TENSORRT_RTX)
DISPLAY = {TENSORRT: "TensorRT", TENSORRT_RTX: "TensorRT-RTX"}
INSTALL_HINTS = {
    TENSORRT: "TensorRT is not installed: pip install 'srexport[tensorrt]' (needs an NVIDIA GPU, driver and CUDA)",
    TENSORRT_RTX: "TensorRT-RTX is not installed: pip install 'srexport[tensorrt-rtx]' (builds without a GPU; "
                  "runs on RTX-class GPUs)",
}
NO_CUDA = ("no CUDA GPU is available (torch.cuda.is_available() is False): TensorRT engines need an NVIDIA "
           "GPU, its driver and a CUDA build of PyTorch")

# TensorRT-RTX runs on Turing, Ampere, Ada and consumer Blackwell (NVIDIA's support matrix); not on
# Hopper (9.0) or datacenter Blackwell (10.x). Its portable default is Ampere and later without Turing:
# srexport sets that list explicitly so that the sidecar says exactly what a plan was built for.
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
RTX_PORTABLE = ("8.0", "8.6", "8.9", "12.0")

# Members called on TensorRT objects of every flavour (no static scan can attribute them to a class).
TENSORRT_NAMES_USED = (
    "__version__", "ILogger", "ILogger.INTERNAL_ERROR", "ILogger.ERROR", "ILogger.WARNING", "ILogger.VERBOSE",
    "Builder", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
    "ParserError.desc", "ParserError.node", "ParserError.node_name", "ParserError.node_operator",
    "INetworkDefinition.num_inputs", "INetworkDefinition.get_input", "INetworkDefinition.num_layers",
    "INetworkDefinition.get_layer", "ITensor.name", "ILayer.name", "ILayer.type", "ILayer.num_outputs",
    "ILayer.get_output_type",
    "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.builder_optimization_level", "IBuilderConfig.profiling_verbosity",
    "ProfilingVerbosity.DETAILED", "IBuilderConfig.clear_flag", "IBuilderConfig.set_flag", "BuilderFlag.TF32",
    "BuilderFlag.VERSION_COMPATIBLE", "IBuilderConfig.hardware_compatibility_level",
    "HardwareCompatibilityLevel.AMPERE_PLUS",
    "IOptimizationProfile.set_shape", "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.get_timing_cache", "ITimingCache.serialize", "IHostMemory",
    "Runtime", "Runtime.deserialize_cuda_engine", "Runtime.engine_host_code_allowed",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "TensorIOMode.INPUT", "TensorIOMode.OUTPUT", "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_profile_shape", "ICudaEngine.create_engine_inspector",
    "EngineInspector.execution_context", "EngineInspector.get_engine_information", "LayerInformationFormat.JSON",
    "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
    "DataType.FLOAT", "DataType.HALF", "DataType.BF16",
    # TensorRT-RTX only (checked against its bindings alone, see ONLY_NAMES)
    "ComputeCapability", "IBuilderConfig.num_compute_capabilities", "IBuilderConfig.set_compute_capability",
    "ICudaEngine.create_runtime_config", "IRuntimeConfig.create_runtime_cache",
    "IRuntimeConfig.set_runtime_cache", "IRuntimeConfig.dynamic_shapes_kernel_specialization_strategy",
    "DynamicShapesKernelSpecializationStrategy", "DynamicShapesKernelSpecializationStrategy.EAGER",
    "IRuntimeCache.serialize", "IRuntimeCache.deserialize", "ComputeCapability.SM75", "ComputeCapability.SM80", "ComputeCapability.SM86", "ComputeCapability.SM89",
    "ComputeCapability.SM120", "ComputeCapability.SM121",
)
# Names used only in one flavour's or version's branch, checked against those bindings only.
# STRONGLY_TYPED still exists in 11.x and RTX but is 0 and ignored there: they get plain create_network().
ONLY_NAMES = {
    10: ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",),
    TENSORRT_RTX: ("ComputeCapability", "IBuilderConfig.num_compute_capabilities",
                   "IBuilderConfig.set_compute_capability", "ICudaEngine.create_runtime_config",
                   "IRuntimeConfig.create_runtime_cache", "IRuntimeConfig.set_runtime_cache",
                   "IRuntimeConfig.dynamic_shapes_kernel_specialization_strategy",
                   "DynamicShapesKernelSpecializationStrategy", "DynamicShapesKernelSpecializationStrategy.EAGER",
                   "IRuntimeCache.serialize", "IRuntimeCache.deserialize", "ComputeCapability.SM75",
                   "ComputeCapability.SM80", "ComputeCapability.SM86", "ComputeCapability.SM89",
                   "ComputeCapability.SM120", "ComputeCapability.SM121"),
}


def cache_root() -> Path:
    """srexport's cache folder: $XDG_CACHE_HOME/srexport, else ~/.cache/srexport."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srexport"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def cuda_available() -> bool:
    return torch.cuda.is_available()


def require_cuda() -> None:
    if not cuda_available():
        raise MissingBackend(NO_CUDA)


def gpu_info() -> dict | None:
    """The current GPU's name and compute capability, or None without one."""
    if not cuda_available():
        return None
    device = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(device)
    return {"name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


def parse_compute_capabilities(values) -> tuple[str, ...]:
    """"8.6,8.9" / ["86", "sm_89", "12.0"] -> ("8.6", "8.9", "12.0"), each one TensorRT-RTX can target."""
    if isinstance(values, str):
        values = values.split(",")
    found = []
    for value in values:
        text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
        match = re.fullmatch(r"(\d+)\.(\d)", text) or re.fullmatch(r"(\d+)(\d)", text)
        cc = f"{int(match[1])}.{match[2]}" if match else text
        if cc not in RTX_COMPUTE_CAPABILITIES:
            raise SRExportError(f"compute capability {value!r} is not one TensorRT-RTX builds for "
                                f"({', '.join(RTX_COMPUTE_CAPABILITIES)})")
        if cc not in found:
            found.append(cc)
    if not found:
        raise SRExportError("no compute capability given")
    return tuple(found)


class Flavour:
    """One installed engine flavour: its bindings and what differs from the others."""

    name = TENSORRT
    module_names: tuple[str, ...] = ("tensorrt",)
    # LR squares of the two probe builds that size profiles by memory (profiles.py). TensorRT times
    # kernels on the GPU while it builds, so its probes stay small.
    probe_sides = (64, 128)
    probe_workspace_gib: float | None = None  # None: the engine's own workspace

    def __init__(self, trt, module_name: str):
        self.trt, self.module_name = trt, module_name
        self.version = str(trt.__version__)
        self.major = int(self.version.split(".")[0])

    @classmethod
    def load(cls) -> Flavour:
        for module_name in cls.module_names:
            try:
                return cls(importlib.import_module(module_name), module_name)
            except (ImportError, OSError):  # OSError: the bindings are there but their libraries are not
                continue
        raise MissingBackend(INSTALL_HINTS[cls.name])

    @property
    def label(self) -> str:
        return f"{DISPLAY[self.name]} {self.version}"

    @property
    def cuda_flavour(self) -> str | None:
        """"cu12" / "cu13" from the bindings' distribution name: plans differ between the two."""
        for dist in importlib.metadata.packages_distributions().get(self.module_name, []):
            match = re.search(r"cu(\d+)", dist)
            if match:
                return f"cu{match[1]}"
        return None

    def create_network(self, builder):
        trt = self.trt
        if self.major < 11:
            return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        return builder.create_network()  # always strongly typed; the flag is 0 and ignored

    # --- what a plan is built for -------------------------------------------------------------

    def target(self, compute_capabilities=None) -> dict:
        """What the plan will run on: TensorRT builds for the GPU present (it needs one)."""
        if compute_capabilities:
            raise SRExportError(f"--compute-capability applies to TensorRT-RTX only; {self.label} builds for "
                                "the GPU it runs on")
        require_cuda()
        return {"gpu": gpu_info()}

    def configure(self, config, target: dict, cache_dir: Path | None) -> dict:
        """Flavour settings on the builder config; returns what to record of them (the timing cache)."""
        from .timing import attach_timing_cache

        cache_file = self.timing_cache_path(cache_dir, target["gpu"])
        attach_timing_cache(config, cache_file)
        return {"timing_cache": str(cache_file)}

    def after_build(self, config, settings: dict) -> None:
        from .timing import save_timing_cache

        save_timing_cache(config, Path(settings["timing_cache"]))

    def timing_cache_path(self, folder, gpu: dict) -> Path:
        """One timing cache per TensorRT version and GPU: TensorRT rejects a cache from another device."""
        folder = Path(folder) if folder is not None else cache_root() / "timing"
        return folder / f"tensorrt-{self.version}_{_slug(gpu['name'])}_sm{gpu['compute_capability'].replace('.', '')}.cache"

    # --- running -------------------------------------------------------------------------------

    def check_runnable(self, sidecar: dict, where) -> dict:
        """The GPU that will run an engine, or MissingBackend / SRExportError saying why it cannot."""
        require_cuda()
        return gpu_info()

    def execution_context(self, engine, gpu: dict, cache_dir: Path | None):
        return engine.create_execution_context(), None

    def save_runtime_cache(self, state) -> None:
        """Nothing to save: TensorRT's kernels are all chosen at build time."""


class TensorRTRTX(Flavour):
    name = TENSORRT_RTX
    module_names = ("tensorrt_rtx", "tensorrt_rtx_bindings")
    probe_sides = (128, 256)  # ahead-of-time builds allocate nothing, so probes can be large
    probe_workspace_gib = 64.0  # TensorRT-RTX's default pool: a probe must not fail where the profile would fit

    def create_network(self, builder):
        return builder.create_network()  # every TensorRT-RTX network is strongly typed

    def target(self, compute_capabilities=None) -> dict:
        """The compute capabilities asked for; else the GPU present if TensorRT-RTX runs on it; else
        the portable set. No GPU is needed to build."""
        if compute_capabilities:
            return {"compute_capabilities": list(parse_compute_capabilities(compute_capabilities)), "gpu": None}
        gpu = gpu_info()
        if gpu and gpu["compute_capability"] in RTX_COMPUTE_CAPABILITIES:
            return {"compute_capabilities": [gpu["compute_capability"]], "gpu": gpu}
        return {"compute_capabilities": list(RTX_PORTABLE), "gpu": None}

    def configure(self, config, target: dict, cache_dir: Path | None) -> dict:
        trt, ccs = self.trt, target["compute_capabilities"]
        enums = {"7.5": trt.ComputeCapability.SM75, "8.0": trt.ComputeCapability.SM80,
                 "8.6": trt.ComputeCapability.SM86, "8.9": trt.ComputeCapability.SM89,
                 "12.0": trt.ComputeCapability.SM120, "12.1": trt.ComputeCapability.SM121}
        config.num_compute_capabilities = len(ccs)
        for i, cc in enumerate(ccs):
            if not config.set_compute_capability(enums[cc], i):
                raise SRExportError(f"{self.label} refused compute capability {cc}")
        return {}

    def after_build(self, config, settings: dict) -> None:
        """No timing cache: TensorRT-RTX chooses kernels at run time (the runtime cache keeps them)."""

    def check_runnable(self, sidecar: dict, where) -> dict:
        require_cuda()
        gpu = gpu_info()
        cc = gpu["compute_capability"]
        if cc not in RTX_COMPUTE_CAPABILITIES:
            raise MissingBackend(f"{where}: {gpu['name']} (compute capability {cc}) cannot run TensorRT-RTX engines "
                                 f"(it runs on RTX-class GPUs: {', '.join(RTX_COMPUTE_CAPABILITIES)}); build a "
                                 "TensorRT 10/11 engine for this GPU instead (pip install 'srexport[tensorrt]')")
        built_for = sidecar.get("compute_capabilities") or []
        if built_for and cc not in built_for:
            raise SRExportError(f"{where}: was built for compute capabilities {', '.join(built_for)}, this GPU is "
                                f"{cc} ({gpu['name']}); rebuild it for {cc}")
        return gpu

    def runtime_cache_path(self, folder, gpu: dict) -> Path:
        """One runtime cache per TensorRT-RTX version and GPU: it holds that GPU's JIT-compiled kernels."""
        folder = Path(folder) if folder is not None else cache_root() / "runtime"
        return folder / f"tensorrt-rtx-{self.version}_{_slug(gpu['name'])}_sm{gpu['compute_capability'].replace('.', '')}.cache"

    def execution_context(self, engine, gpu: dict, cache_dir: Path | None):
        """A context with the runtime cache for this GPU loaded and the eager dynamic-shape strategy."""
        trt = self.trt
        config = engine.create_runtime_config()
        config.dynamic_shapes_kernel_specialization_strategy = trt.DynamicShapesKernelSpecializationStrategy.EAGER
        cache = config.create_runtime_cache()
        cache_file = self.runtime_cache_path(cache_dir, gpu)
        if cache_file.is_file():
            try:
                cache.deserialize(cache_file.read_bytes())  # False (ignored) for another driver or version
            except (OSError, RuntimeError):
                pass
        config.set_runtime_cache(cache)
        return engine.create_execution_context(config), (config, cache, cache_file)

    def save_runtime_cache(self, state) -> None:
        if state is None:
            return
        from ..atomic import write_bytes

        _config, cache, cache_file = state
        try:  # atomic, so concurrent runs never leave a torn file; the last writer wins
            write_bytes(cache_file, bytes(memoryview(cache.serialize())), force=True)
        except OSError:
            pass  # a cache that cannot be saved costs compile time at the next start, nothing else


_CLASSES = {TENSORRT: Flavour, TENSORRT_RTX: TensorRTRTX}


def load_flavour(name: str | None = None) -> Flavour:
    """The named flavour, or for None / "auto": TensorRT where it is installed, else TensorRT-RTX."""
    if name in (None, "auto"):
        for cls in _CLASSES.values():
            try:
                return cls.load()
            except MissingBackend:
                continue
        raise MissingBackend(f"{INSTALL_HINTS[TENSORRT]}; or {INSTALL_HINTS[TENSORRT_RTX]}")
    if name not in _CLASSES:
        raise SRExportError(f"engine flavour must be one of auto, {', '.join(FLAVOURS)}; got {name!r}")
    return _CLASSES[name].load()


def installed_flavours() -> list[str]:
    found = []
    for name, cls in _CLASSES.items():
        try:
            cls.load()
        except MissingBackend:
            continue
        found.append(name)
    return found
