"""The fused CPU kernel (srexport/native.py, srexport/csrc/chain.c) against PyTorch, on the graphs it
takes (FSRCNN, FSRCNN-s, ESPCN) and the ones it must refuse."""

import copy

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from srexport import native, runtime
from srexport.checkpoint import resolve_network
from srexport.cli import main
from srexport.onnx_export import onnx_from_model
from srexport.runtime import open_runner_for

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C compiler (cc) to build the fused kernel")


def _network(name, scale, slopes=(-0.5, 2.0)):
    """A network with random weights and, for FSRCNN, per-channel PReLU slopes on both sides of 1."""
    model, record = resolve_network(name, scale, random_weights=True)
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.copy_(torch.linspace(*slopes, m.weight.numel()))
    return model.eval(), onnx_from_model(model, record)


@needs_compiler
@pytest.mark.parametrize("name", ["fsrcnn", "fsrcnn_s", "espcn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_pytorch(name, scale):
    model, proto = _network(name, scale)
    runner = native.NativeRunner(proto, threads=3)
    assert runner.scale == scale and runner.info["max_abs_vs_onnxruntime"] <= 1e-5
    rng = np.random.default_rng(scale)
    # odd, 1-pixel, batched, and tall enough for 3 bands of rows (each recomputing rows at its edges)
    for shape in [(1, 1, 1, 1), (1, 1, 11, 13), (2, 1, 5, 7), (1, 1, 3 * native.MIN_BAND_ROWS + 7, 75), (1, 1, 2, 130)]:
        x = rng.random(shape, dtype=np.float32) * 4 - 2  # tanh's whole range (ESPCN), both PReLU sides
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5, shape


@needs_compiler
def test_tanh_saturates_like_pytorch():
    """ESPCN with its first layer's weights x 60: pre-activations far past tanh's +-9 clamp, both signs."""
    model, _ = _network("espcn", 2)
    with torch.no_grad():
        model.body[0].weight.mul_(60)
    proto = onnx_from_model(model, resolve_network("espcn", 2, random_weights=True)[1])
    x = np.random.default_rng(5).random((1, 1, 19, 23), dtype=np.float32) * 4 - 2
    with torch.no_grad():
        pre = model.body[0](torch.from_numpy(x))
        expected = model(torch.from_numpy(x)).numpy()
    assert pre.min() < -50 and pre.max() > 50
    assert np.abs(native.NativeRunner(proto)(x) - expected).max() <= 1e-5


def test_subpixel_conv_becomes_one_tap_per_kernel_position():
    for scale in (2, 3, 4):
        model, proto = _network("espcn", scale)
        chain = native.chain_from_onnx(proto)
        real = chain.phase >= 0
        assert real.sum() == 9 * scale * scale and set(chain.dy[real]) == set(chain.dx[real]) == {-1, 0, 1}
        assert [c.act for c in chain.layers] == [native.ACT_TANH, native.ACT_TANH, native.ACT_NONE]
        np.testing.assert_array_equal(chain.bias, model.body[4].bias.detach().numpy())  # one bias per phase


def test_transposed_conv_becomes_81_taps_without_zeros():
    for scale in (2, 3, 4):
        chain = native.chain_from_onnx(_network("fsrcnn", scale)[1])
        real = chain.phase >= 0
        assert real.sum() == 81  # every tap of the 9x9 kernel lands on exactly one phase
        assert len(chain.phase) % 14 == 0 or len(chain.phase) % 12 == 0 or len(chain.phase) % 8 == 0
        assert sorted(set(chain.phase[real])) == list(range(scale * scale))
        assert not np.any(np.all(chain.layers[-1].weight[real] == 0, axis=(1, 2, 3)))
        assert [c.weight.shape[1:] for c in chain.layers[:2]] == [(1, 5, 5), (56, 1, 1)]


@pytest.mark.parametrize("name", ["srcnn", "srcnn_955", "vdsr", "drcn", "red"])
def test_refuses_other_networks(name):
    _, proto = _network(name, 2)
    with pytest.raises(native.NotAChain, match=r"^net x2: "):
        native.chain_from_onnx(proto, "net x2")


def test_refuses_a_transposed_conv_that_is_not_exactly_s_times():
    _, proto = _network("fsrcnn", 2)
    proto = copy.deepcopy(proto)
    deconv = next(n for n in proto.graph.node if n.op_type == "ConvTranspose")
    for a in deconv.attribute:
        if a.name == "output_padding":
            a.ints[:] = [0, 0]
    with pytest.raises(native.NotAChain, match="not exactly 2 x its input"):
        native.chain_from_onnx(proto)


@needs_compiler
def test_auto_picks_it_where_it_applies():
    assert open_runner_for("fsrcnn", 3, random_weights=True).name == "native-cpu-fused"
    wide = native.library().sr_vector_floats() == 16  # ESPCN only with AVX-512 (auto_choice)
    assert open_runner_for("espcn", 3, random_weights=True).name == ("native-cpu-fused" if wide else
                                                                     "onnxruntime-cpu-tuned")
    assert open_runner_for("red", 3, random_weights=True).name == "onnxruntime-cpu-tuned"
    assert open_runner_for("fsrcnn", 3, random_weights=True, backend="onnxruntime").name == "onnxruntime-cpu-tuned"


def test_auto_choice_by_vector_width():
    fsrcnn, espcn = (native.chain_from_onnx(_network(name, 2)[1]) for name in ("fsrcnn", "espcn"))
    assert [native.auto_choice(fsrcnn, floats) == "" for floats in (16, 8, 4)] == [True, True, False]
    assert [native.auto_choice(espcn, floats) == "" for floats in (16, 8, 4)] == [True, False, False]


def _cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag}" in line for line in f)
    except OSError:
        return False


@needs_compiler
@pytest.mark.skipif(not _cpu_has("avx2"), reason="needs an x86 CPU with AVX2 to run the AVX2 and SSE builds")
def test_narrower_builds_are_exact_and_auto_follows_them(monkeypatch, tmp_path):
    """The kernel built for AVX2 and for SSE (8- and 4-float vectors, the 16-register blocking)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model, proto = _network("espcn", 2)
    x = np.random.default_rng(6).random((1, 1, 37, 41), dtype=np.float32) * 4 - 2
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    flags = native.FLAGS
    try:
        for march, floats in (("x86-64-v3", 8), ("x86-64", 4)):
            monkeypatch.setattr(native, "FLAGS", tuple(f"-march={march}" if f == "-march=native" else f for f in flags))
            native.forget_library()
            runner = native.NativeRunner(proto)
            assert runner.vector_floats == floats
            assert np.abs(runner(x) - expected).max() <= 1e-5
            assert native.NativeRunner(_network("fsrcnn", 3)[1]).vector_floats == floats
            assert open_runner_for("espcn", 2, random_weights=True).name == "onnxruntime-cpu-tuned"
            fsrcnn = open_runner_for("fsrcnn", 2, random_weights=True).name
            assert fsrcnn == ("native-cpu-fused" if floats == 8 else "onnxruntime-cpu-tuned")
    finally:
        native.forget_library()


@needs_compiler
def test_a_failed_check_is_an_error_for_native_and_a_warning_for_auto(monkeypatch):
    import srexport.optimize

    monkeypatch.setattr(srexport.optimize, "MAX_ABS", -1.0)  # no output can pass
    with pytest.raises(native.CheckFailed, match="the fused kernel's output differs from ONNX Runtime's"):
        open_runner_for("fsrcnn", 2, random_weights=True, backend="native")
    with pytest.warns(UserWarning, match="fused CPU kernel not used"):
        assert open_runner_for("fsrcnn", 2, random_weights=True).name == "onnxruntime-cpu-tuned"


def test_no_compiler_falls_back_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    native.forget_library()
    try:
        _, proto = _network("fsrcnn", 2)
        assert "no C compiler" in native.applicable(proto)
        assert open_runner_for("fsrcnn", 2, random_weights=True).name == "onnxruntime-cpu-tuned"
    finally:
        native.forget_library()


@needs_compiler
def test_a_failed_build_leaves_nothing_in_the_cache_and_is_not_retried(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    good = native.SOURCE
    bad = tmp_path / "chain.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCE", bad)
    native.forget_library()
    try:
        with pytest.raises(native.MissingBackend, match=r"chain\.c: .* could not build the fused kernel"):
            native.library()
        assert list((tmp_path / "srexport" / "native").iterdir()) == []
        monkeypatch.setattr(native, "SOURCE", good)
        with pytest.raises(native.MissingBackend):  # the failure stands for the process
            native.library()
        native.forget_library()
        native.library()
        assert [p.suffix for p in (tmp_path / "srexport" / "native").iterdir()] == [".so"]
    finally:
        native.forget_library()


@needs_compiler
def test_cli_upscale_with_native_backend(tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (23, 31, 3), dtype=np.uint8)).save(image)
    runner = CliRunner()
    out = tmp_path / "out.png"
    result = runner.invoke(main, ["upscale", str(image), "-o", str(out), "--model", "fsrcnn", "--scale", "2",
                                  "--backend", "native"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (62, 46)
    result = runner.invoke(main, ["upscale", str(image), "-o", str(tmp_path / "e.png"), "--model", "red",
                                  "--scale", "2", "--backend", "native"])
    assert result.exit_code != 0 and not (tmp_path / "e.png").exists()
    assert result.output.startswith("error: red x2: ") and "use auto or onnxruntime" in result.output
    assert "Traceback" not in result.output


def test_onnx_file_input_is_read_the_same(tmp_path):
    _, proto = _network("fsrcnn_s", 3)
    path = tmp_path / "f.onnx"
    onnx.save(proto, str(path))
    from_file = native.chain_from_onnx(onnx.load(str(path)))
    assert from_file.scale == 3 and len(from_file.layers) == 5  # 1 + shrink + 1 mapping + expand + taps


# --- bf16 ------------------------------------------------------------------------------------

def _bf16_kernel_missing() -> str:
    if native.compiler() is None:
        return "no C compiler (cc) to build the fused kernel"
    if native.bf16_refusal():
        return native.bf16_refusal()
    try:
        return "" if native.library().sr_has_bf16() else "the compiler does not enable AVX512_BF16 here"
    except native.MissingBackend as e:
        return str(e)


needs_bf16 = pytest.mark.skipif(bool(_bf16_kernel_missing()), reason=_bf16_kernel_missing() or "")


def _bf16_emulation(model):
    """`model` as the bf16 kernel computes it: every convolution after the first with bf16 weights
    and bf16 inputs (the stored activations), every sum in FP32."""
    model = copy.deepcopy(model).eval()
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        for conv in convs[1:]:
            conv.weight.copy_(torch.from_numpy(native.bf16_round(conv.weight.numpy())))
            conv.register_forward_pre_hook(lambda m, args: (torch.from_numpy(native.bf16_round(args[0].numpy())),))
    return model


def test_bf16_refusal_follows_the_cpu_flags():
    assert native.bf16_refusal({"avx512f", "avx512_bf16", "avx512_vnni"}) == ""
    assert native.bf16_refusal({"avx512f", "amx_bf16", "amx_tile"}) == ""
    zen3 = native.bf16_refusal({"avx2", "fma", "sse4_2"})  # AVX2 only: no bf16 dot products
    assert "no bf16 dot products" in zen3 and "--precision fp32" in zen3
    assert "AVX512_BF16" in native.bf16_refusal({"avx512f", "avx512_vnni"})  # Ice Lake / Zen 3 class
    assert native.bf16_refusal(set()).startswith("--precision bf16: cannot read")
    assert native.bf16_refusal() == native.bf16_refusal(native.cpu_flags())


def test_bf16_words_round_to_nearest_even_in_pairs():
    x = np.array([[1.0, -2.0, 1.00390625, 1.01171875]], np.float32)  # 1 + 2^-8 ties to 1; 1 + 3*2^-8 to 1 + 2^-6
    words = native.bf16_words(x)
    assert words.shape == (1, 2) and words.dtype == np.uint32
    assert [hex(int(w)) for w in words[0]] == [hex(0xC0003F80), hex(0x3F823F80)]
    np.testing.assert_array_equal(native.bf16_round(x), [[1.0, -2.0, 1.0, 1.015625]])


@needs_bf16
@pytest.mark.parametrize("name", ["fsrcnn", "fsrcnn_s", "espcn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bf16_kernel_is_bf16_and_within_50_db(name, scale):
    """Shipped weights, real LR crops: the kernel equals a bf16 emulation in PyTorch (FP32 sums) far
    closer than it equals FP32, and passed its own >= 50 dB check against FP32."""
    from srexport.verify import diff_case, real_inputs

    model, record = resolve_network(name, scale)
    runner = native.NativeRunner(onnx_from_model(model, record), threads=3, precision="bf16")
    assert runner.info["precision"] == "bf16" and runner.info["psnr_db_vs_fp32"] >= 50
    emulation = _bf16_emulation(model)
    for x in real_inputs([(1, 3 * native.MIN_BAND_ROWS + 7, 75), (2, 9, 11), (1, 1, 1)], seed=scale):
        with torch.no_grad():
            fp32 = model(torch.from_numpy(x)).numpy()
            bf16 = emulation(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert diff_case(bf16, got, x.shape).psnr_db >= 75, x.shape
        if x.size > 1:
            assert diff_case(fp32, got, x.shape).psnr_db < 75, x.shape  # really computed in bf16


@needs_bf16
def test_bf16_under_50_db_is_refused():
    """ESPCN with its last layer x 300: outputs far outside [0, 1], so bf16's relative error is
    far more than 50 dB of the unit range. The kernel refuses; auto then tries OpenVINO's bf16,
    whose check refuses it too (or is missing), never running below the bar."""
    from srexport.errors import SRExportError

    model, record = resolve_network("espcn", 2)
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.body[4].weight.mul_(300)
    proto = onnx_from_model(model, record)
    with pytest.raises(native.CheckFailed, match="dB from FP32 on real images"):
        native.NativeRunner(proto, precision="bf16")
    with pytest.raises(SRExportError), pytest.warns(UserWarning, match="fused CPU kernel not used"):
        runtime.open_runner(model=model, precision="bf16")


@needs_bf16
def test_cli_upscale_bf16_is_close_to_fp32(tmp_path):
    img = Image.open(sorted((native.Path(native.__file__).parent / "samples").glob("*.png"))[0])
    src = tmp_path / "in.png"
    img.save(src)
    outs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"out_{precision}.png"
        res = CliRunner().invoke(main, ["upscale", str(src), "-o", str(out), "--model", "espcn", "--scale", "2",
                                        "--precision", precision])
        assert res.exit_code == 0, res.output
        outs[precision] = np.asarray(Image.open(out), dtype=np.float64)
    diff = outs["bf16"] - outs["fp32"]
    assert np.abs(diff).max() <= 3 and 0 < np.mean(diff ** 2)  # 8-bit output: a few levels apart at most
