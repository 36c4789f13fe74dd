"""srexport.published: REFERENCE.md section 3 as data."""

from __future__ import annotations

import pytest

from srexport.archs import list_networks
from srexport.published import bicubic, canonical_dataset, published, unpublished_reason


@pytest.mark.parametrize("scale, dataset, want", [
    (2, "Set5", (33.66, 0.9299)), (3, "Set5", (30.39, 0.8682)), (4, "Set5", (28.42, 0.8104)),
    (2, "Set14", (30.24, 0.8688)), (3, "Set14", (27.55, 0.7742)), (4, "Set14", (26.00, 0.7027)),
])
def test_bicubic_rows(scale, dataset, want):
    row = bicubic(scale, dataset)
    assert (row["psnr"], row["ssim"]) == want
    assert row["dataset"] == dataset and row["scale"] == scale


def test_table_rows():
    assert (published("srcnn_955", 3, "Set5")["psnr"], published("srcnn_955", 3, "Set5")["ssim"]) == (32.75, 0.9090)
    assert published("srcnn_955", 2, "Set14")["psnr"] == 32.42
    assert (published("fsrcnn", 4, "Set14")["psnr"], published("fsrcnn", 4, "Set14")["ssim"]) == (27.59, 0.7535)
    assert (published("vdsr", 2, "Set5")["psnr"], published("vdsr", 2, "Set5")["ssim"]) == (37.53, 0.9587)
    assert (published("drcn", 3, "Set14")["psnr"], published("drcn", 3, "Set14")["ssim"]) == (29.76, 0.8311)
    assert published("drcn", 4, "Set5")["psnr"] == 31.53


def test_srcnn_915_is_only_the_91_image_set5_x3_figure():
    row = published("srcnn", 3, "Set5")
    assert row["psnr"] == 32.39 and row["ssim"] is None
    assert "91" in row["note"]
    for scale, dataset in [(2, "Set5"), (4, "Set5"), (3, "Set14")]:
        assert published("srcnn", scale, dataset) is None


def test_fsrcnn_carries_the_91_image_figures():
    assert [published("fsrcnn", s, "Set5")["t91_psnr"] for s in (2, 3, 4)] == [36.94, 33.06, 30.55]
    assert published("fsrcnn", 3, "Set5")["psnr"] == 33.16
    assert published("fsrcnn", 3, "Set14")["t91_psnr"] is None


def test_espcn_is_flagged_as_not_the_bicubic_protocol():
    row = published("espcn", 3, "Set5")
    assert row["psnr"] == 33.13 and row["ssim"] is None
    assert row["protocol"] == "gaussian" and "not the bicubic protocol" in row["note"] and "33.00" in row["note"]
    assert published("espcn", 4, "Set14")["psnr"] == 27.73
    assert published("espcn", 2, "Set5") is None
    assert published("vdsr", 3, "Set5")["protocol"] == "bicubic"


def test_unpublished_networks_and_sets():
    for net in ("fsrcnn_s", "red"):
        for s in (2, 3, 4):
            assert published(net, s, "Set5") is None
        assert unpublished_reason(net)
    assert published("vdsr", 3, "Urban100") is None
    assert bicubic(3, "B100") is None
    assert published("nosuchnet", 3, "Set5") is None


def test_dataset_names_are_case_insensitive():
    assert canonical_dataset("set5") == "Set5" and canonical_dataset("SET14") == "Set14"
    assert published("vdsr", 3, "set5")["dataset"] == "Set5"


def test_every_registered_network_is_known():
    for net in list_networks():
        assert any(published(net, s, d) for s in (2, 3, 4) for d in ("Set5", "Set14")) or unpublished_reason(net)
