"""OpenVINO's CPU plugin as a runner (`--backend openvino`, and `auto` with `--precision bf16` for the
networks the fused kernel does not run).

OpenVINO is what many people run these networks with on a CPU instead (directly, or through
vs-mlrt's `ov` plugin), and on a CPU with bf16 dot products its default is to compute in bf16.
`precision`:
  * "fp32": INFERENCE_PRECISION_HINT f32, FP32 arithmetic;
  * "bf16": the bf16 hint, used only where the CPU has bf16 dot products (`native.bf16_refusal`)
    and after the output is checked against ONNX Runtime's FP32 output on real LR images
    (>= 50 dB PSNR of the difference, the FP16 graphs' bar);
  * "default": no hint, what a user of OpenVINO gets (bf16 on such CPUs), unchecked: the peer row
    of `srexport bench`.

`tuned=True` (srexport's own route) gives OpenVINO the graph srexport's tuned ONNX Runtime path
runs (`optimize.optimize_onnx`, each rewrite checked within 1e-5 of the original): its one-channel
final convolution as a strided convolution computing 4x4 output blocks, ConvTranspose as Conv, are
as much faster in OpenVINO (side by side, bf16, 960x540 -> 1080p: SRCNN 423 -> 234 ms, RED 766 ->
529 ms on this 2-core machine under load). The peer rows (`tuned=False`) run the exported graph.

A model is compiled for each input shape it meets (static shapes: OpenVINO's CPU plugin is faster
with them, and vs-mlrt compiles for the clip's frame size too), the last few kept.
"""

from __future__ import annotations

import io
import warnings
from collections import OrderedDict

import numpy as np

from .errors import MissingBackend, SRExportError

OPENVINO_PRECISIONS = ("fp32", "bf16", "default")
_HINTS = {"fp32": "f32", "bf16": "bf16"}
KEEP_COMPILED = 4  # input shapes kept compiled at once (tiles: a few edge sizes)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _openvino():
    try:
        import openvino
    except ImportError:
        raise MissingBackend("openvino is not installed: pip install 'srexport[openvino]' (or pip install openvino)") \
            from None
    return openvino


class OpenVINORunner:
    """(N, 1, H, W) float32 -> (N, 1, s*H, s*W) through OpenVINO on the CPU."""

    def __init__(self, proto, *, precision: str = "fp32", threads: int | None = None, where: str = "ONNX model",
                 check: bool = True, tuned: bool = False):
        from .native import bf16_refusal
        from .runtime import physical_cores

        if precision not in OPENVINO_PRECISIONS:
            raise SRExportError(f"OpenVINO runs fp32, bf16 or its default precision, not {precision}")
        if precision == "bf16" and bf16_refusal():
            from .native import NotBF16

            raise NotBF16(bf16_refusal())
        ov = _openvino()
        self.precision, self.where = precision, where
        self.rewrites: list[str] = []
        source = proto
        if tuned:
            from .optimize import optimize_onnx

            fast, report = optimize_onnx(proto)
            if report.applied:
                source, self.rewrites = fast, list(report.rewrites)
        self.threads = threads or physical_cores()
        self.core = ov.Core()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = self.core.read_model(io.BytesIO(source.SerializeToString()))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own RuntimeError subclasses
            raise SRExportError(f"{where}: OpenVINO cannot read it ({str(e).splitlines()[0][:200]})") from None
        if len(self.model.inputs) != 1 or len(self.model.outputs) != 1:
            raise SRExportError(f"{where}: OpenVINO runs one-input, one-output networks here")
        self.config = {"INFERENCE_NUM_THREADS": self.threads}
        if precision in _HINTS:
            self.config["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
        self._compiled: OrderedDict[tuple, object] = OrderedDict()
        meta = {p.key: p.value for p in proto.metadata_props}
        try:
            self.scale = int(meta["scale"])
        except (KeyError, ValueError):
            self.scale = None
        self.name = f"openvino-cpu-{precision}" + ("-tuned" if tuned else "")
        self.info = {"backend": "openvino", "device": "cpu", "precision": precision, "threads": self.threads,
                     "rewrites": list(self.rewrites),
                     "openvino": ov.__version__, "config": {k: str(v) for k, v in self.config.items()}}
        if check and precision == "bf16":
            self.info["psnr_db_vs_fp32"] = self._check_bf16(proto)

    def _request(self, shape: tuple):
        """An infer request of the model compiled for this input shape (compiled once, a few kept)."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        model = self.model.clone()
        model.reshape({model.inputs[0]: list(shape)})
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as e:  # noqa: BLE001
            raise SRExportError(f"{self.where}: OpenVINO cannot compile it for {shape} "
                                f"({str(e).splitlines()[0][:200]})") from None
        if "inference_precision" not in self.info:
            self.info["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self._compiled[shape] = compiled.create_infer_request()
        while len(self._compiled) > KEEP_COMPILED:
            self._compiled.popitem(last=False)
        return self._compiled[shape]

    def _check_bf16(self, proto) -> float:
        """The worst PSNR from ONNX Runtime's FP32 output on real LR crops; CheckFailed under 50 dB."""
        from .native import BF16_MIN_PSNR_DB, CheckFailed
        from .runtime import OnnxRuntimeRunner
        from .verify import DEFAULT_SIZES, compare, real_inputs

        reference = OnnxRuntimeRunner(proto.SerializeToString(), threads=1)
        result = compare(reference, self, real_inputs((*DEFAULT_SIZES, (1, 53, 120))),
                         reference_name="onnxruntime-fp32", candidate_name=self.name, min_psnr_db=BF16_MIN_PSNR_DB)
        self._compiled.clear()  # the check's shapes are not the ones a run uses
        if not result:
            raise CheckFailed(f"{self.where}: OpenVINO in bf16 is {result.worst_psnr_db:.1f} dB from FP32 on real "
                              f"images (under {BF16_MIN_PSNR_DB:g} dB); use --precision fp32")
        return round(result.worst_psnr_db, 2)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 1:
            raise SRExportError(f"OpenVINO runner takes (N, 1, H, W) input, got {x.shape}")
        request = self._request(tuple(x.shape))
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
