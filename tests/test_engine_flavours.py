"""srexport.engine.flavours: choosing a flavour, compute capabilities, what a GPU must be to run an engine."""

from __future__ import annotations

import sys

import pytest

from srexport.engine import flavours
from srexport.errors import MissingBackend, SRExportError


@pytest.mark.parametrize("text, ccs", [("8.6,8.9", ("8.6", "8.9")), (["86", "sm_89", "SM120"], ("8.6", "8.9", "12.0")),
                                       ("7.5, 7.5", ("7.5",)), ("12.1", ("12.1",))])
def test_parse_compute_capabilities(text, ccs):
    assert flavours.parse_compute_capabilities(text) == ccs


@pytest.mark.parametrize("text", ["9.0", "10.0", "sm_70", "", "eight"])
def test_parse_compute_capabilities_refuses_what_tensorrt_rtx_cannot_target(text):
    with pytest.raises(SRExportError):
        flavours.parse_compute_capabilities(text)


def test_auto_without_any_flavour_names_both_installs(monkeypatch):
    for module in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` raises ImportError
    with pytest.raises(MissingBackend) as info:
        flavours.load_flavour()
    assert "srexport[tensorrt]" in str(info.value) and "srexport[tensorrt-rtx]" in str(info.value)
    assert flavours.installed_flavours() == []
    with pytest.raises(SRExportError, match="must be one of auto, tensorrt, tensorrt-rtx"):
        flavours.load_flavour("onnx")


@pytest.fixture
def rtx():
    try:
        return flavours.load_flavour(flavours.TENSORRT_RTX)
    except MissingBackend as e:
        pytest.skip(str(e))


def test_rtx_targets_the_portable_set_without_a_gpu(rtx, monkeypatch):
    monkeypatch.setattr(flavours, "gpu_info", lambda: None)
    assert rtx.target() == {"compute_capabilities": list(flavours.RTX_PORTABLE), "gpu": None}
    assert rtx.target("8.9") == {"compute_capabilities": ["8.9"], "gpu": None}
    assert rtx.cuda_flavour == "cu13" and rtx.label.startswith("TensorRT-RTX 1.")
    assert rtx.module_name in ("tensorrt_rtx", "tensorrt_rtx_bindings")


def _gpu(monkeypatch, name, cc):
    monkeypatch.setattr(flavours, "require_cuda", lambda: None)
    monkeypatch.setattr(flavours, "gpu_info", lambda: {"name": name, "compute_capability": cc})


def test_rtx_targets_an_rtx_gpu_present_and_not_a_hopper(rtx, monkeypatch):
    _gpu(monkeypatch, "NVIDIA GeForce RTX 4090", "8.9")
    assert rtx.target()["compute_capabilities"] == ["8.9"]
    _gpu(monkeypatch, "NVIDIA H100 80GB HBM3", "9.0")
    assert rtx.target()["compute_capabilities"] == list(flavours.RTX_PORTABLE)


def test_rtx_refuses_to_run_where_it_cannot(rtx, monkeypatch):
    _gpu(monkeypatch, "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(MissingBackend, match=r"x.engine: NVIDIA H100 .* cannot run TensorRT-RTX engines .* TensorRT 10/11"):
        rtx.check_runnable({}, "x.engine")
    _gpu(monkeypatch, "NVIDIA GeForce RTX 3090", "8.6")
    assert rtx.check_runnable({"compute_capabilities": ["8.6", "8.9"]}, "x.engine")["compute_capability"] == "8.6"
    with pytest.raises(SRExportError, match="built for compute capabilities 8.9, this GPU is 8.6"):
        rtx.check_runnable({"compute_capabilities": ["8.9"]}, "x.engine")


def test_cache_files_are_per_version_and_gpu(rtx, tmp_path):
    gpu = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    path = rtx.runtime_cache_path(tmp_path, gpu)
    assert path.parent == tmp_path and rtx.version in path.name and "rtx-4090" in path.name and "sm89" in path.name
    assert rtx.runtime_cache_path(None, gpu).parent.name == "runtime"
    assert rtx.runtime_cache_path(tmp_path, {**gpu, "compute_capability": "8.6"}) != path
