"""srexport.engine.inspect: layer precisions from TensorRT's engine-inspector JSON, in the schemas of
TensorRT 10, 11 and the graph compiler's (Myelin) layers that TensorRT 10+ and TensorRT-RTX report."""

from __future__ import annotations

import json

import pytest

from srexport.engine.inspect import fp16_share_from_inspector_json, precisions_from_inspector_json
from srexport.errors import SRExportError


def _tensor(name, text, split=False):
    if split:  # later schema: format and type in separate fields
        return {"Name": name, "Location": "Device", "Dimensions": [1, 64, 270, 480], "Format": "Row major linear",
                "Datatype": text}
    return {"Name": name, "Location": "Device", "Dimensions": [1, 64, 270, 480], "Format/Datatype": text}


def _layer(name, layer_type, out_text, split=False, **extra):
    return {"Name": name, "LayerType": layer_type, "Inputs": [_tensor("in", out_text, split)],
            "Outputs": [_tensor(f"{name}_out", out_text, split)], **extra}


INSPECTOR_10 = json.dumps({
    "Layers": [
        _layer("Reformatting CopyNode for Input Tensor 0 to /conv1/Conv", "Reformat", "Row major linear FP16 format"),
        _layer("/conv1/Conv + /act1/Tanh", "CaskConvolution", "Channel major FP16 format where channel % 8 == 0",
               ParameterType="Convolution", Activation="TANH"),
        _layer("/conv2/Conv + /act2/Tanh", "CaskConvolution", "Channel major FP16 format where channel % 8 == 0",
               ParameterType="Convolution"),
        _layer("/conv3/Conv", "CaskConvolution", "Row major linear FP32 format", ParameterType="Convolution"),
        _layer("/shuffle/DepthToSpace", "Shuffle", "Row major linear FP16 format", ParameterType="Shuffle"),
        _layer("PWN(/act/Relu)", "PointWiseV2", "Half", ParameterType="PointWise"),
    ],
    "Bindings": ["lr", "sr"],
})

INSPECTOR_11 = json.dumps({
    "Layers": [
        _layer("/conv1/Conv", "CaskConvolution", "FP16", split=True),
        _layer("/deconv/ConvTranspose", "CaskDeconvolution", "Half", split=True),
        _layer("/gemm", "MatrixMultiply", "Float", split=True),
        _layer("cast", "Reformat", "Float", split=True),
    ],
    "I/O Tensors": [
        {"Name": "lr", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 1, -1, -1], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": [{"MinShape": [1, 1, 1, 1], "OptShape": [1, 1, 270, 480],
                                                       "MaxShape": [1, 1, 540, 960], "Format": "Row major linear FP32 format (kLINEAR)"}]},
        {"Name": "sr", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 1, -1, -1], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": []},
    ],
})


def test_inspector_json_tensorrt_10_schema():
    summary = precisions_from_inspector_json(INSPECTOR_10)
    assert summary["layers"] == 6 and summary["detailed"]
    assert summary["by_precision"] == {"FP16": 5, "FP32": 1}
    # Compute: three convolutions and the pointwise activation; Reformat and Shuffle are not.
    assert summary["compute_layers"] == 4 and summary["compute_by_precision"] == {"FP16": 3, "FP32": 1}
    assert summary["fp16_share"] == 0.75 == fp16_share_from_inspector_json(INSPECTOR_10)
    assert summary["io_tensors"] == ["lr", "sr"]


def test_inspector_json_tensorrt_11_schema():
    summary = precisions_from_inspector_json(INSPECTOR_11)
    assert summary["compute_by_precision"] == {"FP16": 2, "FP32": 1}
    assert summary["fp16_share"] == round(2 / 3, 4)
    assert summary["io_tensors"] == ["lr", "sr"]


def test_inspector_json_without_detail_or_shapes():
    names_only = json.dumps({"Layers": ["/conv1/Conv + /act1/Tanh", "/conv2/Conv"], "Bindings": ["lr", "sr"]})
    summary = precisions_from_inspector_json(names_only)
    assert summary["layers"] == 2 and not summary["detailed"] and summary["fp16_share"] is None
    dynamic = json.dumps({"Layers": [_layer("/conv1/Conv", "CaskConvolution", "N/A due to dynamic shapes")]})
    summary = precisions_from_inspector_json(dynamic)
    assert summary["compute_by_precision"] == {"unknown": 1} and summary["fp16_share"] == 0.0
    with pytest.raises(SRExportError, match="not JSON"):
        precisions_from_inspector_json("Layers: none")


def _myelin(name, layer_type, dtype, metadata):
    tensor = {"Name": f"{name}_out", "Dimensions": [1, 64, -1, -1], "Datatype": dtype,
              "Format": "(NHWC) Channel major format"}
    return {"Name": name, "LayerType": layer_type, "Inputs": [], "Constants": [], "Outputs": [tensor],
            "TacticName": "", "StreamId": 0, "Metadata": metadata}


# The layers TensorRT-RTX 1.7's builder lists for srexport's FP16 ESPCN x3 (its verbose log, in the
# JSON schema): the first convolution and its tanh fused into a generated ("kgen") kernel, the others
# as "correlation" layers, the pixel shuffle and the cast to FP32 output in another kgen kernel.
MYELIN_ESPCN = json.dumps({
    "Layers": [
        {"Name": "__mye661_0_myl0_0", "LayerType": "shape_call", "Inputs": [], "Outputs": [], "Metadata": ""},
        _myelin("__myl_CastReplConc_myl0_1", "kgen", "Half",
                "[ONNX Layer: lr_cast_to_node_conv2d][ONNX Layer: node_conv2d][ONNX Layer: node_tanh]"),
        _myelin("node_conv2d_myl0_2", "correlation", "Half", "[ONNX Layer: node_conv2d][ONNX Layer: node_tanh]"),
        _myelin("node_conv2d_1_myl0_3", "correlation", "Half", "[ONNX Layer: node_conv2d_1]"),
        _myelin("node_conv2d_2_myl0_4", "correlation", "Half", "[ONNX Layer: node_conv2d_2]"),
        _myelin("__myl_TranReshMoveCast_myl0_5", "kgen", "Float",
                "[ONNX Layer: node_pixel_shuffle][ONNX Layer: node_pixel_shuffle_cast_to_sr]"),
    ],
    "I/O Tensors": [{"Name": "lr"}, {"Name": "sr"}],
})


def test_myelin_layers_count_as_compute_layers():
    """A correct FP16 engine compiled by Myelin must not fail the FP16-share check for having no
    compute layers the heuristic recognises."""
    summary = precisions_from_inspector_json(MYELIN_ESPCN)
    assert summary["compute_layers"] == 5 and summary["compute_by_precision"] == {"FP16": 4, "FP32": 1}
    assert summary["fp16_share"] == 0.8 and summary["io_tensors"] == ["lr", "sr"]
