"""srexport.vapoursynth: importable without torch, its engine checks, and, in the Python 3.12
VapourSynth environment (tests/_vs_env.py; skipped with the reason where Python 3.12 is missing),
the frames it gives through vs-mlrt's ONNX Runtime and OpenVINO plugins compared frame by frame
with `srexport upscale` (the library's upscale_video / upscale_image) for ESPCN and FSRCNN, FP32 and
FP16 ONNX, and the README's VapourSynth script run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srexport.errors import SRExportError
from srexport.vapoursynth import _engine_tiles, check_engine_sidecar, read_engine_sidecar, upscale

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def test_module_imports_without_torch_or_numpy():
    code = ("import sys, srexport.vapoursynth; heavy = {'torch', 'numpy', 'onnx', 'onnxruntime'} & set(sys.modules); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_without_vapoursynth_a_clear_error():
    try:
        import vapoursynth  # noqa: F401
        pytest.skip("VapourSynth is installed in this environment")
    except ImportError:
        pass
    with pytest.raises(SRExportError, match="VapourSynth is not installed"):
        upscale(None, "x.onnx", 2)


# --- engine sidecars (no VapourSynth needed) --------------------------------------------------

def _sidecar(**changes) -> dict:
    sidecar = {"flavour": "tensorrt", "scale": 2, "inputs": [{"name": "lr", "dtype": "float32"}],
               "outputs": [{"name": "sr", "dtype": "float32"}], "layout": "NCHW",
               "colour_space": "Y of YCbCr BT.601 limited range (MATLAB rgb2ycbcr), Y/255", "value_range": [0.0, 1.0],
               "profile": {"input": "lr", "min": [1, 1, 1, 1], "opt": [1, 1, 270, 480], "max": [1, 1, 540, 960]}}
    sidecar.update(changes)
    return sidecar


def test_engine_sidecar_accepted():
    check_engine_sidecar(_sidecar(), "trt", 2, "e.engine")
    check_engine_sidecar({k: v for k, v in _sidecar().items() if k != "flavour"}, "trt", 2, "e.engine")
    check_engine_sidecar(_sidecar(flavour="tensorrt-rtx"), "trt_rtx", 2, "e.engine")


@pytest.mark.parametrize("changes,backend,scale,message", [
    ({"flavour": "tensorrt-rtx"}, "trt", 2, "engine flavour 'tensorrt-rtx' cannot run on backend 'trt'.*backend='trt_rtx'"),
    ({}, "trt_rtx", 2, "engine flavour 'tensorrt' cannot run on backend 'trt_rtx'"),
    ({}, "trt", 3, "engine upscales x2, not the x3 asked for"),
    ({"inputs": [{"name": "lr", "dtype": "float16"}]}, "trt", 2, "float16 I/O"),
    ({"outputs": [{"name": "y", "dtype": "float32"}]}, "trt", 2, "one input 'lr' and one output 'sr'"),
    ({"value_range": [0, 255]}, "trt", 2, "not srexport's I/O contract"),
])
def test_engine_sidecar_refused(changes, backend, scale, message):
    with pytest.raises(SRExportError, match=message):
        check_engine_sidecar(_sidecar(**changes), backend, scale, "e.engine")


def test_engine_sidecar_missing_or_broken(tmp_path):
    with pytest.raises(SRExportError, match="e.engine.json: no such file"):
        read_engine_sidecar(tmp_path / "e.engine")
    (tmp_path / "e.engine.json").write_text("[1, 2")
    with pytest.raises(SRExportError, match="unreadable sidecar"):
        read_engine_sidecar(tmp_path / "e.engine")


def test_frames_larger_than_the_profile_are_tiled():
    assert _engine_tiles(_sidecar(), 960, 540, None, "e") == (None, None)
    with pytest.raises(SRExportError, match="gives no tile_overlap: pass overlap=N"):
        _engine_tiles(_sidecar(), 1920, 1080, None, "e")
    assert _engine_tiles(_sidecar(), 1920, 1080, 5, "e") == ([960, 540], [10, 10])  # vs-mlrt: both sides
    assert _engine_tiles(_sidecar(io_contract={"tile_overlap": 9}), 1000, 300, None, "e") == ([960, 300], [18, 18])


# --- in VapourSynth ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vs_python():
    sys.path.insert(0, str(TESTS))
    from _vs_env import ensure

    python, why = ensure()
    if python is None:
        pytest.skip(why)
    return python


def _run_jobs(vs_python, jobs: list[dict], folder: Path) -> list[dict]:
    jobs_file = folder / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # srexport without its dependencies: no torch there
    done = subprocess.run([str(vs_python), str(TESTS / "vs_worker.py"), str(jobs_file)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(Path(f"{jobs_file}.results").read_text())


def _plugins(vs_python) -> set[str]:
    code = "import vapoursynth as vs; print(' '.join(p.namespace for p in vs.core.plugins()))"
    return set(subprocess.run([str(vs_python), "-c", code], capture_output=True, text=True).stdout.split())


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """The shipped ESPCN and FSRCNN x2 as srexport's FP32 and FP16 (FP32 I/O) ONNX files."""
    import onnx

    from srexport.checkpoint import resolve_network
    from srexport.fp16 import fp16_from_onnx
    from srexport.onnx_export import onnx_from_model

    folder = tmp_path_factory.mktemp("vs-onnx")
    files = {}
    for name in ("espcn", "fsrcnn"):
        model, record = resolve_network(name, 2)
        proto = onnx_from_model(model, record)
        files[name, "fp32"] = folder / f"{name}_x2.onnx"
        files[name, "fp16"] = folder / f"{name}_x2.fp16.onnx"
        onnx.save(proto, str(files[name, "fp32"]))
        onnx.save(fp16_from_onnx(proto), str(files[name, "fp16"]))
    return files


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_video_frames_equal_srexport_upscale(vs_python, onnx_files, tmp_path):
    import av

    from srexport.runtime import open_runner
    from srexport.video import make_test_video, upscale_video

    src = make_test_video(tmp_path / "in.mp4", frames=3, width=48, height=32, audio=False)
    with av.open(str(src)) as f:
        frames = np.stack([fr.to_ndarray(format="yuv420p") for fr in f.decode(video=0)])
    np.save(tmp_path / "frames.npy", frames)
    backends = ["ort"] + (["ov"] if "ov" in _plugins(vs_python) else [])
    jobs = [{"frames": str(tmp_path / "frames.npy"), "kind": "yuv", "network": str(path), "scale": 2,
             "backend": backend, "out": str(tmp_path / f"{name}-{precision}-{backend}.npy")}
            for (name, precision), path in onnx_files.items() for backend in backends]
    results = _run_jobs(vs_python, jobs, tmp_path)
    assert all("error" not in r and r["format"] == "YUV420P8" and r["size"] == [96, 64] for r in results), results
    h = 64
    for (name, precision), path in onnx_files.items():
        reference = tmp_path / f"{name}-{precision}.mkv"  # `srexport upscale --onnx PATH --backend onnxruntime`
        upscale_video(open_runner(onnx_path=path, backend="onnxruntime"), src, reference, codec="ffv1", crf=None,
                      preset=None, progress=False)
        with av.open(str(reference)) as f:
            ref = np.stack([fr.to_ndarray(format="yuv420p") for fr in f.decode(video=0)])
        for backend in backends:
            got = np.load(tmp_path / f"{name}-{precision}-{backend}.npy")
            assert got.shape == ref.shape == (3, 96, 96)
            for i in range(len(ref)):
                y_diff = np.abs(got[i, :h].astype(int) - ref[i, :h].astype(int)).max()
                uv_diff = np.abs(got[i, h:].astype(int) - ref[i, h:].astype(int)).max()
                psnr = _psnr(got[i, :h], ref[i, :h])
                print(f"{name} {precision} {backend} frame {i}: Y max abs {y_diff}, Y PSNR {psnr:.1f} dB, "
                      f"U/V max abs {uv_diff}")
                assert y_diff <= 1 and psnr >= 60 and uv_diff == 0


def test_rgb_picture_equals_srexport_upscale(vs_python, onnx_files, tmp_path):
    from PIL import Image

    from _images import texture
    from srexport.images import upscale_image
    from srexport.runtime import open_runner

    rgb = texture(np.random.default_rng(3), 30, 44)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    np.save(tmp_path / "rgb.npy", rgb[None])
    jobs = [{"frames": str(tmp_path / "rgb.npy"), "kind": "rgb", "network": str(onnx_files[name, "fp32"]),
             "scale": 2, "backend": "ort", "out": str(tmp_path / f"{name}.npy")} for name in ("espcn", "fsrcnn")]
    assert all("error" not in r and r["format"] == "RGB24" for r in _run_jobs(vs_python, jobs, tmp_path))
    for name in ("espcn", "fsrcnn"):
        upscale_image(open_runner(onnx_path=onnx_files[name, "fp32"], backend="onnxruntime"), tmp_path / "in.png",
                      tmp_path / f"{name}.png")
        ref = np.asarray(Image.open(tmp_path / f"{name}.png"))
        got = np.load(tmp_path / f"{name}.npy")[0]
        diff = np.abs(got.astype(int) - ref.astype(int))
        print(f"{name} fp32 ort RGB: max abs {diff.max()}, PSNR {_psnr(got, ref):.1f} dB, "
              f"{np.count_nonzero(diff)} of {diff.size} values differ")
        assert got.shape == ref.shape == (60, 88, 3)
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 100  # float32 colour at .5 boundaries


def test_tiles_and_refusals_in_vapoursynth(vs_python, onnx_files, tmp_path):
    from _images import texture

    np.save(tmp_path / "rgb.npy", texture(np.random.default_rng(4), 40, 52)[None])
    espcn = str(onnx_files["espcn", "fp32"])
    base = {"frames": str(tmp_path / "rgb.npy"), "kind": "rgb", "scale": 2, "backend": "ort", "network": espcn}
    jobs = [{**base, "out": str(tmp_path / "whole.npy")},
            {**base, "out": str(tmp_path / "tiled.npy"), "options": {"tile": 12, "overlap": 5}},  # ESPCN's radius
            {**base, "out": str(tmp_path / "scale3.npy"), "scale": 3},
            {**base, "out": str(tmp_path / "engine.npy"), "backend": "trt"},
            {**base, "out": str(tmp_path / "tile-only.npy"), "options": {"tile": 12}},
            {**base, "out": str(tmp_path / "seams.npy"), "options": {"tile": 12, "overlap": 2}}]  # < the radius
    whole, tiled, scale3, engine, tile_only, seams = _run_jobs(vs_python, jobs, tmp_path)
    diff = np.abs(np.load(tiled["out"]).astype(int) - np.load(whole["out"]).astype(int))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 3, (diff.max(), np.count_nonzero(diff))
    assert np.abs(np.load(seams["out"]).astype(int) - np.load(whole["out"]).astype(int)).max() > 1
    assert scale3["error"] == f"{espcn}: gives 104x80 for a 52x40 clip, not x3"
    assert "runs an srexport engine (.engine)" in engine["error"]
    assert "tile: needs overlap=N" in tile_only["error"]


def test_readme_script_runs(vs_python, onnx_files, tmp_path):
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- vapoursynth-script -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no VapourSynth script after <!-- vapoursynth-script -->"
    script = match.group(1)
    assert 6 <= len(script.strip().splitlines()) <= 14
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "espcn_x2.onnx").write_bytes(onnx_files["espcn", "fp32"].read_bytes())
    (tmp_path / "upscale.vpy").write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    vspipe = Path(vs_python).parent / "vspipe"
    done = subprocess.run([str(vspipe), "-c", "y4m", "upscale.vpy", "out.y4m"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    header = (tmp_path / "out.y4m").read_bytes()[:100].split(b"\n")[0].decode()
    assert header.startswith("YUV4MPEG2 C420 W640 H360 "), header
    assert "Output 24 frames" in done.stderr, done.stderr
