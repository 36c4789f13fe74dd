"""The shared engine path for real, through TensorRT-RTX's own parser and builder (no GPU needed):
every network at x2, x3 and x4, from its FP32 and FP16 graphs, DRCN included, with the default
memory-sized profile; parser and builder errors; the budget refusal; reuse; the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import onnx
import pytest
from click.testing import CliRunner

from srexport.archs import list_networks
from srexport.engine import EngineOptions, engine_from_onnx, load_flavour, read_sidecar, sidecar_path
from srexport.engine.build import activation_model
from srexport.engine.flavours import RTX_PORTABLE, TENSORRT_RTX
from srexport.engine.network import network_from_onnx, network_precisions
from srexport.engine.profiles import DEFAULT_MEMORY_BUDGET, HEADROOM, LARGEST_OUTPUT
from srexport.errors import MissingBackend, SRExportError
from srexport.fp16 import fp16_from_onnx

NETWORKS = list_networks()
SCALES = (2, 3, 4)


@pytest.fixture(scope="module")
def rtx():
    try:
        return load_flavour(TENSORRT_RTX)
    except MissingBackend as e:
        pytest.skip(f"TensorRT-RTX wheels are not installed here ({e})")


@pytest.fixture(scope="module")
def graphs(exported, tmp_path_factory):
    """(FP32 path, FP16 path) per (network, scale), from the session's exports."""
    folder = tmp_path_factory.mktemp("graphs16")
    cache = {}

    def get(name, scale):
        if (name, scale) not in cache:
            _, proto, path = exported(name, scale)
            path16 = folder / f"{name}_x{scale}.fp16.onnx"
            onnx.save(fp16_from_onnx(proto, io="fp32"), str(path16))
            cache[name, scale] = (path, path16)
        return cache[name, scale]

    return get


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_builds_from_its_fp16_and_fp32_graph(rtx, graphs, name, scale, tmp_path):
    for precision, onnx_path in zip(("fp32", "fp16"), graphs(name, scale)):
        engine = tmp_path / f"{name}_x{scale}.{precision}.engine"
        built = engine_from_onnx(onnx_path, engine, flavour=rtx, cache_dir=tmp_path)
        sidecar = json.loads(sidecar_path(engine).read_text())
        assert sidecar == built.sidecar and not built.reused
        assert sidecar["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
        assert sidecar["engine_bytes"] == engine.stat().st_size > 100_000
        assert sidecar["flavour"] == "tensorrt-rtx" and sidecar["tensorrt_version"] == rtx.version
        assert sidecar["compute_capabilities"] == list(RTX_PORTABLE) and sidecar["gpu"] is None
        assert sidecar["bindings_cuda"] == "cu13" and sidecar["precision"] == precision and sidecar["scale"] == scale
        # The parsed network: every convolution in the graph's precision.
        layers = sidecar["network_precisions"]
        assert layers["compute_layers"] > 0, layers
        assert layers["compute_by_precision"] == {"FP16" if precision == "fp16" else "FP32": layers["compute_layers"]}
        assert layers["fp16_share"] == (1.0 if precision == "fp16" else 0.0) == built.fp16_share
        # The default profile: a real minimum tile, a maximum that covers 1080p or fits the budget.
        (_, _, hmin, wmin), (_, _, hmax, wmax) = sidecar["profile"]["min"], sidecar["profile"]["max"]
        assert (hmin, wmin) == (32, 32)
        memory = sidecar["memory"]
        assert memory["builder_reported_bytes"] <= DEFAULT_MEMORY_BUDGET
        assert hmax * scale >= LARGEST_OUTPUT[0] or memory["predicted_bytes"] > 0.7 * HEADROOM * DEFAULT_MEMORY_BUDGET
        # The prediction from two probe builds holds for the real build (worst seen: 0.79).
        assert 0.7 <= memory["predicted_bytes"] / memory["builder_reported_bytes"] <= 1.25, memory
        assert sidecar["plan_seconds"] > 0 and sidecar["layer_precisions"] is None and sidecar["verification"] is None


def test_drcn_default_profile_is_sized_by_memory(rtx, graphs, tmp_path):
    """DRCN keeps its recursions' 256-channel states at once: a 1080p-output profile would need tens
    of GB, so the default maximum is the largest 16:9 shape in the budget, and a larger one is refused
    before any build."""
    _, fp16 = graphs("drcn", 2)
    model = activation_model(rtx, fp16, rtx.target())
    full = (LARGEST_OUTPUT[0] // 2, LARGEST_OUTPUT[1] // 2)
    assert model.bytes_for(full) > 10 * DEFAULT_MEMORY_BUDGET
    built = engine_from_onnx(fp16, tmp_path / "drcn.engine", flavour=rtx)
    hmax, wmax = built.sidecar["profile"]["max"][2:]
    assert hmax < full[0] and wmax < full[1] and hmax % 8 == 0 and wmax % 8 == 0
    with pytest.raises(SRExportError, match=r"would need .* GB of activation memory .* over the 2.15 GB budget"):
        engine_from_onnx(fp16, tmp_path / "big.engine", flavour=rtx, shapes={"max_shape": full})
    assert not (tmp_path / "big.engine").exists()
    bigger = engine_from_onnx(fp16, tmp_path / "big.engine", flavour=rtx, shapes={"max_shape": (hmax * 2, wmax * 2)},
                              memory_budget=8 * DEFAULT_MEMORY_BUDGET)
    assert bigger.sidecar["memory"]["builder_reported_bytes"] > DEFAULT_MEMORY_BUDGET


def test_parser_errors_name_the_onnx_node(rtx, graphs, tmp_path):
    proto = onnx.load(str(graphs("espcn", 2)[0]))
    node = next(n for n in proto.graph.node if n.op_type == "Tanh")
    node.op_type, node.domain = "NoSuchOp", "com.example"
    proto.opset_import.add(domain="com.example", version=1)
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(SRExportError) as info:
        network_from_onnx(rtx, bad)
    message = str(info.value)
    assert str(bad) in message and rtx.label in message
    assert f"{node.name!r} (NoSuchOp)" in message, message


def test_builder_errors_carry_tensorrt_messages(rtx, graphs, tmp_path):
    tiny = EngineOptions((32, 32), (64, 64), (128, 128), workspace_gib=1 / 1024)
    with pytest.raises(SRExportError, match=r"failed to build an engine .*workspace") as info:
        engine_from_onnx(graphs("fsrcnn", 2)[1], tmp_path / "e.engine", tiny, flavour=rtx)
    assert "Error Code" in str(info.value)  # TensorRT's own words, from the module's logger
    assert not (tmp_path / "e.engine").exists() and not sidecar_path(tmp_path / "e.engine").exists()


def test_reuse_force_and_options(rtx, graphs, tmp_path):
    fp32, _ = graphs("espcn", 2)
    engine = tmp_path / "e.engine"
    small = EngineOptions((32, 32), (48, 64), (96, 128))
    first = engine_from_onnx(fp32, engine, small, flavour=rtx)
    again = engine_from_onnx(fp32, engine, small, flavour=rtx)
    assert again.reused and again.sidecar["cache_key"] == first.sidecar["cache_key"]
    with pytest.raises(SRExportError, match="other inputs or options"):
        engine_from_onnx(fp32, engine, small, flavour=rtx, compute_capabilities="8.6")
    for_86 = engine_from_onnx(fp32, engine, small, flavour=rtx, compute_capabilities="8.6", force=True)
    assert for_86.sidecar["compute_capabilities"] == ["8.6"] and for_86.sidecar["cache_key"] != first.sidecar["cache_key"]
    engine.write_bytes(b"damaged")
    with pytest.raises(SRExportError, match="differs from the engine its sidecar describes"):
        engine_from_onnx(fp32, engine, small, flavour=rtx, compute_capabilities="8.6")
    with pytest.raises(SRExportError, match="TensorRT 10/11 options"):
        engine_from_onnx(fp32, tmp_path / "h.engine", dataclasses.replace(small, hardware_compatible=True),
                         flavour=rtx)
    with pytest.raises(SRExportError, match="TensorRT 10/11 options"):
        engine_from_onnx(fp32, tmp_path / "h.engine", flavour=rtx, settings={"version_compatible": True})
    with pytest.raises(SRExportError, match="compute capability '9.0'"):
        engine_from_onnx(fp32, tmp_path / "h.engine", small, flavour=rtx, compute_capabilities="9.0")


def test_parsed_precisions_of_a_network(rtx, graphs):
    precisions = network_precisions(network_from_onnx(rtx, graphs("fsrcnn", 3)[1]))
    # FSRCNN: 7 convolutions and the 9x9 transposed convolution, all HALF in the FP16 graph.
    assert precisions["by_type"]["CONVOLUTION"] == {"FP16": 7} and precisions["by_type"]["DECONVOLUTION"] == {"FP16": 1}
    assert precisions["fp16_share"] == 1.0


def test_build_command_builds_and_says_it_was_not_run(rtx, tmp_path):
    from srexport.cli import main

    result = CliRunner().invoke(main, ["build", "espcn", "--scale", "3", "--fp16", "--engine", "tensorrt-rtx",
                                       "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    engine = tmp_path / "espcn_x3.fp16.engine"
    assert engine.is_file() and read_sidecar(engine)["flavour"] == "tensorrt-rtx"
    assert "built and NOT run here" in result.output
    assert "compute capabilities 8.0, 8.6, 8.9, 12.0" in result.output
    assert "parsed: 3 conv layers FP16" in result.output
    info = CliRunner().invoke(main, ["info", str(engine)])
    assert info.exit_code == 0 and "tensorrt-rtx" in info.output
    refused = CliRunner().invoke(main, ["build", "espcn", "--scale", "3", "--fp16", "--engine", "tensorrt-rtx",
                                        "--max-shape", "4000x4000", "--memory-budget", "100MB", "-o", str(tmp_path),
                                        "--force"])
    assert refused.exit_code == 2 and "over the 100 MB budget" in refused.output
