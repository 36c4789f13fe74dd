import json

import pytest

from srexport.build import artifact_paths, build_artifacts
from srexport.checkpoint import resolve_network
from srexport.errors import SRExportError


def test_onnx_only_build_writes_verified_fp32_and_fp16(tmp_path):
    model, record = resolve_network("fsrcnn_s", 3, random_weights=True)
    seen = []
    report = build_artifacts(model, record, out_dir=tmp_path, onnx_only=True, progress=seen.append)
    assert [s.name for s in report.stages] == ["onnx-fp32", "onnx-fp16", "engine"]
    assert [s.status for s in report.stages] == ["done", "done", "skipped"]
    assert [s.name for s in seen] == ["onnx-fp32", "onnx-fp16"]
    paths = artifact_paths(tmp_path, "fsrcnn_s", 3)
    fp16 = json.loads(paths["fp16"].with_suffix(".verify.json").read_text())
    assert fp16["passed"] and fp16["min_psnr_db"] == 50 and "headroom" in fp16["note"]
    assert "fsrcnn_s" in report.table()


def test_rebuild_reuses_only_matching_artifacts(tmp_path):
    model, record = resolve_network("espcn", 2, random_weights=True)
    build_artifacts(model, record, out_dir=tmp_path, onnx_only=True)
    again = build_artifacts(model, record, out_dir=tmp_path, onnx_only=True)
    assert [s.status for s in again.stages[:2]] == ["reused", "reused"]
    other, other_record = resolve_network("espcn", 2, random_weights=True, seed=1)
    with pytest.raises(SRExportError, match="made from other weights.*--force"):
        build_artifacts(other, other_record, out_dir=tmp_path, onnx_only=True)
    forced = build_artifacts(other, other_record, out_dir=tmp_path, onnx_only=True, force=True)
    assert [s.status for s in forced.stages[:2]] == ["done", "done"]


def test_missing_tensorrt_is_reported_after_the_onnx_files(tmp_path):
    pytest.importorskip("numpy")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this checks the path without it")
    except ImportError:
        pass
    model, record = resolve_network("espcn", 2, random_weights=True)
    report = build_artifacts(model, record, out_dir=tmp_path, fp16=True, engine_settings={"flavour": "tensorrt"})
    assert "TensorRT is not installed" in report.missing
    assert report.stages[-1].status == "missing"
    paths = artifact_paths(tmp_path, "espcn", 2)
    assert paths["onnx"].is_file() and paths["fp16"].is_file() and not paths["engine16"].exists()
