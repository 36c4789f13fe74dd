"""FP16 graphs: `fp16_from_onnx` converts a verified FP32 ONNX graph, and `verify_fp16` checks it
with every tensor really rounded to FP16.

Why not run the FP16 graph in ONNX Runtime directly: ORT has no FP16 convolution kernels on x86;
it wraps them in casts and then removes the cast pairs, so it computes in FP32 with FP16 weights
and overstates FP16 quality. Instead `fp16_emulation_graph` rewrites the FP16 graph into FP32 ops
with an explicit FP16 round trip (Cast to FP16, Cast back) on every tensor the FP16 graph stores
in FP16. Arithmetic inside each op stays FP32, as TensorRT's FP16 kernels accumulate in FP32.
This agrees with PyTorch half precision to about 0.1 dB PSNR of the difference.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .errors import SRExportError
from .onnx_export import verify_onnx
from .verify import VerifyResult

FP16_MIN_PSNR_DB = 50.0
FP16_MAX = 65504.0
IO_TYPES = ("fp32", "fp16")

# Ops kept in FP32 per network, and why. None is needed: activations of these networks stay
# far below the FP16 maximum (see `activation_peak`, recorded with every FP16 graph) and the
# measured FP16 error is tens of dB above the threshold. The convert step still takes the list so
# that a network which needs one gets it here, in one place.
KEEP_FP32: dict[str, tuple[tuple[str, ...], str]] = {
    name: ((), "none needed: peak activation well inside FP16 range, error far above threshold")
    for name in ("srcnn", "srcnn_955", "fsrcnn", "fsrcnn_s", "espcn", "vdsr", "drcn", "red")
}


def fp16_from_onnx(proto: onnx.ModelProto, *, io: str = "fp32", keep_fp32_ops: Sequence[str] = ()) -> onnx.ModelProto:
    """FP16 copy of an FP32 graph (onnxconverter-common); `io="fp32"` keeps FP32 input and output."""
    from onnxconverter_common import float16

    if io not in IO_TYPES:
        raise SRExportError(f"--io must be one of {', '.join(IO_TYPES)}, got {io!r}")
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # the converter works in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight below FP16's smallest normal
        return float16.convert_float_to_float16(
            copy, keep_io_types=(io == "fp32"), op_block_list=block, disable_shape_infer=True)


def fp16_emulation_graph(proto16: onnx.ModelProto) -> onnx.ModelProto:
    """FP32-op graph equal to `proto16` with each FP16-stored tensor rounded through FP16."""
    inferred = onnx.shape_inference.infer_shapes(proto16)
    g = inferred.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    out = onnx.ModelProto()
    out.CopyFrom(proto16)
    graph = out.graph
    for init in graph.initializer:  # FP16 values are exact in FP32
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for node in graph.node:
        node = _fp32_node(node)
        rounded = [o for o in node.output if elem.get(o) == TensorProto.FLOAT16]
        for o in rounded:
            node.output[list(node.output).index(o)] = o + "/fp32"
        nodes.append(node)
        for o in rounded:
            nodes.append(helper.make_node("Cast", [o + "/fp32"], [o + "/fp16"], to=TensorProto.FLOAT16))
            nodes.append(helper.make_node("Cast", [o + "/fp16"], [o], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for v in [*graph.input, *graph.output]:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    return out


def _fp32_node(node: onnx.NodeProto) -> onnx.NodeProto:
    """Copy of `node` computing in FP32 where the original computed in FP16."""
    node = _copy(node)
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
            attr.i = TensorProto.FLOAT  # the rounding is added after the node
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
    return node


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    n = onnx.NodeProto()
    n.CopyFrom(node)
    return n


def verify_fp16(proto16: onnx.ModelProto, model: nn.Module, *, inputs: Sequence[np.ndarray]) -> VerifyResult:
    """The FP16 graph, every tensor rounded to FP16, against PyTorch FP32: PSNR >= 50 dB, no NaN/Inf."""
    result = verify_onnx(fp16_emulation_graph(proto16), model, inputs=inputs, max_abs=None,
                         min_psnr_db=FP16_MIN_PSNR_DB, exact_fp16=True, name="onnx-fp16 (FP16-rounded tensors)")
    result.note = "every FP16 tensor rounded to FP16, FP32 arithmetic inside ops (as TensorRT)"
    return result


@torch.no_grad()
def activation_peak(model: nn.Module, inputs: Sequence[np.ndarray]) -> dict:
    """Largest |activation| of any layer of `model` (FP32) on `inputs`, and its FP16 headroom."""
    peak = {"value": 0.0, "layer": ""}

    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            m = float(output.detach().abs().max())
            if m > peak["value"]:
                peak.update(value=m, layer=names[module])

    names = {m: n for n, m in model.named_modules() if n and not list(m.children())}
    handles = [m.register_forward_hook(hook) for m in names]
    try:
        for x in inputs:
            y = model(torch.from_numpy(x))
            hook_out = float(y.abs().max())
            if hook_out > peak["value"]:
                peak.update(value=hook_out, layer="output")
    finally:
        for h in handles:
            h.remove()
    if not np.isfinite(peak["value"]):
        raise SRExportError(f"{model.network_name}: non-finite activation in FP32 ({peak['layer']})")
    return {"max_abs_activation": peak["value"], "layer": peak["layer"],
            "fp16_headroom": FP16_MAX / max(peak["value"], 1e-30)}
