"""open_runner's backends against PyTorch, the choice `auto` makes, and the ONNX cache."""

import numpy as np
import pytest
import torch

from srexport import runtime
from srexport.archs import list_networks
from srexport.checkpoint import resolve_network
from srexport.errors import SRExportError
from srexport.runtime import (OnnxRuntimeRunner, TorchRunner, open_runner, open_runner_for, physical_cores,
                              tensorrt_available)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((1, 1, 11, 14), dtype=np.float32), rng.random((2, 1, 7, 5), dtype=np.float32)]


@pytest.mark.parametrize("name", list_networks())
def test_backends_agree_with_torch(exported, name):
    model, _, path = exported(name)
    reference = TorchRunner(model)
    runners = [open_runner(onnx_path=path, backend="onnxruntime"),  # the tuned session
               OnnxRuntimeRunner(path)]  # default session, as onnx_export uses it
    if name in ("espcn", "fsrcnn"):
        runners += [open_runner(model=model, backend="onnxruntime"),  # tuned, from an in-memory export
                    open_runner(onnx_path=path, backend="auto")]
    for x in _inputs():
        want = reference(x)
        for r in runners:
            got = r(x)
            assert got.shape == want.shape and got.dtype == np.float32
            assert np.abs(got - want).max() <= 1e-4, r.name
    assert runners[0].scale == 2 and all(r.scale == 2 for r in runners[2:])


def test_auto_picks_onnxruntime_on_cpu(exported, monkeypatch):
    model, _, path = exported("red")  # not a chain the fused kernel runs (tests/test_native.py)
    if tensorrt_available():
        pytest.skip("TensorRT and a GPU are here: auto picks TensorRT")
    loads = []
    real_onnx_proto = runtime._onnx_proto
    monkeypatch.setattr(runtime, "_onnx_proto", lambda *a: loads.append(a) or real_onnx_proto(*a))
    for r in (open_runner(model=model), open_runner(onnx_path=path)):
        assert r.name == "onnxruntime-cpu-tuned"
        assert r.info["threads"] == physical_cores()
        assert r.arch is not None and r.scale == 2
    assert len(loads) == 2  # one graph per runner, although the fused kernel looked at it first
    torch_runner = open_runner(model=model, backend="torch")
    assert torch_runner.name.startswith("torch-") and torch_runner.scale == 2


def test_tuned_session_uses_rewrites(exported):
    _, _, path = exported("red")
    r = open_runner(onnx_path=path)
    assert any("ConvTranspose 3x3 stride 1 -> Conv" in line for line in r.info["rewrites"])
    _, _, path = exported("srcnn")
    assert any("Conv 5x5 32->1 -> " in line for line in open_runner(onnx_path=path).info["rewrites"])


def test_runner_errors(exported, tmp_path):
    model, _, path = exported("espcn")
    with pytest.raises(SRExportError, match="backend"):
        open_runner(model=model, backend="cuda")
    with pytest.raises(SRExportError, match="precision"):
        open_runner(model=model, precision="int8")
    with pytest.raises(SRExportError, match="nothing to run"):
        open_runner()
    with pytest.raises(SRExportError, match="needs the network"):
        open_runner(onnx_path=path, backend="torch")
    with pytest.raises(SRExportError, match="no such file"):
        open_runner(onnx_path=tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(SRExportError, match="bad.onnx"):
        open_runner(onnx_path=bad)
    if not torch.cuda.is_available():
        with pytest.raises(SRExportError, match="CUDA"):
            open_runner(model=model, backend="torch", precision="fp16")
    with pytest.raises(SRExportError, match="x2"):
        open_runner_for(onnx=path, scale=3)
    assert open_runner_for(onnx=path, scale=2).scale == 2
    assert open_runner_for("espcn", 3, random_weights=True).scale == 3


def test_tensorrt_backend_without_tensorrt(exported):
    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    model, _, _ = exported("espcn")
    from srexport.errors import MissingBackend

    with pytest.raises(MissingBackend):
        open_runner(model=model, backend="tensorrt")


def test_fp16_graph_runner(exported):
    model, _, path = exported("espcn")
    r = open_runner(onnx_path=path, backend="onnxruntime", precision="fp16")
    x = _inputs()[0]
    assert r.name == "onnxruntime-cpu-fp16-graph"
    assert np.abs(r(x) - TorchRunner(model)(x)).max() < 1e-2


def test_exported_onnx_is_cached(monkeypatch):
    """A network exported once is read back from the cache folder: the same graph, no new export;
    other weights get another file, and a damaged file is exported again."""
    from srexport import onnx_export
    from srexport.runtime import cache_dir, exported_onnx

    model, record = resolve_network("espcn", 2, random_weights=True, seed=3)
    first = exported_onnx(model, record)
    files = list((cache_dir() / "onnx").glob("espcn_x2_*.onnx"))
    cached = [f for f in files if f.read_bytes() == first.SerializeToString()]
    assert len(cached) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    with monkeypatch.context() as m:
        m.setattr(onnx_export, "onnx_from_model", no_export)
        assert exported_onnx(model, record).SerializeToString() == first.SerializeToString()
    other, other_record = resolve_network("espcn", 2, random_weights=True, seed=4)
    exported_onnx(other, other_record)
    assert len(list((cache_dir() / "onnx").glob("espcn_x2_*.onnx"))) == len(files) + 1
    cached[0].write_bytes(b"damaged")
    assert exported_onnx(model, record).SerializeToString() == first.SerializeToString()
    assert cached[0].read_bytes() == first.SerializeToString()


# --- OpenVINO and bf16 -----------------------------------------------------------------------

def _openvino_missing() -> str:
    from srexport.openvino_runner import openvino_available

    return "" if openvino_available() else "openvino is not installed (pip install 'srexport[openvino]')"


def _bf16_missing() -> str:
    from srexport.native import bf16_refusal

    return bf16_refusal() or _openvino_missing()


@pytest.mark.skipif(bool(_openvino_missing()), reason=_openvino_missing() or "")
@pytest.mark.parametrize("name", ["srcnn", "red", "espcn"])
def test_openvino_fp32_agrees_with_onnxruntime(exported, name):
    from srexport.openvino_runner import OpenVINORunner

    model, proto, path = exported(name)
    reference = OnnxRuntimeRunner(path)
    runners = [OpenVINORunner(proto, precision="fp32"), open_runner(onnx_path=path, backend="openvino")]
    assert runners[1].info["rewrites"] or name == "espcn"  # srexport's route takes the tuned graph
    for x in _inputs() + _inputs(1):  # a shape seen again reuses its compiled model
        want = reference(x)
        for r in runners:
            got = r(x)
            assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4, r.name
    assert all(r.scale == 2 for r in runners) and len(runners[0]._compiled) == 2


@pytest.mark.skipif(bool(_bf16_missing()), reason=_bf16_missing() or "")
def test_bf16_picks_the_fused_kernel_else_openvino():
    """Shipped weights: ESPCN goes to the fused kernel in bf16, RED (not a chain it runs) to OpenVINO's
    bf16 on the tuned graph; both passed their >= 50 dB check; auto without bf16 stays FP32."""
    from srexport.native import compiler

    espcn = open_runner_for("espcn", 2, precision="bf16")
    if compiler():
        assert espcn.name == "native-cpu-fused-bf16" and espcn.info["precision"] == "bf16"
    red = open_runner_for("red", 2, precision="bf16")
    assert red.name == "openvino-cpu-bf16-tuned" and red.info["rewrites"]
    for r in (espcn, red):
        assert r.info["psnr_db_vs_fp32"] >= 50
    assert "bf16" not in open_runner_for("red", 2).name and "bf16" not in open_runner_for("espcn", 2).name


def test_bf16_and_openvino_errors(exported):
    from srexport.native import bf16_refusal

    model, _, path = exported("espcn")
    for backend in ("onnxruntime", "torch", "tensorrt"):
        with pytest.raises(SRExportError, match="CPU runs on --backend auto, native or openvino"):
            open_runner(model=model, backend=backend, precision="bf16")
    with pytest.raises(SRExportError, match="openvino runs fp32 or bf16"):
        open_runner(onnx_path=path, backend="openvino", precision="fp16")
    if bf16_refusal():  # a CPU without bf16 dot products: refused before anything is built
        with pytest.raises(SRExportError, match="no bf16 dot products|cannot read"):
            open_runner(model=model, precision="bf16")
