import json

import numpy as np
import onnx
import pytest

from srexport.archs import build
from srexport.checkpoint import resolve_network, weights_sha256
from srexport.errors import SRExportError, VerificationFailed
from srexport.onnx_export import (INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_from_model, record_from_onnx,
                                  save_verified, verification_path, verify_onnx)
from srexport.runtime import OnnxRuntimeRunner, TorchRunner

NETWORKS = ["srcnn", "srcnn_955", "fsrcnn", "fsrcnn_s", "espcn", "vdsr", "drcn", "red"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every network exported at x3 with random weights, verified, written once for the module."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in NETWORKS:
        model, record = resolve_network(name, 3, random_weights=True)
        out[name] = (model, export_onnx(model, record, folder / f"{name}_x3.onnx"))
    return out


@pytest.mark.parametrize("name", NETWORKS)
def test_export_is_verified_and_recorded(exported, name):
    model, result = exported[name]
    assert result.verification.passed and result.verification.worst_max_abs <= 1e-4
    assert len(result.verification.cases) >= 3
    shapes = [c.input_shape for c in result.verification.cases]
    assert any(s[0] == 2 for s in shapes) and any(s[2] % 2 or s[3] % 2 for s in shapes)
    stored = json.loads(verification_path(result.path).read_text())
    assert stored["passed"] is True and stored["cases"][0]["max_abs"] <= 1e-4
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME] and [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 1 and isinstance(dims[2], str) and isinstance(dims[3], str)
    assert next(o.version for o in proto.opset_import if o.domain == "") == 18
    record, props = record_from_onnx(result.path)
    assert record.network == name and record.scale == 3
    assert props["scale"] == "3" and json.loads(props["value_range"]) == [0.0, 1.0]
    assert props["weights_sha256"] == weights_sha256(model)


@pytest.mark.parametrize("name", NETWORKS)
def test_unseen_size_37x53_is_exactly_scale_times(exported, name):
    model, result = exported[name]
    x = np.random.default_rng(0).random((1, 1, 37, 53), dtype=np.float32)
    y = OnnxRuntimeRunner(result.path)(x)
    assert y.shape == (1, 1, 111, 159)
    assert np.abs(y - TorchRunner(model)(x)).max() <= 1e-4


def ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_graph_structure(exported):
    assert "DepthToSpace" in ops(exported["espcn"][1].path)
    assert "ConvTranspose" in ops(exported["fsrcnn"][1].path) and "ConvTranspose" in ops(exported["red"][1].path)
    # The bicubic upsampler is inside the graph: it takes the LR image.
    assert "DepthToSpace" in ops(exported["vdsr"][1].path)


def test_drcn_recursion_is_unrolled_with_one_shared_weight(exported):
    model, result = exported["drcn"]
    proto = onnx.load(str(result.path))
    shared = [i for i in proto.graph.initializer if list(i.dims) == [256, 256, 3, 3]]
    assert len(shared) == 3  # embedding 2, inference, reconstruction 1
    uses = {i.name: sum(i.name in n.input for n in proto.graph.node if n.op_type == "Conv") for i in shared}
    # The inference conv and the reconstruction conv are shared by all 16 recursions.
    assert sorted(uses.values()) == [1, 16, 16]
    params = sum(p.numel() for p in model.parameters())
    assert result.path.stat().st_size <= 1.10 * 4 * params


def test_torchscript_exporter_and_opset_17():
    model, record = resolve_network("fsrcnn_s", 2, random_weights=True)
    for exporter in ("torchscript", "dynamo"):
        proto = onnx_from_model(model, record, opset=17, exporter=exporter)
        assert next(o.version for o in proto.opset_import if o.domain == "") == 17
        assert verify_onnx(proto, model).passed
    with pytest.raises(SRExportError, match="opset must be between"):
        onnx_from_model(model, record, opset=9)
    with pytest.raises(SRExportError, match="exporter must be one of"):
        onnx_from_model(model, record, exporter="magic")


def test_failed_verification_writes_nothing(tmp_path):
    model, record = resolve_network("espcn", 2, random_weights=True)
    proto = onnx_from_model(model, record)
    other = build("espcn", 2)  # different random weights: the export does not match it
    result = verify_onnx(proto, other)
    assert not result and "FAIL" in str(result)
    with pytest.raises(VerificationFailed, match="nothing written"):
        save_verified(proto, result, tmp_path / "x.onnx", force=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    model, record = resolve_network("espcn", 2, random_weights=True)
    path = tmp_path / "e.onnx"
    path.write_bytes(b"keep me")
    with pytest.raises(SRExportError, match="already exists"):
        export_onnx(model, record, path)
    assert path.read_bytes() == b"keep me"
    export_onnx(model, record, path, force=True)
    assert record_from_onnx(path)[0] == record


def test_record_from_bad_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(SRExportError, match="bad.onnx: not a valid ONNX file"):
        record_from_onnx(bad)
