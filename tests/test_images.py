"""Image files through upscale_image / upscale_many: formats, colour protocol, alpha, 16-bit,
grayscale, EXIF orientation, per-file errors in a batch, --force and atomic writes."""

import os

import numpy as np
import pytest
from PIL import Image

from srexport import images
from srexport.checkpoint import resolve_network
from srexport.data import imresize, rgb2ycbcr, ycbcr2rgb
from srexport.errors import SRExportError
from srexport.images import upscale_image, upscale_many
from srexport.runtime import open_runner

SCALE = 2


@pytest.fixture(scope="module")
def runner():
    model, _ = resolve_network("espcn", SCALE, random_weights=True)
    return open_runner(model=model)


def _rgb(h=13, w=17, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _expected_rgb(runner, rgb):
    """The protocol computed independently: MATLAB rgb2ycbcr, Y/255 through the network, Cb/Cr by
    data.imresize (the MATLAB port), back with ycbcr2rgb, rounded."""
    ycc = rgb2ycbcr(rgb.astype(np.float64))
    y = runner((ycc[..., 0] / 255).astype(np.float32)[None, None])[0, 0].astype(np.float64) * 255
    cb, cr = imresize(ycc[..., 1], SCALE), imresize(ycc[..., 2], SCALE)
    return np.clip(np.floor(ycbcr2rgb(np.stack([y, cb, cr], -1)) + 0.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_formats_round_trip(runner, tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    rgb = _rgb()
    Image.fromarray(rgb).save(src)
    out = upscale_image(runner, src, tmp_path / f"out{suffix}")
    with Image.open(out) as im:
        assert im.format == images.FORMATS[suffix]
        assert im.size == (SCALE * 17, SCALE * 13) and im.mode == "RGB"
        got = np.asarray(im)
    if suffix in (".png", ".bmp", ".tif"):  # lossless: exactly the protocol's result
        with Image.open(src) as im:
            decoded = np.asarray(im.convert("RGB"))
        assert np.abs(got.astype(int) - _expected_rgb(runner, decoded)).max() <= 1


def test_grayscale_is_its_own_y(runner, tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (11, 9), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = upscale_image(runner, tmp_path / "g.png", tmp_path / "g_out.png")
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (18, 22)
        got = np.asarray(im)
    want = runner((gray / 255).astype(np.float32)[None, None])[0, 0] * 255
    assert np.abs(got - np.clip(np.floor(want + 0.5), 0, 255)).max() <= 1


def test_rgba_keeps_alpha(runner, tmp_path):
    rgba = np.random.default_rng(2).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0  # a transparent top half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = upscale_image(runner, tmp_path / "a.png", tmp_path / "a_out.png")
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (24, 20)
        alpha = np.asarray(im)[..., 3]
    want = np.clip(np.floor(imresize(rgba[..., 3].astype(np.float64), SCALE) + 0.5), 0, 255)
    assert np.abs(alpha - want).max() <= 1
    assert alpha[:8].max() == 0  # the transparent rows stay transparent away from the edge


def test_16_bit_png_stays_16_bit(runner, tmp_path):
    g16 = np.random.default_rng(3).integers(0, 65536, (9, 11)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode == "I;16"
    out = upscale_image(runner, tmp_path / "d.png", tmp_path / "d_out.png")
    with Image.open(out) as im:
        assert im.mode == "I;16" and im.size == (22, 18)
        got = np.asarray(im).astype(np.float64)
    want = runner((g16 / 65535).astype(np.float32)[None, None])[0, 0].astype(np.float64) * 65535
    assert np.abs(got - np.clip(np.floor(want + 0.5), 0, 65535)).max() <= 2  # float32 network I/O
    assert got.max() > 255  # really 16-bit values
    tif = upscale_image(runner, tmp_path / "d.png", tmp_path / "d_out.tif")
    with Image.open(tif) as im:
        assert im.mode.startswith("I;16")


def test_exif_orientation_is_applied(runner, tmp_path):
    rgb = _rgb(8, 14, seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = upscale_image(runner, tmp_path / "r.jpg", tmp_path / "r_out.jpg")
    with Image.open(out) as im:
        assert im.size == (SCALE * 8, SCALE * 14)  # width and height swapped: displayed upright
        assert im.getexif().get(0x0112, 1) == 1


def test_batch_reports_bad_files_and_processes_the_rest(runner, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i, suffix in enumerate([".png", ".jpg"]):
        Image.fromarray(_rgb(seed=i)).save(src / f"good{i}{suffix}")
    (src / "empty.png").write_bytes(b"")  # zero-size file
    Image.fromarray(_rgb(seed=5)).save(src / "cut.png")
    data = (src / "cut.png").read_bytes()
    (src / "cut.png").write_bytes(data[: len(data) // 2])  # truncated
    (src / "notes.txt").write_text("not an image")
    (src / "fake.webp").write_text("not a webp")
    failures = upscale_many(runner, [src, src / "notes.txt", tmp_path / "missing.png"], tmp_path / "out",
                            progress=False)
    failed = {p.name: msg for p, msg in failures}
    assert set(failed) == {"empty.png", "cut.png", "notes.txt", "fake.webp", "missing.png"}
    for name, msg in failed.items():
        assert name in msg and "\n" not in msg
    assert "unsupported format" in failed["notes.txt"] and "truncated" in failed["cut.png"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["good0.png", "good1.jpg"]
    err = capsys.readouterr().err
    assert err.count("error:") == 5


def test_force_and_existing_outputs(runner, tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.png").write_bytes(b"keep me")
    failures = upscale_many(runner, [tmp_path / "a.png"], out_dir, progress=False)
    assert len(failures) == 1 and "already exists" in failures[0][1] and "--force" in failures[0][1]
    assert (out_dir / "a.png").read_bytes() == b"keep me"
    assert upscale_many(runner, [tmp_path / "a.png"], out_dir, force=True, progress=False) == []
    with Image.open(out_dir / "a.png") as im:
        assert im.size == (34, 26)
    with pytest.raises(SRExportError, match="already exists"):
        upscale_image(runner, tmp_path / "a.png", out_dir / "a.png")


def test_writes_are_atomic(runner, tmp_path, monkeypatch):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    failures = upscale_many(runner, [tmp_path / "a.png"], tmp_path / "out", progress=False)
    assert len(failures) == 1 and "disk full" in failures[0][1]
    assert list((tmp_path / "out").iterdir()) == []  # neither a partial file nor a temporary one


def test_single_output_file_and_globs(runner, tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "one.png")
    Image.fromarray(_rgb(seed=9)).save(tmp_path / "two.png")
    assert upscale_many(runner, [tmp_path / "one.png"], tmp_path / "big.png", progress=False) == []
    assert (tmp_path / "big.png").is_file()
    assert upscale_many(runner, [str(tmp_path / "t*.png")], tmp_path / "g", progress=False) == []
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["two.png"]
    failures = upscale_many(runner, [str(tmp_path / "none*.png")], tmp_path / "g", progress=False)
    assert failures and "no files match" in failures[0][1]


def test_tiled_image_equals_untiled(runner, tmp_path):
    Image.fromarray(_rgb(31, 27, seed=6)).save(tmp_path / "a.png")
    upscale_image(runner, tmp_path / "a.png", tmp_path / "whole.png")
    upscale_image(runner, tmp_path / "a.png", tmp_path / "tiled.png", tile=8)
    with Image.open(tmp_path / "whole.png") as a, Image.open(tmp_path / "tiled.png") as b:
        assert np.abs(np.asarray(a).astype(int) - np.asarray(b)).max() <= 1


def test_palette_and_gray_alpha(runner, tmp_path):
    rgb = _rgb(6, 7, seed=7)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    la = Image.fromarray(np.random.default_rng(8).integers(0, 256, (6, 7, 2), dtype=np.uint8), "LA")
    la.save(tmp_path / "la.png")
    assert upscale_many(runner, [tmp_path / "p.png", tmp_path / "la.png"], tmp_path / "o", progress=False) == []
    with Image.open(tmp_path / "o" / "p.png") as im:
        assert im.mode == "RGB" and im.size == (14, 12)
    with Image.open(tmp_path / "o" / "la.png") as im:
        assert im.mode == "LA" and im.size == (14, 12)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "o"))


def test_a_write_that_fails_in_the_writer_thread_is_reported(runner, tmp_path, capsys):
    """upscale_many encodes each picture while the next one is upscaled; an encoder error (WebP is
    limited to 16383 pixels a side) still fails only that file, with the file named."""
    Image.fromarray(_rgb(4, 8200)).save(tmp_path / "a_wide.png")
    Image.fromarray(_rgb()).save(tmp_path / "b_small.png")
    failures = upscale_many(runner, [tmp_path / "a_wide.png", tmp_path / "b_small.png"], tmp_path / "out",
                            progress=False, out_suffix=".webp")
    assert [p.name for p, _ in failures] == ["a_wide.png"]
    assert "a_wide.webp" in failures[0][1] and "cannot write WEBP" in failures[0][1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_small.webp"]
    assert capsys.readouterr().err.count("error:") == 1
