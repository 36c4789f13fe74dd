"""Backends that run a network on (N, 1, H, W) float arrays: PyTorch and ONNX Runtime.

Each runner is a callable ndarray -> ndarray, so `verify.compare` and the CLI treat them alike.
onnxruntime is imported only when an ONNX runner is made.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .errors import SRExportError


class TorchRunner:
    def __init__(self, model: nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype))
        return y.float().cpu().numpy()


class OnnxRuntimeRunner:
    """ONNX Runtime on the CPU. `exact_fp16=True` disables graph optimizations: with them ORT fuses
    away the casts it inserts around FP16 ops (it has no FP16 CPU kernels) and computes in FP32."""

    def __init__(self, model: str | os.PathLike | bytes, *, exact_fp16: bool = False, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if exact_fp16:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            where = "ONNX model" if isinstance(model, bytes) else str(model)
            raise SRExportError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.session.run(None, {self.input_name: x.astype(self.input_dtype)})[0]
        return y.astype(np.float32)
