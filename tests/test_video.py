"""A short generated video (12 frames, 64x48, 24 fps, AAC audio) through upscale_video."""

from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from srexport.checkpoint import resolve_network  # noqa: E402
from srexport.errors import SRExportError  # noqa: E402
from srexport.images import upscale_many  # noqa: E402
from srexport.runtime import open_runner  # noqa: E402
from srexport.video import make_test_video, upscale_video  # noqa: E402

FRAMES, W, H, FPS = 12, 64, 48, 24


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=FRAMES, width=W, height=H, fps=FPS)


@pytest.fixture(scope="module")
def runner():
    model, _ = resolve_network("espcn", 2, random_weights=True)
    return open_runner(model=model, spin=False)


def _describe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        info = {"size": (v.codec_context.width, v.codec_context.height), "rate": v.average_rate,
                "frames": len(frames), "pts_s": [float(f.pts * f.time_base) for f in frames],
                "audio": [(a.codec_context.name, a.codec_context.sample_rate) for a in c.streams.audio],
                "codec": v.codec_context.name, "first": frames[0].to_ndarray(format="yuv420p")}
    with av.open(str(path)) as c:
        info["audio_packets"] = sum(1 for p in c.demux(audio=0) if p.size) if c.streams.audio else 0
    return info


def test_round_trip(runner, clip, tmp_path):
    src = _describe(clip)
    assert src["frames"] == FRAMES and src["audio"]
    stats = upscale_video(runner, clip, tmp_path / "up.mp4", progress=False)
    out = _describe(tmp_path / "up.mp4")
    assert out["size"] == (2 * W, 2 * H)
    assert out["frames"] == FRAMES == stats.frames
    assert out["rate"] == Fraction(FPS)
    assert out["pts_s"] == pytest.approx(src["pts_s"], abs=1e-3)  # timestamps kept
    assert out["audio"] == src["audio"] and out["audio_packets"] == src["audio_packets"]
    assert out["codec"] == "h264"
    assert stats.fps > 0 and stats.seconds > 0 and stats.network_seconds > 0
    assert stats.input_size == (W, H) and stats.output_size == (2 * W, 2 * H)
    assert stats.convert_seconds >= 0 and stats.network_fps > stats.fps  # the network is one stage of several
    d = stats.to_dict()
    assert d["frames"] == FRAMES and d["network_fps"] > 0
    assert f"{FRAMES} frames {W}x{H} -> {2 * W}x{2 * H}" in stats.summary() and "fps end to end" in stats.summary()


def test_luma_goes_through_the_network(runner, clip, tmp_path):
    """The first output frame's Y is the network applied to the decoded Y/255 (up to x264 at crf 0)."""
    upscale_video(runner, clip, tmp_path / "lossless.mkv", crf=0, preset="ultrafast", progress=False)
    with av.open(str(clip)) as c:
        y_in = next(c.decode(video=0)).to_ndarray(format="yuv420p")[:H]
    y_out = _describe(tmp_path / "lossless.mkv")["first"][:2 * H]
    want = np.clip(np.floor(runner((y_in / 255).astype(np.float32)[None, None])[0, 0] * 255 + 0.5), 0, 255)
    assert np.abs(y_out.astype(int) - want).max() <= 1


def test_codec_options_and_containers(runner, clip, tmp_path):
    stats = upscale_video(runner, clip, tmp_path / "up.mkv", codec="libx265", crf=28, preset="ultrafast",
                          progress=False)
    info = _describe(tmp_path / "up.mkv")
    assert info["codec"] == "hevc" and info["frames"] == FRAMES and stats.codec == "libx265"
    upscale_video(runner, clip, tmp_path / "tiled.mp4", tile=16, max_frames=3, progress=False)
    assert _describe(tmp_path / "tiled.mp4")["frames"] == 3


def test_errors(runner, clip, tmp_path):
    with pytest.raises(SRExportError, match="container"):
        upscale_video(runner, clip, tmp_path / "out.xyz")
    with pytest.raises(SRExportError, match="no such file"):
        upscale_video(runner, tmp_path / "missing.mp4", tmp_path / "out.mp4")
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(SRExportError, match="already exists"):
        upscale_video(runner, clip, tmp_path / "exists.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(SRExportError, match="broken.mp4"):
        upscale_video(runner, tmp_path / "broken.mp4", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(SRExportError, match="encoder"):
        upscale_video(runner, clip, tmp_path / "out.mp4", codec="no-such-codec")


def test_video_through_upscale_many(runner, clip, tmp_path, capsys):
    assert upscale_many(runner, [clip], tmp_path / "out", progress=False) == []
    assert _describe(tmp_path / "out" / "clip.mp4")["frames"] == FRAMES
    assert "fps end to end, network alone" in capsys.readouterr().err
