"""Backends that run a network on (N, 1, H, W) float arrays: PyTorch, ONNX Runtime, TensorRT and
srexport's own fused CPU kernel (`native`, for FSRCNN and ESPCN; see native.py).

Each runner is a callable ndarray -> ndarray with `.scale` (the upscaling factor, None when it is
not known) and `.name`, so `verify.compare`, tiling, images, video and the benchmark treat them
alike. `open_runner` picks and opens one; onnxruntime and tensorrt are imported only when a
runner of theirs is made.

The tuned ONNX Runtime CPU path (`OnnxRuntimeRunner(..., tuned=True)`, what `auto` picks without
a GPU) differs from a default session in:
  * the graph: `optimize.optimize_onnx` rewrites ConvTranspose as Conv (+ DepthToSpace), a
    uniform PRelu as LeakyRelu (fused into the Conv), a per-channel PRelu as multi-threaded
    elementwise ops (ONNX Runtime's PRelu kernel runs on one thread) and narrow convolutions (1 output channel,
    padded to 16 by ONNX Runtime's NCHWc kernels) as a row Conv plus a one-hot row sum; each
    rewrite is checked to stay within 1e-5 of the original graph before it is used;
  * threads = physical cores, one inter-op thread, sequential execution, denormals flushed to zero.

Without a GPU, `auto` first tries the fused kernel (`native.NativeRunner`): it applies to a plain
chain of Convs and activations ending in a ConvTranspose or a sub-pixel Conv (FSRCNN, FSRCNN-s,
ESPCN), runs FSRCNN 3-4x and ESPCN 1.1-1.2x faster than the tuned session with AVX-512, and is used
only when a C compiler built it here with vectors wide enough to win (`native.auto_choice`) and
its output matched ONNX Runtime's within 1e-5; anything else falls through to the tuned session.

`precision="bf16"` is for CPUs with bf16 dot products (AVX512_BF16, AMX-BF16; refused elsewhere,
`native.bf16_refusal`): the fused kernel in bf16 where it applies, else OpenVINO with its bf16
hint (`openvino_runner.py`), each checked against FP32 on real images (>= 50 dB) before use.
`auto` stays FP32 unless bf16 (or fp16) is asked for.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import MissingBackend, SRExportError, VerificationFailed

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "native", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16")


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/physical_package_id") as f:
                package = f.read().strip()
            with open(f"{base}/core_id") as f:
                core = f.read().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


class TorchRunner:
    def __init__(self, model: nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype
        self.scale = getattr(model, "scale", None)
        self.name = f"torch-{torch.device(device).type}-{'fp16' if dtype == torch.float16 else 'fp32'}"
        self.info = {"backend": "torch", "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                     "threads": torch.get_num_threads()}

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype))
        return y.float().cpu().numpy()


class OnnxRuntimeRunner:
    """ONNX Runtime on the CPU. `exact_fp16=True` disables graph optimizations: with them ORT fuses
    away the casts it inserts around FP16 ops (it has no FP16 CPU kernels) and computes in FP32.

    `tuned=True` is the fast CPU path (see the module docstring); `threads` (0 or None: ORT's
    default, physical cores) sets the intra-op threads; `spin=False` stops idle worker threads
    from spinning, which leaves CPU to other threads of a pipeline (video decode/encode)."""

    def __init__(self, model: str | os.PathLike | bytes, *, exact_fp16: bool = False, threads: int | None = 0,
                 tuned: bool = False, spin: bool = True, optimize_check: bool = True):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        self.rewrites: list[str] = []
        if exact_fp16:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if tuned:
            threads = threads or physical_cores()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.inter_op_num_threads = 1
            opts.enable_cpu_mem_arena = True
            opts.enable_mem_pattern = True
            opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        where = "ONNX model" if isinstance(model, bytes) else str(model)
        source = model if isinstance(model, bytes) else str(model)
        if tuned:
            from .optimize import optimize_onnx

            fast, report = optimize_onnx(_load_proto(model, where), check=optimize_check)
            if report.applied:
                source = fast.SerializeToString()
                self.rewrites = list(report.rewrites)
            elif report.rewrites:  # rewrites existed but did not pass the 1e-5 check
                warnings.warn(f"{where}: graph rewrites not used: {report.reason}", stacklevel=2)
            if not report.nchwc:
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                self.rewrites.append("per-channel PRelu: ONNX Runtime's NCHWc layout off (ORT_ENABLE_EXTENDED)")
        try:
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise SRExportError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.scale = int(self.metadata["scale"])
        except (KeyError, ValueError):
            self.scale = None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        fp16_graph = self.input_dtype == np.float16 or any(
            "float16" in v.type for v in (*self.session.get_inputs(), *self.session.get_outputs()))
        kind = "exact-fp16" if exact_fp16 else "tuned" if tuned else "default"
        self.name = f"onnxruntime-cpu-{kind}"
        self.info = {"backend": "onnxruntime", "device": "cpu", "session": kind,
                     "threads": opts.intra_op_num_threads or physical_cores(), "rewrites": list(self.rewrites),
                     "fp16_io": fp16_graph, "onnxruntime": ort.__version__}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.input_dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.input_dtype)
        y = self.session.run(None, {self.input_name: x})[0]
        return y if y.dtype == np.float32 else y.astype(np.float32)


def _load_proto(model, where: str):
    import onnx

    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        return onnx.load(str(model))
    except Exception as e:
        raise SRExportError(f"{where}: not a valid ONNX file ({str(e).splitlines()[0][:200]})") from None


class _NamedRunner:
    """Gives a runner without them (TensorRTRunner) `.scale`, `.name` and `.info`."""

    def __init__(self, inner, *, scale: int | None, name: str, info: dict):
        self.inner, self.scale, self.name, self.info = inner, scale, name, info

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.inner(x)

    @property
    def max_input_hw(self):
        return getattr(self, "_max_hw", None)


# --- availability -----------------------------------------------------------------------------

def tensorrt_available() -> bool:
    """An engine flavour is installed and this machine's GPU can run its engines."""
    from .engine import installed_flavours, load_flavour

    if not torch.cuda.is_available():
        return False
    for name in installed_flavours():
        try:
            load_flavour(name).check_runnable({}, "this GPU")
        except SRExportError:
            continue
        return True
    return False


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# --- opening a runner -------------------------------------------------------------------------

def open_runner(*, model: nn.Module | None = None, onnx_path: str | os.PathLike | None = None,
                engine_path: str | os.PathLike | None = None, backend: str = "auto", precision: str = "fp32",
                threads: int | None = None, spin: bool = True, build_engine: bool = True):
    """A runner for whichever of `model` (a network from `checkpoint.resolve_network`), `onnx_path`
    and `engine_path` are given.

    backend "auto": TensorRT when tensorrt imports, a CUDA GPU exists and an engine is given or can
    be built (into ~/.cache/srexport/engines, from `onnx_path` or an ONNX export of `model`), else
    the fused CPU kernel where the network is a chain it runs (FSRCNN, ESPCN), else the tuned ONNX
    Runtime CPU path, else PyTorch. "torch", "onnxruntime", "tensorrt" and "native" force one.
    precision "fp16": torch half on a CUDA GPU, an FP16 ONNX graph (FP32 I/O) for ONNX Runtime or
    an FP16 engine for TensorRT (an FP16 engine file already is one). "bf16": a CPU run (see the
    module docstring) on auto, native or openvino; "openvino" runs fp32 or bf16.
    """
    if backend not in BACKENDS:
        raise SRExportError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise SRExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if model is None and onnx_path is None and engine_path is None:
        raise SRExportError("nothing to run: give a network (--model/--checkpoint), --onnx or --engine")
    if onnx_path is not None and not Path(onnx_path).is_file():
        raise SRExportError(f"{onnx_path}: no such file")
    if engine_path is not None and not Path(engine_path).is_file():
        raise SRExportError(f"{engine_path}: no such file")
    runner = _open_runner(model, onnx_path, engine_path, backend, precision, threads, spin, build_engine)
    if getattr(runner, "arch", None) is None:
        runner.arch = model if model is not None else _architecture(onnx_path, engine_path)
    return runner


def _architecture(onnx_path, engine_path) -> nn.Module | None:
    """The (untrained) network an ONNX file or engine records: tiling needs its layers."""
    from .checkpoint import ModelRecord

    try:
        if onnx_path is not None:
            from .onnx_export import record_from_onnx

            return record_from_onnx(onnx_path)[0].build(str(onnx_path))
        if engine_path is not None:
            from .engine import read_sidecar

            record = (read_sidecar(engine_path) or {}).get("record")
            if record:
                return ModelRecord.from_json(json.dumps(record), str(engine_path)).build(str(engine_path))
    except SRExportError:
        return None
    return None


def _open_runner(model, onnx_path, engine_path, backend, precision, threads, spin, build_engine):
    if precision == "bf16" or backend == "openvino":
        return _cpu_reduced_runner(model, onnx_path, engine_path, backend, precision, threads)
    if backend == "tensorrt":
        return _tensorrt_runner(model, onnx_path, engine_path, precision, build_engine)
    if backend == "auto" and tensorrt_available() and (engine_path is not None or (build_engine and (
            model is not None or onnx_path is not None))):
        try:
            return _tensorrt_runner(model, onnx_path, engine_path, precision, build_engine)
        except SRExportError as e:
            warnings.warn(f"TensorRT not used ({e}); falling back to ONNX Runtime", stacklevel=2)
    if backend == "torch":
        return _torch_runner(model, precision)
    graph = functools.cache(  # (proto, where), loaded or exported once for whichever backend tries it first
        lambda: _onnx_proto(model, onnx_path or (_engine_onnx(engine_path) if model is None else None)))

    if backend == "native" or (backend == "auto" and precision == "fp32"):
        from .native import CheckFailed

        try:
            return _native_runner(graph, precision, threads, for_auto=backend == "auto")
        except SRExportError as e:
            if backend == "native":
                raise
            if isinstance(e, CheckFailed):  # it applies and was built: say why it is not used
                warnings.warn(f"fused CPU kernel not used ({e}); falling back to ONNX Runtime", stacklevel=2)
    if backend == "onnxruntime" or (backend == "auto" and onnxruntime_available()):
        try:
            return _ort_runner(model, graph, precision, threads, spin, tuned=True)
        except SRExportError:
            if backend == "onnxruntime" or model is None:
                raise
    if model is None:
        raise MissingBackend(f"{engine_path}: TensorRT or a CUDA GPU is missing and no ONNX file or network is "
                             "available to run instead")
    return _torch_runner(model, precision)


def _cpu_reduced_runner(model, onnx_path, engine_path, backend, precision, threads):
    """--precision bf16 (any backend) and --backend openvino (any precision)."""
    from .native import CheckFailed, bf16_refusal

    if precision == "fp16":
        raise SRExportError("--backend openvino runs fp32 or bf16 here (fp16 is for ONNX Runtime's FP16 graph "
                            "and TensorRT)")
    if backend not in ("auto", "native", "openvino"):
        raise SRExportError(f"--precision bf16 is for CPU runs on --backend auto, native or openvino, not {backend} "
                            "(ONNX Runtime has no bf16 CPU convolutions; on a GPU use --precision fp16)")
    if precision == "bf16" and bf16_refusal():
        raise SRExportError(bf16_refusal())
    graph = functools.cache(
        lambda: _onnx_proto(model, onnx_path or (_engine_onnx(engine_path) if model is None else None)))
    if backend in ("auto", "native"):
        try:
            return _native_runner(graph, precision, threads, for_auto=backend == "auto")
        except SRExportError as e:
            if backend == "native":
                raise
            if isinstance(e, CheckFailed):
                warnings.warn(f"fused CPU kernel not used ({e}); trying OpenVINO", stacklevel=3)
    return _openvino_runner(model, graph, precision, threads)


def _openvino_runner(model, graph, precision: str, threads):
    from .openvino_runner import OpenVINORunner

    proto, where = graph()
    runner = OpenVINORunner(proto, precision=precision, threads=threads, where=where, tuned=True)
    if runner.scale is None and model is not None:
        runner.scale = model.scale
    runner.info["source"] = where
    return runner


def _torch_runner(model, precision: str) -> TorchRunner:
    if model is None:
        raise SRExportError("--backend torch needs the network itself (--model or --checkpoint), "
                            "not an ONNX file or engine")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "fp16" and device == "cpu":
        raise SRExportError("--backend torch with fp16 needs a CUDA GPU (PyTorch has no fast FP16 CPU convolutions)")
    return TorchRunner(model, device=device, dtype=torch.float16 if precision == "fp16" else torch.float32)


def _onnx_proto(model, onnx_path):
    """(ONNX ModelProto, where) from a file or, failing that, an in-memory export of `model`."""
    if onnx_path is not None:
        from .onnx_export import load_onnx

        return load_onnx(onnx_path), str(onnx_path)
    from .checkpoint import ModelRecord

    if getattr(model, "network_name", None) is None:
        raise SRExportError("the model is not an srexport network; give an ONNX file")
    record = getattr(model, "record", None) or ModelRecord.for_model(model)
    return exported_onnx(model, record), f"{model.network_name} x{model.scale}"


def exported_onnx(model: nn.Module, record) -> "onnx.ModelProto":  # noqa: F821
    """`onnx_export.onnx_from_model(model, record)`, kept in the cache folder: the export took 3.7 of
    the 6 s of a one-image `srexport upscale --model espcn` (2 cores). The file name hashes
    everything the export depends on: weights, record, srexport's own source (the exporter, the
    network and the modules it builds on), and the torch, onnx and onnxscript versions. A cache
    that cannot be written is skipped."""
    import hashlib

    import onnx
    import onnxscript

    from . import onnx_export
    from .atomic import write_bytes
    from .checkpoint import weights_sha256

    key = hashlib.sha256()
    for part in (weights_sha256(model), record.to_json(), torch.__version__, onnx.__version__,
                 onnxscript.__version__):
        key.update(part.encode() + b"\0")
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        key.update(source.read_bytes())
    path = cache_dir() / "onnx" / f"{model.network_name}_x{model.scale}_{key.hexdigest()[:24]}.onnx"
    if path.is_file():
        try:
            return onnx.load(str(path))
        except Exception:  # noqa: BLE001 - a damaged cache file (protobuf DecodeError): export again
            pass
    proto = onnx_export.onnx_from_model(model, record)
    try:
        write_bytes(path, proto.SerializeToString(), force=True)
    except (OSError, SRExportError):
        pass
    return proto


def _ort_runner(model, graph, precision: str, threads, spin: bool, *, tuned: bool) -> OnnxRuntimeRunner:
    if not onnxruntime_available():
        raise MissingBackend("onnxruntime is not installed: pip install onnxruntime")
    proto, where = graph()
    if precision == "fp16":
        from .fp16 import fp16_from_onnx

        proto = fp16_from_onnx(proto, io="fp32")
        runner = OnnxRuntimeRunner(proto.SerializeToString(), threads=threads or 0, spin=spin)
        runner.name = "onnxruntime-cpu-fp16-graph"
        runner.info["session"] = "fp16 graph (FP32 I/O), default session"
    else:
        runner = OnnxRuntimeRunner(proto.SerializeToString(), threads=threads, spin=spin, tuned=tuned)
    if runner.scale is None and model is not None:
        runner.scale = model.scale
    runner.info["source"] = where
    return runner


def _native_runner(graph, precision: str, threads, *, for_auto: bool = False):
    from .native import NativeRunner, NotAChain

    if precision not in ("fp32", "bf16"):
        raise SRExportError("--backend native computes in fp32 or bf16")
    if not onnxruntime_available():  # each session checks its output against ONNX Runtime's
        raise MissingBackend("--backend native needs onnxruntime to check its output: pip install onnxruntime")
    proto, where = graph()
    try:
        runner = NativeRunner(proto, threads=threads, where=where, for_auto=for_auto, precision=precision)
    except NotAChain as e:
        raise NotAChain(f"{e} (--backend native runs FSRCNN and ESPCN-style chains; use auto or onnxruntime)") \
            from None
    runner.info["source"] = where
    return runner


def _engine_onnx(engine_path):
    """The ONNX file an engine's sidecar names, to run on the CPU when TensorRT cannot be used."""
    from .engine import read_sidecar

    sidecar = read_sidecar(engine_path) or {}
    onnx_file = sidecar.get("onnx_path")
    if onnx_file and Path(onnx_file).is_file():
        return onnx_file
    raise MissingBackend(f"{engine_path}: TensorRT or a CUDA GPU is missing here and the engine's sidecar names "
                         "no ONNX file that exists to run on the CPU instead (pass --onnx)")


def cache_dir() -> Path:
    """srexport's cache folder: $XDG_CACHE_HOME/srexport, else ~/.cache/srexport."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srexport"


def engine_cache_dir() -> Path:
    return cache_dir() / "engines"


def _tensorrt_runner(model, onnx_path, engine_path, precision: str, build_engine: bool):
    from . import engine as eng

    if engine_path is None:
        if not build_engine:
            raise SRExportError("the TensorRT backend needs an engine file (or allow building one)")
        flavour = eng.load_flavour()
        flavour.check_runnable({}, "this machine")  # before building what could not run here
        engine_path = _cached_engine(model, onnx_path, precision, flavour)
    sidecar = eng.read_sidecar(engine_path) or {}
    inner = eng.TensorRTRunner(engine_path)
    scale = sidecar.get("scale") or (model.scale if model is not None else None)
    runner = _NamedRunner(inner, scale=scale, name=f"{inner.flavour.name}-{sidecar.get('precision', precision)}",
                          info={"backend": inner.flavour.name, "engine": str(engine_path),
                                "tensorrt_version": sidecar.get("tensorrt_version"),
                                "built_for": eng.target_label(sidecar), "profile": sidecar.get("profile")})
    profile_max = (sidecar.get("profile") or {}).get("max")
    if profile_max:
        runner._max_hw = (int(profile_max[2]), int(profile_max[3]))
    return runner


def _cached_engine(model, onnx_path, precision: str, flavour) -> Path:
    """Build (or reuse) an engine for this network and precision in the engine cache folder, each
    artifact verified as `srexport build` verifies it: the FP16 graph with FP16 rounding (>= 50 dB),
    the engine against the network (PyTorch on the GPU, or the FP32 ONNX file run by ONNX Runtime
    when only that was given)."""
    import hashlib

    from . import engine as eng
    from .atomic import write_bytes

    proto, _ = _onnx_proto(model, onnx_path)
    reference = model if model is not None else OnnxRuntimeRunner(proto.SerializeToString())
    if precision == "fp16":
        from .build import FP16_SIZES
        from .fp16 import FP16_MIN_PSNR_DB, fp16_emulation_graph, fp16_from_onnx
        from .verify import compare, real_inputs

        proto = fp16_from_onnx(proto, io="fp32")
        checked = compare(reference if model is None else TorchRunner(model),
                          OnnxRuntimeRunner(fp16_emulation_graph(proto).SerializeToString(), exact_fp16=True),
                          real_inputs(FP16_SIZES), candidate_name="onnx-fp16 (FP16-rounded tensors)",
                          min_psnr_db=FP16_MIN_PSNR_DB)
        if not checked:
            raise VerificationFailed(f"{onnx_path or model.record.network}: the FP16 graph fails its check:\n{checked}")
    data = proto.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = engine_cache_dir()
    onnx_file = folder / f"{digest}.onnx"
    if not onnx_file.is_file() or eng.sha256_file(onnx_file)[:16] != digest:
        write_bytes(onnx_file, data, force=True)
    engine_file = folder / f"{digest}_{precision}.{flavour.name}.engine"
    try:
        built = eng.engine_from_onnx(onnx_file, engine_file, flavour=flavour)
    except SRExportError as e:
        if "already exists" not in str(e):
            raise
        built = eng.engine_from_onnx(onnx_file, engine_file, flavour=flavour, force=True)  # another GPU or version
    if not built.reused or not (built.sidecar.get("verification") or {}).get("passed"):
        result = eng.verify_engine(engine_file, reference)
        if not result:
            raise VerificationFailed(f"{engine_file}: engine verification failed:\n{result}")
    return engine_file


def open_runner_for(network: str | None = None, scale: int | None = None, *, checkpoint=None, onnx=None,
                    engine=None, backend: str = "auto", precision: str = "fp32", threads: int | None = None,
                    random_weights: bool = False, spin: bool = True):
    """What the CLI calls: `--model NAME [--scale S] | --checkpoint P | --onnx P | --engine P`
    and `--backend`, resolved to one runner whose `.scale` is checked against `scale`."""
    model = None
    if network is not None or checkpoint is not None:
        from .checkpoint import resolve_network

        model, record = resolve_network(network, scale, checkpoint=checkpoint, random_weights=random_weights)
        model.record = record
    elif onnx is None and engine is None:
        raise SRExportError("give --model NAME, --checkpoint, --onnx or --engine")
    runner = open_runner(model=model, onnx_path=onnx, engine_path=engine, backend=backend,
                         precision=precision, threads=threads, spin=spin)
    if runner.scale is None:
        if scale is None:
            raise SRExportError(f"{onnx or engine}: the artifact does not record its scale; pass --scale")
        runner.scale = scale
    elif scale is not None and runner.scale != scale:
        raise SRExportError(f"{onnx or engine or checkpoint or network}: is a x{runner.scale} network, --scale says x{scale}")
    return runner
