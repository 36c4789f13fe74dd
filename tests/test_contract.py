"""The I/O contract `srexport info` shows (srexport/contract.py) for each kind of artifact."""

import json

from click.testing import CliRunner

from srexport.catalog import artifact_info, info_text
from srexport.checkpoint import resolve_network, shipped_checkpoint
from srexport.cli import main
from srexport.engine import EngineOptions, engine_identity


def test_checkpoint_contract():
    contract = artifact_info(shipped_checkpoint("espcn", 2))["io_contract"]
    assert contract["input"] == {"name": "lr", "dtype": "float32", "shape": ["N", 1, "H", "W"]}
    assert contract["output"] == {"name": "sr", "dtype": "float32", "shape": ["N", 1, "2*H", "2*W"]}
    assert contract["layout"] == "NCHW" and contract["scale"] == 2 and contract["value_range"] == [0.0, 1.0]
    assert contract["colour_space"].startswith("Y of YCbCr BT.601 limited range")
    assert contract["tile_overlap"] == 5 and contract["profile"] is None and "checks" not in contract


def test_onnx_contract_with_half_io(exported, tmp_path):
    import onnx

    from srexport.fp16 import fp16_from_onnx
    from srexport.onnx_export import record_from_onnx, set_record

    _, proto, path = exported("fsrcnn", 3)
    half = fp16_from_onnx(proto, io="fp16")
    set_record(half, record_from_onnx(path)[0], precision="fp16", io_dtype="fp16")  # as build tags it
    onnx.save(half, str(tmp_path / "f.onnx"))
    contract = artifact_info(tmp_path / "f.onnx")["io_contract"]
    assert contract["scale"] == 3 and contract["tile_overlap"] == 9
    assert contract["input"]["dtype"] == contract["output"]["dtype"] == "float16"
    assert artifact_info(path)["io_contract"]["input"]["dtype"] == "float32"


def test_engine_contract_and_text(tmp_path):
    model, record = resolve_network("espcn", 3, random_weights=True)
    del model
    io = {"inputs": [{"name": "lr", "dtype": "float16"}], "outputs": [{"name": "sr", "dtype": "float16"}],
          "precision": "fp16"}
    sidecar = engine_identity(record=record, onnx_sha256="0" * 64, io=io, options=EngineOptions.default_for(3),
                              flavour="tensorrt-rtx", tensorrt_version="1.2.0.54",
                              target={"compute_capabilities": ["8.6", "8.9"], "gpu": None})
    (tmp_path / "e.engine").write_bytes(b"x")
    (tmp_path / "e.engine.json").write_text(json.dumps(sidecar))
    data = artifact_info(tmp_path / "e.engine")
    contract = data["io_contract"]
    assert contract["flavour"] == "tensorrt-rtx" and contract["input"]["dtype"] == "float16"
    assert contract["profile"] == sidecar["profile"] and contract["tile_overlap"] == 5
    assert any(c.startswith("tensorrt_version") for c in contract["checks"])
    text = info_text(data)
    assert "io_contract:\n  input: " in text and "  check before running: flavour: " in text
    done = CliRunner().invoke(main, ["info", str(tmp_path / "e.engine"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["io_contract"]["scale"] == 3
