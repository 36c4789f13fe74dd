"""srexport.evaluate: the published protocol, per image and mean, with the bicubic baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srexport.archs import MatlabBicubicUpsample, build
from srexport.data import imresize, round_uint8
from srexport.errors import SRExportError
from srexport.evaluate import EvalReport, detail_crop, evaluate
from srexport.metrics import bicubic_baseline

from _images import texture

torch.set_num_threads(1)
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="module")
def set5(tmp_path_factory):
    """Random images in a folder named Set5, so the published lookup applies."""
    d = tmp_path_factory.mktemp("sets") / "Set5"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(49, 50), (64, 40), (37, 61)]):
        img = texture(rng, h, w)
        Image.fromarray(img[..., 0] if i == 2 else img).save(d / f"img{i}.png")
    return d


def bicubic_runner(scale):
    """The 8-bit bicubic upscaler as a runner: its rounded output survives the /255 * 255 trip."""
    def run(x):
        lr = np.round(x[0, 0].astype(np.float64) * 255.0)
        return (round_uint8(imresize(lr, scale)) / 255.0)[None, None]
    return run


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_runner_gives_exactly_the_bicubic_baseline(set5, scale):
    rep = evaluate(bicubic_runner(scale), set5, scale)
    base = bicubic_baseline(set5, scale)
    assert [r.name for r in rep.images] == sorted(base["images"])
    for r in rep.images:
        assert r.psnr == r.bicubic_psnr == base["images"][r.name]["psnr"]
        assert r.ssim == r.bicubic_ssim == base["images"][r.name]["ssim"]
    assert rep.psnr == rep.bicubic_psnr == base["psnr"]
    assert rep.ssim == rep.bicubic_ssim == base["ssim"]


def test_bicubic_upsampler_module_matches_the_baseline(set5):
    up = MatlabBicubicUpsample(3)
    rep = evaluate(up, set5, 3, network="srcnn_955")
    assert rep.psnr == pytest.approx(rep.bicubic_psnr, abs=1e-3)
    assert rep.ssim == pytest.approx(rep.bicubic_ssim, abs=1e-5)


def test_report_fields_and_published_lookup(set5):
    model = build("vdsr", 3, depth=3, channels=4).train()
    rep = evaluate(model, set5, 3)
    assert model.training  # the caller's mode is restored
    assert isinstance(rep, EvalReport) and rep.network == "vdsr" and rep.scale == 3 and rep.dataset == "Set5"
    assert rep.published["psnr"] == 33.66 and rep.published["ssim"] == 0.9213
    assert rep.published_bicubic == {"scale": 3, "dataset": "Set5", "psnr": 30.39, "ssim": 0.8682}
    assert len(rep.images) == 3 and all(r.width % 3 == 0 and r.height % 3 == 0 for r in rep.images)
    assert rep.psnr == pytest.approx(np.mean([r.psnr for r in rep.images]))
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert set(d) >= {"network", "scale", "dataset", "images", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim",
                      "published", "published_bicubic"}
    assert set(d["images"][0]) == {"name", "width", "height", "bicubic_psnr", "bicubic_ssim", "psnr", "ssim"}
    table = rep.table()
    lines = table.splitlines()
    assert "vdsr x3 on Set5" in lines[0]
    assert all(any(r.name in line for line in lines) for r in rep.images)
    mean = next(line for line in lines if line.startswith("mean"))
    assert f"{rep.bicubic_psnr:.2f}" in mean and f"{rep.psnr:.2f}" in mean
    pubs = next(line for line in lines if line.startswith("published"))
    assert "33.66" in pubs and "30.39" in pubs


def test_table_says_when_nothing_is_published(set5):
    rep = evaluate(build("red", 2), set5, 2)
    assert rep.published is None and rep.unpublished_reason
    assert rep.unpublished_reason in rep.table()
    rep = evaluate(build("espcn", 3), set5, 3)
    assert "not the bicubic protocol" in rep.table()


def test_other_folder_names_have_no_published_figures(tmp_path, set5):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "a.png").write_bytes((set5 / "img0.png").read_bytes())
    rep = evaluate(bicubic_runner(2), other, 2, network="vdsr")
    assert rep.dataset == "mine" and rep.published is None and rep.published_bicubic is None
    assert "mean" in rep.table()


def test_save_images(set5, tmp_path):
    out = tmp_path / "imgs"
    rep = evaluate(bicubic_runner(2), set5, 2, network="srcnn", save_images=out)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"img{i}_x2_srcnn.png" for i in range(3)] + [f"img{i}_x2_compare.png" for i in range(3)])
    assert len(rep.saved) == 6
    with Image.open(out / "img0_x2_srcnn.png") as im:
        sr = np.asarray(im)
        assert im.mode == "L" and sr.shape == (rep.images[0].height, rep.images[0].width)
    with Image.open(out / "img1_x2_compare.png") as im:
        side = min(160, rep.images[1].height, rep.images[1].width)
        assert im.size == (3 * side + 8, side)
    with pytest.raises(SRExportError, match="already exists"):
        evaluate(bicubic_runner(2), set5, 2, network="srcnn", save_images=out)
    evaluate(bicubic_runner(2), set5, 2, network="srcnn", save_images=out, force=True)


def test_detail_crop_finds_the_busiest_window():
    hr = np.zeros((50, 80))
    hr[30:40, 60:70] = np.random.default_rng(0).uniform(0, 255, (10, 10))
    top, left, side = detail_crop(hr, 12)
    assert side == 12 and top <= 30 and top + 12 >= 40 and left <= 60 and left + 12 >= 70


def test_user_errors(set5, tmp_path):
    with pytest.raises(SRExportError, match="x2 network"):
        evaluate(build("espcn", 2), set5, 3)
    with pytest.raises(SRExportError, match="output has shape"):
        evaluate(lambda x: x, set5, 2)
    with pytest.raises(SRExportError, match="no such folder"):
        evaluate(bicubic_runner(2), tmp_path / "missing", 2)
    with pytest.raises(SRExportError, match="scale"):
        evaluate(bicubic_runner(2), set5, 5)


@pytest.mark.slow
def test_bicubic_upsampler_reproduces_the_published_bicubic_row():
    folder = DATASETS / "Set5"
    if not folder.is_dir():
        pytest.skip(f"dataset not found: {folder}")
    rep = evaluate(MatlabBicubicUpsample(3), folder, 3)
    assert rep.psnr == pytest.approx(30.39, abs=0.05) and rep.bicubic_psnr == pytest.approx(30.39, abs=0.05)
