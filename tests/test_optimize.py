"""srexport.optimize: the rewrites of the FP32 ONNX graph: each exact (within 1e-5 on odd and 1-pixel
shapes), applied where it pays, and the original kept when the check fails."""

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from srexport import optimize
from srexport.archs import list_networks
from srexport.checkpoint import resolve_network
from srexport.onnx_export import onnx_from_model
from srexport.runtime import OnnxRuntimeRunner, open_runner


def _check(original, rewritten, sizes=((1, 11, 14), (2, 6, 9), (1, 1, 1), (1, 2, 5))):
    return optimize.max_abs_difference(original, rewritten, sizes)


@pytest.mark.parametrize("name,scale", [("fsrcnn", 2), ("fsrcnn", 3), ("fsrcnn", 4), ("fsrcnn_s", 3),
                                        ("red", 2), ("red", 3), ("red", 4)])
def test_conv_transpose_rewrites_exact(exported, name, scale):
    _, proto, _ = exported(name, scale)
    for strided in (False, True):
        rewritten, notes = optimize.rewrite_conv_transpose(proto, strided=strided)
        ops = [n.op_type for n in rewritten.graph.node]
        if strided:
            assert "ConvTranspose" not in ops and "DepthToSpace" in ops
        if strided or name == "red":  # RED's decoder has stride-1 ConvTranspose layers
            assert notes
        assert _check(proto, rewritten) <= 1e-5
        onnx.checker.check_model(rewritten)


@pytest.mark.parametrize("name", ["srcnn", "srcnn_955", "espcn", "vdsr", "drcn"])
def test_narrow_conv_rewrite_exact(exported, name):
    _, proto, _ = exported(name)
    rewritten, notes = optimize.rewrite_narrow_conv(proto, block=16)
    assert notes, "every one of these ends in a convolution with few output channels"
    assert _check(proto, rewritten) <= 1e-5
    assert len(rewritten.graph.initializer) >= len(proto.graph.initializer)


@pytest.mark.parametrize("name, block, form", [
    ("srcnn", 16, "phases"), ("srcnn_955", 16, "phases"),  # 5x5 with a square block: 4x4 output phases
    ("vdsr", 16, "depthwise"), ("drcn", 16, "depthwise"),  # 3x3: depthwise + channel sum
    ("srcnn", 8, "depthwise"),  # AVX2's block of 8 is no square
])
def test_single_output_conv_rewrite_exact(exported, name, block, form):
    _, proto, _ = exported(name)
    rewritten, notes = optimize.rewrite_single_output_conv(proto, block=block)
    assert notes and all(("stride 4" in line) == (form == "phases") for line in notes)
    groups = [a.i for n in rewritten.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert any(g > 1 for g in groups) == (form == "depthwise")
    if form == "phases":
        # the crop's size comes from a tensor outside the blocked layout (the bicubic DepthToSpace),
        # not from the Conv's blocked input, which ONNX Runtime would reorder whole to read its shape
        producers = {o: n for n in rewritten.graph.node for o in n.output}
        (crop,) = [n for n in rewritten.graph.node if n.op_type == "Slice" and n.name.endswith("/crop")]
        shape = producers[crop.input[2]]
        assert producers[shape.input[0]].op_type == "DepthToSpace"
    # odd sizes, 1 pixel and sizes that are no multiple of the 4x4 block exercise the crop
    assert _check(proto, rewritten) <= 1e-5
    onnx.checker.check_model(rewritten)


def _fsrcnn_with_slopes(exported, slopes) -> onnx.ModelProto:
    """FSRCNN x2's graph with each PReLU's slopes spread evenly over `slopes` (low, high)."""
    model = copy.deepcopy(exported("fsrcnn")[0])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.copy_(torch.linspace(*slopes, m.weight.numel()))
    return onnx_from_model(model, resolve_network("fsrcnn", 2, random_weights=True)[1])


@pytest.mark.parametrize("slopes, ops", [
    (None, {"LeakyRelu"}),  # a fresh FSRCNN: one slope (0.25) everywhere
    ((-0.2, 0.6), {"Mul", "Max"}),  # per channel, all <= 1
    ((1.5, 3.0), {"Mul", "Min"}),  # per channel, all >= 1
    ((-0.5, 2.0), {"Mul", "Max"}),  # both sides of 1: channels above 1 negated around the PRelu
])
def test_prelu_rewrites_are_exact(exported, slopes, ops):
    proto = exported("fsrcnn")[1] if slopes is None else _fsrcnn_with_slopes(exported, slopes)
    rewritten, notes = optimize.rewrite_prelu(proto)
    kinds = {n.op_type for n in rewritten.graph.node}
    assert len(notes) == 7 and "PRelu" not in kinds and ops == kinds - {"Conv", "ConvTranspose"}
    flipped = slopes is not None and slopes[1] > 1 > slopes[0]
    assert all("negated" in line for line in notes) == flipped
    assert _check(proto, rewritten) <= (1e-6 if flipped else 0.0)
    onnx.checker.check_model(rewritten)
    used = {name for n in rewritten.graph.node for name in n.input}
    assert all(t.name in used for t in rewritten.graph.initializer)  # replaced weights are dropped


def _conv_prelu_graph(slopes: np.ndarray, then_conv: bool) -> onnx.ModelProto:
    """x -> Conv 3x3 1->C -> PRelu(slopes) [-> Conv 1x1 C->1]: the PRelu's output is the graph's
    output when `then_conv` is False."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    c = slopes.size
    inits = [numpy_helper.from_array(rng.standard_normal((c, 1, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b1"),
             numpy_helper.from_array(slopes.reshape(c, 1, 1).astype(np.float32), "slope"),
             numpy_helper.from_array(rng.standard_normal((1, c, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["h", "slope"], ["a" if then_conv else "y"])]
    if then_conv:
        nodes.append(helper.make_node("Conv", ["a", "w2"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits if then_conv else inits[:3])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("then_conv", [True, False])
def test_prelu_sign_flip_needs_convs_on_both_sides(then_conv):
    proto = _conv_prelu_graph(np.array([-0.5, 0.3, 1.0, 1.7, 4.0]), then_conv)
    rewritten, notes = optimize.rewrite_prelu(proto)
    kinds = {n.op_type for n in rewritten.graph.node}
    if then_conv:  # two channels above 1 flipped: every channel then takes Max(x, x * slope)
        assert "(2 channels negated around it)" in notes[0] and "Min" not in kinds and "Max" in kinds
    else:  # the PRelu's output leaves the graph: nothing to fold -a into
        assert "negated" not in notes[0] and {"Min", "Add"} <= kinds
    assert _check(proto, rewritten) <= 1e-6


@pytest.mark.parametrize("slopes", [(-0.5, 2.0), (0.1, 0.4)])
def test_prelu_to_relu_is_exact(exported, slopes):
    """FSRCNN's first PRelu (56 channels, into the 1x1 shrink to 12) becomes a ReLU fused into a
    first Conv of 56 + 2 x 12 channels; the 12-channel PRelus have 3x3 neighbours and stay."""
    proto = _fsrcnn_with_slopes(exported, slopes)
    rewritten, notes = optimize.rewrite_prelu_to_relu(proto)
    assert len(notes) == 1 and "56->12" in notes[0] and "writes 80 channels" in notes[0]
    kinds = [n.op_type for n in rewritten.graph.node]
    assert kinds.count("PRelu") == 6 and kinds.count("Relu") == 1
    first = numpy_helper.to_array(next(t for t in rewritten.graph.initializer
                                       if t.name == rewritten.graph.node[kinds.index("Relu") - 1].input[1]))
    assert first.shape == (80, 1, 5, 5)
    assert _check(proto, rewritten) <= 1e-5  # the borders included: the shrink is 1x1
    onnx.checker.check_model(rewritten)
    used = {name for n in rewritten.graph.node for name in n.input}
    assert all(t.name in used for t in rewritten.graph.initializer)


@pytest.mark.parametrize("then_conv", [True, False])
def test_prelu_to_relu_needs_a_narrow_1x1_consumer(then_conv):
    proto = _conv_prelu_graph(np.array([-0.5, 0.3, 1.0, 1.7, 4.0]), then_conv)
    rewritten, notes = optimize.rewrite_prelu_to_relu(proto)
    if then_conv:  # 5 channels into a 1x1 Conv with 1 output: 5 + 2 channels, no PRelu
        assert len(notes) == 1 and "PRelu" not in {n.op_type for n in rewritten.graph.node}
        assert _check(proto, rewritten) <= 1e-5
    else:  # the PRelu's output is the graph's: nothing to fold the linear part into
        assert not notes and rewritten is proto
    uniform = _conv_prelu_graph(np.full(5, 0.25), True)  # LeakyRelu's case (rewrite_prelu)
    assert optimize.rewrite_prelu_to_relu(uniform)[1] == []


@pytest.mark.parametrize("name", list_networks())
def test_optimize_onnx_checked_within_1e5(exported, name):
    _, proto, _ = exported(name)
    fast, report = optimize.optimize_onnx(proto)
    if report.rewrites:
        assert report.applied and report.checked and report.max_abs <= 1e-5
        assert _check(proto, fast) <= 1e-5
    else:
        assert fast is proto


def test_optimize_keeps_original_when_check_fails(exported, monkeypatch):
    _, proto, _ = exported("red")
    monkeypatch.setattr(optimize, "max_abs_difference", lambda a, b, sizes: 1.0)
    fast, report = optimize.optimize_onnx(proto)
    assert fast is proto and not report.applied and "kept the original" in report.reason


def test_drcn_running_sum_cuts_memory(exported):
    """ONNX Runtime keeps every DRCN recursion alive through the Concat; the running sum does not."""
    from srexport.tiling import measured_bytes_per_lr_pixel

    _, proto, path = exported("drcn")
    rewritten, notes = optimize.rewrite_ensemble_sum(proto)
    assert notes and not [n for n in rewritten.graph.node if n.op_type == "Concat" and len(n.input) == 16]
    assert _check(proto, rewritten) <= 1e-5
    default = measured_bytes_per_lr_pixel(OnnxRuntimeRunner(path))
    tuned = measured_bytes_per_lr_pixel(open_runner(onnx_path=path))
    if default is None or tuned is None:
        pytest.skip("peak memory is not measurable here (needs Linux /proc)")
    assert tuned < default / 2
