"""srexport.engine.profiles: shapes, sizes, EngineOptions and the activation-memory model (pure Python)."""

from __future__ import annotations

import math

import pytest

from srexport.engine.build import resolve_options
from srexport.engine.profiles import (DEFAULT_MEMORY_BUDGET, HEADROOM, ActivationModel, EngineOptions, human_bytes,
                                      parse_bytes, parse_shape)
from srexport.errors import SRExportError


@pytest.mark.parametrize("text, shape", [("540x960", (540, 960)), (" 7 X 11 ", (7, 11)), ("1x1", (1, 1))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["540", "0x5", "5x0", "axb", "540x960x3", "", "-1x5", "5.5x3"])
def test_parse_shape_rejects_bad_text(text):
    with pytest.raises(SRExportError, match="HEIGHTxWIDTH"):
        parse_shape(text)


@pytest.mark.parametrize("text, size", [("2GiB", 2 << 30), ("1.5 GB", 1_500_000_000), ("512m", 512 << 20),
                                        ("100MB", 100_000_000), (4096, 4096), ("64kib", 64 << 10)])
def test_parse_bytes(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5GB", "2 parsecs", "GB", "1.2.3GB"])
def test_parse_bytes_rejects_bad_text(text):
    with pytest.raises(SRExportError, match="bad memory size"):
        parse_bytes(text)


def test_human_bytes():
    assert human_bytes(2 << 30) == "2.15 GB" and human_bytes(52_428_800) == "52.4 MB" and human_bytes(12) == "12 bytes"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_options_cover_1080p_output_from_a_real_tile(scale):
    opts = EngineOptions.default_for(scale)
    (hmax, wmax), (hopt, wopt) = opts.max_shape, opts.opt_shape
    assert hmax * scale >= 1080 and wmax * scale >= 1920  # covers 1080p ...
    assert (hmax - 1) * scale < 1080 and (wmax - 1) * scale < 1920  # ... and no more
    assert (hopt, wopt) == (math.ceil(hmax / 2), math.ceil(wmax / 2))
    assert opts.min_shape == (32, 32) and opts.batch == (1, 1, 1)
    assert opts.workspace_gib == 4 and opts.optimization_level == 3
    assert not opts.hardware_compatible and not opts.version_compatible
    assert opts.profile() == {"input": "lr", "min": [1, 1, 32, 32], "opt": [1, 1, hopt, wopt],
                              "max": [1, 1, hmax, wmax]}
    assert EngineOptions.default_for(2).max_shape == (540, 960)
    assert EngineOptions.default_for(2, max_shape=(20, 40)).min_shape == (20, 32)  # never above max


@pytest.mark.parametrize("kwargs", [
    {"min_shape": (2, 2), "opt_shape": (1, 1), "max_shape": (4, 4)},
    {"min_shape": (1, 1), "opt_shape": (5, 5), "max_shape": (4, 4)},
    {"min_shape": (0, 1), "opt_shape": (1, 1), "max_shape": (4, 4)},
    {"min_shape": (1, 1), "opt_shape": (1, 1), "max_shape": (4, 4), "batch": (2, 1, 1)},
    {"min_shape": (1, 1), "opt_shape": (1, 1), "max_shape": (4, 4), "workspace_gib": 0},
    {"min_shape": (1, 1), "opt_shape": (1, 1), "max_shape": (4, 4), "optimization_level": 6},
])
def test_engine_options_reject_inconsistent_profiles(kwargs):
    with pytest.raises(SRExportError):
        EngineOptions(**kwargs)


def test_engine_options_accept_lists():
    opts = EngineOptions([1, 1], [2, 2], [3, 3], batch=[1, 1, 1])
    assert opts.min_shape == (1, 1) and opts.batch == (1, 1, 1) and opts.to_dict()["max_shape"] == [3, 3]


# What TensorRT-RTX 1.7's builder reported for DRCN x3 (FP32): 960.5 MB at 64x64, 3.79 GB at 128x128.
DRCN = ActivationModel(fixed=960_544_768 - 230_509.2 * 4096, per_pixel=230_509.2, measured_by="test figures")


def test_activation_model_predicts_linearly_and_checks_the_budget():
    assert DRCN.bytes_for((64, 64)) == pytest.approx(960_544_768, rel=1e-6)
    assert DRCN.bytes_for((128, 128)) == pytest.approx(3_793_027_072, rel=1e-3)
    assert DRCN.bytes_for((64, 64), batch=2) > DRCN.bytes_for((64, 64))
    options = EngineOptions((32, 32), (64, 64), (128, 128))
    assert DRCN.check(options, 4 << 30, "x.onnx") == DRCN.bytes_for((128, 128))
    with pytest.raises(SRExportError, match=r"x.onnx: a profile up to 128x128 .* would need 3.79 GB .* 2.15 GB budget"):
        DRCN.check(options, DEFAULT_MEMORY_BUDGET, "x.onnx")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_largest_shape_fits_the_budget_with_headroom(scale):
    h, w = DRCN.largest_shape(DEFAULT_MEMORY_BUDGET, scale)
    assert h % 8 == 0 and w % 8 == 0 and abs(w / h - 16 / 9) < 0.1
    assert DRCN.bytes_for((h, w)) <= HEADROOM * DEFAULT_MEMORY_BUDGET
    assert DRCN.bytes_for((h + 8, w + 16)) > HEADROOM * DEFAULT_MEMORY_BUDGET * 0.9  # not far below it
    small = ActivationModel(fixed=8e6, per_pixel=192, measured_by="espcn")
    assert small.largest_shape(DEFAULT_MEMORY_BUDGET, scale) == (math.ceil(1080 / scale), math.ceil(1920 / scale))
    with pytest.raises(SRExportError, match="does not fit even a 32x32 profile"):
        DRCN.largest_shape(100_000_000, scale)


def test_resolve_options_fills_what_was_not_given():
    opts = resolve_options(3, DRCN, DEFAULT_MEMORY_BUDGET)
    assert opts.max_shape == DRCN.largest_shape(DEFAULT_MEMORY_BUDGET, 3) and opts.min_shape == (32, 32)
    assert opts.opt_shape == tuple(math.ceil(v / 2) for v in opts.max_shape)
    given = resolve_options(3, DRCN, DEFAULT_MEMORY_BUDGET, max_shape=(64, 96), min_shape=(8, 8),
                            version_compatible=True)
    assert (given.min_shape, given.opt_shape, given.max_shape) == ((8, 8), (32, 48), (64, 96))
    assert given.version_compatible
    assert resolve_options(2, None, DEFAULT_MEMORY_BUDGET).max_shape == (540, 960)  # no model: the 1080p cover
    assert resolve_options(2, None, 16 << 30).workspace_gib == 16  # activations come from the workspace
    with pytest.raises(SRExportError, match="min <= opt <= max"):
        resolve_options(2, None, DEFAULT_MEMORY_BUDGET, min_shape=(600, 600))
