"""Tiled upscaling equals untiled upscaling for every network; the receptive radius is conservative."""

import numpy as np
import pytest
import torch

from srexport.archs import build, list_networks
from srexport.checkpoint import resolve_network
from srexport.errors import SRExportError
from srexport.native import compiler
from srexport.runtime import TorchRunner, open_runner
from srexport.tiling import (activation_bytes_per_lr_pixel, auto_tile, parse_tile, receptive_radius,
                             upscale_tiled)

# (LR size, tile) per network: odd sizes, tiles smaller than the image; DRCN (256 channels, 16
# recursions) gets fewer, larger tiles to stay fast.
CASES = {name: ((19, 23), (6, 7)) for name in list_networks()}
CASES["drcn"] = ((13, 15), (7, 8))
CASES["vdsr"] = ((17, 21), (6, 11))


def _runner(name, scale):
    model, _ = resolve_network(name, scale, random_weights=True)
    runner = TorchRunner(model)
    runner.arch = model
    return runner


@pytest.mark.parametrize("name", list_networks())
def test_tiled_equals_untiled(name):
    (h, w), tile = CASES[name]
    scale = 2 if name in ("drcn", "vdsr") else 3
    runner = _runner(name, scale)
    x = np.random.default_rng(1).random((1, 1, h, w), dtype=np.float32)
    whole = runner(x)
    tiled = upscale_tiled(runner, x, scale, tile)
    assert tiled.shape == whole.shape == (1, 1, scale * h, scale * w)
    assert np.abs(tiled - whole).max() <= 1e-5


@pytest.mark.parametrize("name", ["fsrcnn", "espcn", "red", "srcnn"])
def test_tiled_equals_untiled_more_shapes(name):
    """Square and rectangular tiles, a batch of 2, a 1-pixel-thin last tile row, scale 2 and 4."""
    rng = np.random.default_rng(2)
    for scale, shape, tile in ((2, (2, 1, 13, 9), 4), (4, (1, 1, 9, 15), (8, 4)), (2, (1, 1, 11, 10), 5)):
        runner = _runner(name, scale)
        x = rng.random(shape, dtype=np.float32)
        assert np.abs(upscale_tiled(runner, x, scale, tile) - runner(x)).max() <= 1e-5


def test_tiled_with_onnxruntime_runner():
    model, _ = resolve_network("fsrcnn", 2, random_weights=True)
    runner = open_runner(model=model, backend="onnxruntime")
    x = np.random.default_rng(3).random((1, 1, 21, 26), dtype=np.float32)
    assert runner.arch is model
    assert np.abs(upscale_tiled(runner, x, 2, 8) - runner(x)).max() <= 1e-5


@pytest.mark.skipif(compiler() is None, reason="no C compiler (cc) to build the fused kernel")
@pytest.mark.parametrize("name", ["fsrcnn", "espcn"])
def test_tiled_with_native_runner(name):
    model, _ = resolve_network(name, 3, random_weights=True)
    runner = open_runner(model=model, backend="native")
    x = np.random.default_rng(4).random((1, 1, 45, 50), dtype=np.float32)
    for tile in (8, (20, 33)):  # tiles of a single band of rows, and of two bands
        assert np.abs(upscale_tiled(runner, x, 3, tile) - runner(x)).max() <= 1e-5


@pytest.mark.parametrize("name", list_networks())
def test_receptive_radius_is_conservative(name):
    """The computed radius covers the support of d output / d input of a centre output pixel."""
    scale = 2
    torch.manual_seed(0)
    # The radius depends on the layers, not their widths: narrow DRCN and VDSR to keep this fast.
    narrow = {"drcn": {"channels": 8}, "vdsr": {"channels": 8}, "srcnn_955": {"n1": 8, "n2": 8}}
    model = build(name, scale, **narrow.get(name, {})).double().eval()
    radius = receptive_radius(model)
    assert radius == receptive_radius(build(name, scale))
    size = 2 * radius + 9
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    centre = size // 2
    y = model(x)
    worst = 0
    for dy in range(scale):  # every output phase of the centre LR pixel
        for dx in range(scale):
            if x.grad is not None:
                x.grad = None
            y[0, 0, scale * centre + dy, scale * centre + dx].backward(retain_graph=True)
            ys, xs = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
            worst = max(worst, abs(ys - centre).max(), abs(xs - centre).max())
    assert 1 <= worst <= radius
    assert radius <= worst + 4  # conservative, not wildly so


def test_receptive_radius_values():
    assert receptive_radius(build("espcn", 3)) == 5  # 2 + 1 + 1 + the pixel shuffle
    assert receptive_radius(build("red", 2)) == 12
    assert activation_bytes_per_lr_pixel(build("vdsr", 2)) == 64 * 4 * 4  # 64 ch x 4 HR px x 4 B


def test_auto_tile():
    model = build("vdsr", 2)
    assert auto_tile(model, 100, 100, budget_bytes=1 << 34) is None
    th, tw = auto_tile(model, 1000, 1000, budget_bytes=64 << 20)
    per_px = activation_bytes_per_lr_pixel(model) * 3
    radius = receptive_radius(model)
    assert 8 <= min(th, tw) and (th + 2 * radius) * (tw + 2 * radius) * per_px <= 64 << 20
    assert auto_tile(model, 100, 100, budget_bytes=1 << 34, max_hw=(64, 80)) == (64 - 2 * radius, 80 - 2 * radius)
    # A frame a little over budget is cut into a few strips, not many small squares.
    th, tw = auto_tile(model, 540, 960, bytes_per_lr_pixel=1000, budget_bytes=int(1000 * 540 * 960 * 0.6))
    assert (540 // th) * (960 // tw) <= 2
    with pytest.raises(SRExportError, match="not enough memory"):
        auto_tile(model, 1000, 1000, budget_bytes=1000)


def test_auto_tiling_in_upscale(monkeypatch):
    runner = _runner("espcn", 2)
    x = np.random.default_rng(4).random((1, 1, 30, 40), dtype=np.float32)
    import srexport.tiling as tiling

    monkeypatch.setattr(tiling, "available_memory", lambda: 4 * 256 * 3 * (16 + 10) ** 2)  # ~16 px tiles
    calls = []

    def counting(a):
        calls.append(a.shape)
        return runner(a)

    wrapped = type("W", (), {"__call__": lambda self, a: counting(a), "arch": runner.arch, "scale": 2})()
    out = upscale_tiled(wrapped, x, 2, "auto")
    assert len(calls) > 1 and np.abs(out - runner(x)).max() <= 1e-5


def test_parse_tile_and_errors():
    assert parse_tile(None) is None and parse_tile("0") is None and parse_tile(0) is None
    assert parse_tile("auto") == "auto" and parse_tile("128") == 128 and parse_tile(64) == 64
    with pytest.raises(SRExportError):
        parse_tile("big")
    runner = _runner("espcn", 2)
    with pytest.raises(SRExportError, match="N, 1, H, W"):
        upscale_tiled(runner, np.zeros((4, 4), np.float32), 2, 2)
    bare = type("B", (), {"__call__": lambda self, a: a, "scale": 2})()
    with pytest.raises(SRExportError, match="overlap"):
        upscale_tiled(bare, np.zeros((1, 1, 8, 8), np.float32), 2, 4)


def test_engine_profile_limit_tiles_automatically():
    """A runner with an engine-like input limit gets tiles that fit it, even with tile=None."""
    base = _runner("espcn", 2)
    seen = []

    class Limited:
        scale, arch, max_input_hw = 2, base.arch, (16, 18)

        def __call__(self, a):
            assert a.shape[2] <= 16 and a.shape[3] <= 18
            seen.append(a.shape)
            return base(a)

    x = np.random.default_rng(5).random((1, 1, 23, 29), dtype=np.float32)
    assert np.abs(upscale_tiled(Limited(), x, 2, None) - base(x)).max() <= 1e-5
    assert len(seen) > 1


def test_runner_memory_per_pixel_is_at_least_the_layer_estimate():
    from srexport.tiling import ACTIVATIONS_ALIVE, measured_bytes_per_lr_pixel, runner_bytes_per_lr_pixel

    runner = _runner("fsrcnn", 2)
    measured = measured_bytes_per_lr_pixel(runner)
    assert measured is None or measured >= 0
    value = runner_bytes_per_lr_pixel(runner)
    assert value >= activation_bytes_per_lr_pixel(runner.arch) * ACTIVATIONS_ALIVE
    assert runner_bytes_per_lr_pixel(runner) == value  # cached
