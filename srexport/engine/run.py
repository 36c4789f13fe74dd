"""Running and verifying engines of every flavour: `TensorRTRunner`, `layer_precisions`, `verify_engine`.

An engine runs only where its flavour can run it: TensorRT on the GPU (and TensorRT version) it was
built for, TensorRT-RTX on an RTX-class GPU among the compute capabilities it was built for. Where
that is not the case the runner refuses in one line before loading anything.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..atomic import write_text
from ..errors import SRExportError, VerificationFailed
from ..fp16 import FP16_MIN_PSNR_DB
from ..onnx_export import FP32_MAX_ABS
from ..verify import VerifyResult, compare, real_inputs
from .build import read_sidecar, sidecar_path, target_label
from .flavours import load_flavour
from .inspect import precisions_from_inspector_json
from .logger import errors_since, logger_for

MIN_FP16_SHARE = 0.5  # of the compute layers of an --fp16 engine, as the inspector reports them
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype_names(trt) -> dict:
    return {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.BF16: "bfloat16"}


def _io_names(trt, engine, mode) -> list[str]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return [n for n in names if engine.get_tensor_mode(n) == mode]


def engine_io(trt, engine) -> dict:
    names = _dtype_names(trt)

    def tensors(mode):
        return [{"name": n, "dtype": names.get(engine.get_tensor_dtype(n), "other")} for n in _io_names(trt, engine, mode)]

    return {"inputs": tensors(trt.TensorIOMode.INPUT), "outputs": tensors(trt.TensorIOMode.OUTPUT)}


class TensorRTRunner:
    """ndarray (N, 1, H, W) -> ndarray (N, 1, sH, sW) through an engine of any flavour, with torch
    CUDA tensors as buffers. TensorRT-RTX engines keep their JIT-compiled kernels in a runtime
    cache (saved by `close`, and at exit of a `with` block)."""

    def __init__(self, engine_path: str | os.PathLike, *, cache_dir=None):
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise SRExportError(f"{self.path}: no such file")
        self.sidecar = read_sidecar(self.path) or {}
        self.flavour = load_flavour(self.sidecar.get("flavour", "tensorrt"))
        trt = self.flavour.trt
        gpu = self.flavour.check_runnable(self.sidecar, self.path)
        self._logger = logger_for(trt)
        mark = self._logger.mark()
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        if (self.sidecar.get("build_options") or {}).get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # the plan carries its own lean runtime
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise SRExportError(
                f"{self.path}: {self.flavour.label} cannot load this engine (built with "
                f"{self.sidecar.get('tensorrt_version', '?')} for {target_label(self.sidecar)}; engines run only on "
                f"the version and GPUs they were built for): {errors_since(self._logger, mark) or 'no error reported'}")
        io = engine_io(trt, self.engine)
        if len(io["inputs"]) != 1 or len(io["outputs"]) != 1:
            raise SRExportError(f"{self.path}: expected one input and one output, got {io}")
        (self.input_name, in_dtype), (self.output_name, out_dtype) = (
            (t["name"], t["dtype"]) for t in (io["inputs"][0], io["outputs"][0]))
        if in_dtype not in _TORCH_DTYPES or out_dtype not in _TORCH_DTYPES:
            raise SRExportError(f"{self.path}: unsupported engine I/O types {in_dtype} -> {out_dtype}")
        self.input_dtype, self.output_dtype = _TORCH_DTYPES[in_dtype], _TORCH_DTYPES[out_dtype]
        self.context, self._cache_state = self.flavour.execution_context(self.engine, gpu, cache_dir)
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
                raise SRExportError(f"{self.path}: {self.flavour.label} failed to run the engine on {tuple(inp.shape)}")
            self.stream.synchronize()
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.flavour.save_runtime_cache(self._cache_state)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TorchCudaFP32Runner:
    """PyTorch FP32 on the GPU with TF32 off: the reference an FP32 engine must match to 1e-4.
    The TF32 switches are process-wide, so they are set only for the duration of each call."""

    def __init__(self, model: nn.Module):
        if not torch.cuda.is_available():
            raise SRExportError("PyTorch sees no CUDA GPU for the reference run")
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


def layer_precisions(runner: TensorRTRunner) -> dict:
    """`precisions_from_inspector_json` of a loaded engine. With dynamic shapes the inspector prints
    "N/A due to dynamic shapes" for every tensor unless its context has input shapes set, so a
    context is made at the profile's opt shape."""
    trt, engine = runner.flavour.trt, runner.engine
    context = runner.context
    for name in _io_names(trt, engine, trt.TensorIOMode.INPUT):
        context.set_input_shape(name, tuple(engine.get_tensor_profile_shape(name, 0)[1]))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return precisions_from_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def verification_sizes(profile: dict) -> list[tuple[int, int, int]]:
    """(N, H, W) at the profile's min, opt and max, and one odd size inside it."""
    (bn, _, hn, wn), (bo, _, ho, wo), (bx, _, hx, wx) = profile["min"], profile["opt"], profile["max"]

    def odd(lo, opt, hi):
        return min(max((opt * 3 // 4) | 1, lo), hi)

    return [(bn, hn, wn), (bo, ho, wo), (bx, hx, wx), (bn, odd(hn, ho, hx), odd(wn, wo, wx))]


def verify_engine(engine_path: str | os.PathLike, reference: nn.Module | Callable[[np.ndarray], np.ndarray], *,
                  sizes: Sequence[Sequence[int]] | None = None, inputs: Sequence[np.ndarray] | None = None,
                  record: bool = True, cache_dir=None) -> VerifyResult:
    """The engine against `reference` (a network: PyTorch FP32 on the GPU, TF32 off; or any runner,
    such as the FP32 ONNX file in ONNX Runtime), always checking for NaN/Inf, and an FP16 engine's
    share of FP16 layers as the inspector reports them (>= 50 %).

    FP32 engines must match to max abs <= 1e-4, FP16 ones to a difference PSNR >= 50 dB (the
    sidecar's precision says which). `inputs` win over `sizes`; by default the sizes are
    `verification_sizes` of the sidecar's profile. With `record`, the result and the inspector's
    layer precisions are stored in the sidecar (the cache key covers neither).
    """
    engine_path = Path(engine_path)
    sidecar = read_sidecar(engine_path)
    if sidecar is None or not isinstance(sidecar.get("profile"), dict):
        raise SRExportError(f"{engine_path}: no readable sidecar with a profile ({sidecar_path(engine_path)})")
    fp16 = sidecar.get("precision") == "fp16"
    if inputs is None:
        inputs = real_inputs(sizes or verification_sizes(sidecar["profile"]))
    with TensorRTRunner(engine_path, cache_dir=cache_dir) as candidate:  # first: it says why it cannot run
        if isinstance(reference, nn.Module):
            reference, reference_name = TorchCudaFP32Runner(reference), "pytorch-fp32-cuda"
        else:
            reference_name = getattr(reference, "name", "reference")
        result = compare(reference, candidate, inputs, reference_name=reference_name,
                         candidate_name=f"{candidate.flavour.name}-{'fp16' if fp16 else 'fp32'}",
                         max_abs=None if fp16 else FP32_MAX_ABS, min_psnr_db=FP16_MIN_PSNR_DB if fp16 else None)
        precisions = layer_precisions(candidate)
    share = precisions["fp16_share"]
    if fp16:
        result.note = f"FP16 share of compute layers (engine inspector): {share!r}"
    if record:
        sidecar.update(verification=result.to_dict(), layer_precisions=precisions)
        write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2), force=True)
    if fp16 and (share is None or share < MIN_FP16_SHARE):
        raise VerificationFailed(f"{engine_path}: FP16 engine runs only {share!r} of its compute layers in FP16 "
                                 f"(engine inspector; at least {MIN_FP16_SHARE:.0%} expected)")
    return result
