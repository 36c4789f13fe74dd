
import numpy as np
import pytest
import torch
from onnx import TensorProto

from srexport.checkpoint import resolve_network
from srexport.fp16 import activation_peak, fp16_emulation_graph, fp16_from_onnx, verify_fp16
from srexport.onnx_export import onnx_from_model
from srexport.runtime import OnnxRuntimeRunner, TorchRunner
from srexport.verify import compare, real_inputs

NETWORKS = ["srcnn", "srcnn_955", "fsrcnn", "fsrcnn_s", "espcn", "vdsr", "drcn", "red"]


def fp32_graph(name, scale=2):
    model, record = resolve_network(name, scale, random_weights=True)
    return model, onnx_from_model(model, record)


@pytest.mark.parametrize("name", NETWORKS)
def test_fp16_graph_meets_50db_with_rounded_tensors(name):
    model, proto = fp32_graph(name)
    proto16 = fp16_from_onnx(proto)
    weights = [i for i in proto16.graph.initializer if len(i.dims) == 4]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    assert proto16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # io fp32 by default
    result = verify_fp16(proto16, model, inputs=real_inputs(((1, 16, 16), (2, 9, 13))))
    assert result.passed and result.worst_psnr_db >= 50


def test_emulation_really_rounds_unlike_plain_onnxruntime():
    # ORT on the FP16 graph computes in FP32 on the CPU and overstates FP16 quality; the emulation
    # graph must be measurably worse and agree with PyTorch half precision (real FP16 tensors).
    model, proto = fp32_graph("srcnn")
    proto16 = fp16_from_onnx(proto)
    inputs = real_inputs(((1, 24, 24),))
    ort_plain = compare(TorchRunner(model), OnnxRuntimeRunner(proto16.SerializeToString()), inputs)
    emulated = compare(TorchRunner(model), OnnxRuntimeRunner(fp16_emulation_graph(proto16).SerializeToString(),
                                                             exact_fp16=True), inputs)
    half = TorchRunner(resolve_network("srcnn", 2, random_weights=True)[0], dtype=torch.float16)
    real_half = compare(TorchRunner(model), lambda x: half(x.astype(np.float16)), inputs)
    assert emulated.worst_psnr_db < ort_plain.worst_psnr_db - 2
    assert abs(emulated.worst_psnr_db - real_half.worst_psnr_db) < 1.0


def test_fp16_io_and_metadata_kept():
    model, proto = fp32_graph("espcn")
    proto16 = fp16_from_onnx(proto, io="fp16")
    assert proto16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert proto16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert {p.key for p in proto.metadata_props} <= {p.key for p in proto16.metadata_props}
    assert verify_fp16(proto16, model, inputs=real_inputs(((1, 12, 12),))).passed
    # The FP32 source graph is left untouched.
    assert all(i.data_type == TensorProto.FLOAT for i in proto.graph.initializer if len(i.dims) == 4)


def test_verification_fails_on_fp16_overflow():
    model, record = resolve_network("espcn", 2, random_weights=True)
    with torch.no_grad():  # saturate both tanh layers to 1, then sum 288 x 1e3: finite in FP32, Inf in FP16
        model.body[0].bias.fill_(10)
        model.body[2].bias.fill_(10)
        model.body[4].weight.fill_(1e3)
    proto16 = fp16_from_onnx(onnx_from_model(model, record))
    result = verify_fp16(proto16, model, inputs=real_inputs(((1, 8, 8),)))
    assert not result and not result.cases[0].finite and "NaN/Inf" in str(result)


def test_activation_peak_reports_layer_and_headroom():
    model, _ = fp32_graph("vdsr")
    peak = activation_peak(model, real_inputs(((1, 16, 16),)))
    assert 0 < peak["max_abs_activation"] < 100 and peak["layer"]
    assert peak["fp16_headroom"] == pytest.approx(65504 / peak["max_abs_activation"])
