"""The C++ sample (cpp/): its TensorRT program compiled against the real TensorRT 10.16 and 11.1
headers, and the parts that need no TensorRT (sidecar checks, colour, bicubic chroma, tiles, the
FFmpeg picture and video paths) built, run and compared with srexport's own results on the same
inputs. Skips, with the reason, where a compiler, CMake, nlohmann-json, FFmpeg's development files,
../shared's headers or the CUDA headers are missing (.ci/run installs all but ../shared)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from srexport.tiling import _bounds, auto_tile, upscale_tiled

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "cpp"
TRT_HEADERS = ROOT.parent / "shared" / "third_party" / "tensorrt-headers"
CACHE = Path(os.environ.get("SREXPORT_DEV_CACHE") or Path.home() / ".cache" / "srexport-dev")


def _missing_tools() -> str | None:
    for tool in ("g++", "cmake", "pkg-config"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/include/nlohmann/json.hpp").is_file():
        return "nlohmann-json is not installed (apt-get install nlohmann-json3-dev)"
    if subprocess.run(["pkg-config", "--exists", "libavformat", "libavcodec", "libswscale", "libavutil"]).returncode:
        return "FFmpeg's development files are not installed (apt-get install libavcodec-dev libavformat-dev libswscale-dev)"
    return None


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The built srexport_parts_check program, run as parts(*args) -> CompletedProcess."""
    why = _missing_tools()
    if why:
        pytest.skip(why)
    build = tmp_path_factory.mktemp("cpp-build")
    subprocess.run(["cmake", "-S", str(CPP), "-B", str(build), "-DSREXPORT_WITH_TENSORRT=OFF"], check=True,
                   capture_output=True, text=True)
    made = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "warning" not in made.stdout + made.stderr, made.stdout + made.stderr
    exe = build / "srexport_parts_check"

    def run(*args, check=True):
        done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
        if check:
            assert done.returncode == 0, done.stderr
        return done
    return run


# --- colour, bicubic chroma -------------------------------------------------------------------

def test_constants_are_srexports_to_the_bit(parts):
    from srexport.archs.bicubic import phase_weights
    from srexport.colour import _TO_RGB_BIAS
    from srexport.data import _RGB_MATRIX

    lines = [line.split() for line in parts("constants").stdout.splitlines()]
    rgb = np.array([[float.fromhex(v) for v in line[1:]] for line in lines if line[0] == "rgb"])
    bias = np.array([float.fromhex(v) for v in next(line for line in lines if line[0] == "bias")[1:]])
    assert np.array_equal(rgb, _RGB_MATRIX)
    assert np.array_equal(bias, _TO_RGB_BIAS)
    for s in (2, 3, 4):
        taps = np.array([[float.fromhex(v) for v in line[2:]] for line in lines if line[:2] == ["taps", str(s)]])
        assert np.array_equal(taps, phase_weights(s)), s


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rgb_colour_ends_equal_srexports(parts, tmp_path, scale):
    from srexport.colour import rgb8_to_ycbcr, ycbcr_to_rgb8

    rng = np.random.default_rng(scale)
    h, w = 23, 37
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    y_sr = rng.uniform(-0.05, 1.05, (1, 1, scale * h, scale * w)).astype(np.float32)
    (tmp_path / "rgb.u8").write_bytes(rgb.tobytes())
    (tmp_path / "ysr.f32").write_bytes(y_sr.tobytes())
    parts("colour", tmp_path / "rgb.u8", h, w, scale, tmp_path / "ysr.f32", tmp_path)
    y, cbcr = rgb8_to_ycbcr(rgb)
    assert np.array_equal(np.fromfile(tmp_path / "y.f32", np.float32).reshape(h, w), y[0, 0])
    assert np.array_equal(np.fromfile(tmp_path / "cb.f64", np.float64).reshape(h, w), cbcr[0])
    assert np.array_equal(np.fromfile(tmp_path / "cr.f64", np.float64).reshape(h, w), cbcr[1])
    out = np.fromfile(tmp_path / "rgb.u8", np.uint8).reshape(scale * h, scale * w, 3)
    assert np.array_equal(out, ycbcr_to_rgb8(y_sr, cbcr, scale))


@pytest.mark.parametrize("scale,h,w", [(2, 18, 30), (3, 17, 25)])
def test_video_frame_ends_equal_srexports(parts, tmp_path, scale, h, w):
    from srexport.colour import yuv420_frame

    rng = np.random.default_rng(h)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    u, v = (rng.integers(0, 256, (ch, cw), dtype=np.uint8) for _ in range(2))
    y_sr = rng.uniform(-0.05, 1.05, (1, 1, scale * h, scale * w)).astype(np.float32)
    for name, a in (("y.u8", y), ("u.u8", u), ("v.u8", v), ("ysr.f32", y_sr)):
        (tmp_path / name).write_bytes(a.tobytes())
    out = tmp_path / "frame.u8"
    parts("yuv", tmp_path / "y.u8", tmp_path / "u.u8", tmp_path / "v.u8", h, w, scale, tmp_path / "ysr.f32", out)
    network_input = (y.astype(np.float32) * np.float32(1 / 255))  # video.py's Y / 255
    assert np.array_equal(np.fromfile(f"{out}.y.f32", np.float32).reshape(h, w), network_input)
    ow, oh = scale * w - scale * w % 2, scale * h - scale * h % 2
    assert np.array_equal(np.fromfile(out, np.uint8).reshape(-1, ow), yuv420_frame(y_sr, u, v, scale, (ow, oh)))


# --- tiles ------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w,th,tw,overlap", [(50, 77, 16, 16, 5), (33, 20, 7, 9, 9), (10, 10, 3, 4, 0),
                                               (100, 61, 40, 25, 12)])
def test_tile_plan_equals_srexports(parts, h, w, th, tw, overlap):
    crops = []

    def recording(x):  # the crop's top-left value encodes its position in the frame
        crops.append((int(x[0, 0, 0, 0]) // w, int(x[0, 0, 0, 0]) // w + x.shape[2],
                      int(x[0, 0, 0, 0]) % w, int(x[0, 0, 0, 0]) % w + x.shape[3]))
        return x
    upscale_tiled(recording, np.arange(h * w, dtype=np.float64).reshape(1, 1, h, w), 1, (th, tw), overlap)
    kept = [(y0, y1, x0, x1) for y0, y1 in _bounds(h, th) for x0, x1 in _bounds(w, tw)]
    expected = [" ".join(map(str, k + c)) for k, c in zip(kept, crops)]
    assert parts("tiles", h, w, th, tw, overlap).stdout.split("\n")[:-1] == expected


@pytest.mark.parametrize("h,w,max_h,max_w,overlap", [(1080, 1920, 540, 960, 5), (540, 960, 540, 960, 9),
                                                     (721, 1283, 270, 480, 12), (2160, 3840, 270, 480, 15),
                                                     (300, 200, 30, 30, 12)])
def test_auto_tile_equals_srexports(parts, h, w, max_h, max_w, overlap):
    from srexport.errors import SRExportError

    try:
        tile = auto_tile(None, h, w, max_hw=(max_h, max_w), overlap=overlap, bytes_per_lr_pixel=0.0,
                         budget_bytes=1 << 60)
        expected = "none" if tile is None else f"{tile[0]} {tile[1]}"
    except SRExportError:
        expected = None
    done = parts("auto-tile", h, w, max_h, max_w, overlap, check=expected is not None)
    if expected is None:
        assert done.returncode == 2 and done.stderr.startswith("error: cannot tile")
    else:
        assert done.stdout.strip() == expected


# --- sidecar checks ---------------------------------------------------------------------------

def _sidecar(tmp_path, flavour="tensorrt", target=None, **changes) -> Path:
    """An engine file and its sidecar as srexport's engine_identity writes it, with `changes`."""
    from srexport.checkpoint import resolve_network
    from srexport.engine import EngineOptions, engine_identity

    io = {"inputs": [{"name": "lr", "dtype": "float32"}], "outputs": [{"name": "sr", "dtype": "float32"}],
          "precision": "fp16"}  # onnx_io's answer for an FP16 graph with FP32 I/O
    sidecar = engine_identity(record=resolve_network("espcn", 2, random_weights=True)[1], onnx_sha256="0" * 64, io=io,
                              options=EngineOptions.default_for(2), flavour=flavour, tensorrt_version="10.16.0.72",
                              target=target or {"gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}})
    sidecar.update(engine_bytes=1234, **changes)
    engine = tmp_path / "espcn_x2.fp16.engine"
    engine.write_bytes(b"\0" * 1234)
    (tmp_path / "espcn_x2.fp16.engine.json").write_text(json.dumps(sidecar))
    return engine


def test_sidecar_accepted_where_everything_matches(parts, tmp_path):
    engine = _sidecar(tmp_path)
    assert parts("sidecar", engine, "--trt", "10.16", "--cc", "9.0", "--scale", "2").stdout == "ok\n"
    unnamed = _sidecar(tmp_path)
    sidecar = json.loads(Path(f"{unnamed}.json").read_text())
    del sidecar["flavour"]  # sidecars written before flavours existed: TensorRT
    Path(f"{unnamed}.json").write_text(json.dumps(sidecar))
    assert parts("sidecar", unnamed, "--trt", "10.16", "--cc", "9.0").stdout == "ok\n"


@pytest.mark.parametrize("changes,runtime,message", [
    ({}, ("11.1", "9.0", "2"), "engine was built with TensorRT 10.16.0.72, this program links TensorRT 11.1"),
    ({}, ("10.15", "9.0", "2"), "built with TensorRT 10.16.0.72, this program links TensorRT 10.15"),
    ({}, ("10.16", "8.9", "2"), "built for compute capability 9.0 (NVIDIA H100 80GB HBM3), this GPU is 8.9"),
    ({}, ("10.16", "9.0", "3"), "engine upscales x2, not the x3 asked for"),
    ({"flavour": "tensorrt-rtx", "target": {"compute_capabilities": ["8.6", "8.9"], "gpu": None}},
     ("10.16", "8.9", "2"), "built for TensorRT for RTX"),
    ({"flavour": "tensorrt-11"}, ("10.16", "9.0", "2"), 'unknown engine flavour "tensorrt-11"'),
    ({"gpu": None}, ("10.16", "9.0", "2"), "sidecar names no GPU"),
    ({"layout": "NHWC"}, ("10.16", "9.0", "2"), "layout NHWC"),
    ({"value_range": [0, 255]}, ("10.16", "9.0", "2"), "value range is not [0, 1]"),
    ({"colour_space": "RGB"}, ("10.16", "9.0", "2"), 'colour space "RGB"'),
    ({"inputs": [{"name": "input", "dtype": "float32"}]}, ("10.16", "9.0", "2"), 'one input "lr"'),
    ({"outputs": [{"name": "sr", "dtype": "int8"}]}, ("10.16", "9.0", "2"), "dtype int8"),
])
def test_sidecar_refusals(parts, tmp_path, changes, runtime, message):
    engine = _sidecar(tmp_path, **changes)
    trt, cc, scale = runtime
    done = parts("sidecar", engine, "--trt", trt, "--cc", cc, "--scale", scale, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: {engine}: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


def test_sidecar_missing_or_broken(parts, tmp_path):
    done = parts("sidecar", tmp_path / "none.engine", "--trt", "10.16", "--cc", "9.0", check=False)
    assert done.returncode == 2 and "none.engine.json: no such file" in done.stderr
    engine = _sidecar(tmp_path)
    Path(f"{engine}.json").write_text("{not json")
    done = parts("sidecar", engine, "--trt", "10.16", "--cc", "9.0", check=False)
    assert done.returncode == 2 and "not valid JSON" in done.stderr
    Path(f"{engine}.json").write_text(json.dumps({"schema_version": 1}))
    done = parts("sidecar", engine, "--trt", "10.16", "--cc", "9.0", check=False)
    assert done.returncode == 2 and 'sidecar has no "inputs"' in done.stderr


# --- the FFmpeg paths, with a stand-in network ------------------------------------------------

class Nearest:
    """Each pixel repeated scale x scale times: exact in any language, so whole pipelines compare bit for bit."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, x):
        return np.repeat(np.repeat(x, self.scale, axis=2), self.scale, axis=3)


@pytest.mark.parametrize("gray", [False, True])
def test_picture_equals_srexport_upscale(parts, tmp_path, gray):
    from PIL import Image

    from _images import texture
    from srexport.images import upscale_image

    rgb = texture(np.random.default_rng(1), 29, 41)
    Image.fromarray(rgb).convert("L" if gray else "RGB").save(tmp_path / "in.png")
    parts("upscale", tmp_path / "in.png", tmp_path / "cpp.png", "--scale", 3, "--net", "nearest")
    upscale_image(Nearest(3), tmp_path / "in.png", tmp_path / "py.png")
    cpp, py = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("cpp", "py"))
    assert cpp.shape == py.shape == ((87, 123) if gray else (87, 123, 3))
    assert np.array_equal(cpp, py)
    done = parts("upscale", tmp_path / "in.png", tmp_path / "cpp.png", "--scale", 3, check=False)
    assert done.returncode == 2 and "cpp.png: already exists (use --force" in done.stderr


def test_video_equals_srexport_upscale(parts, tmp_path):
    import av

    from srexport.video import make_test_video, upscale_video

    src = make_test_video(tmp_path / "in.mp4", frames=5, width=34, height=26)
    parts("upscale", src, tmp_path / "cpp.mkv", "--scale", 3, "--net", "nearest", "--codec", "ffv1")
    upscale_video(Nearest(3), src, tmp_path / "py.mkv", codec="ffv1", crf=None, preset=None, progress=False)

    def frames(path):
        with av.open(str(path)) as f:
            audio = len(f.streams.audio)
            return [(fr.pts, fr.to_ndarray(format="yuv420p")) for fr in f.decode(video=0)], audio
    (cpp, cpp_audio), (py, py_audio) = frames(tmp_path / "cpp.mkv"), frames(tmp_path / "py.mkv")
    assert len(cpp) == len(py) == 5 and cpp_audio == py_audio == 1
    assert cpp[0][1].shape == (78 * 3 // 2, 102)
    for (cpts, c), (ppts, p) in zip(cpp, py):
        assert cpts == ppts and np.array_equal(c, p)


def test_tiles_overlapping_by_the_radius_are_seamless(parts, tmp_path):
    from PIL import Image

    from _images import texture

    Image.fromarray(texture(np.random.default_rng(2), 40, 52)).save(tmp_path / "in.png")

    def out(name, *tiling):
        parts("upscale", tmp_path / "in.png", tmp_path / name, "--scale", 2, "--net", "box", *tiling)
        return np.asarray(Image.open(tmp_path / name))
    whole = out("whole.png")
    assert np.array_equal(out("tiled.png", "--tile", 9, "--overlap", 1), whole)  # box filter: radius 1
    assert not np.array_equal(out("seams.png", "--tile", 9, "--overlap", 0), whole)


# --- the TensorRT program against the real headers --------------------------------------------

def _cuda_includes() -> list[str] | None:
    """CUDA's runtime headers from the PyPI wheels (nvidia-cuda-runtime-cu12, nvidia-cuda-nvcc-cu12),
    installed in this environment or by .ci/run under the dev cache."""
    roots = [CACHE / "cuda-headers"]
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p).parent for p in spec.submodule_search_locations]
    for root in roots:
        rt, nvcc = root / "nvidia" / "cuda_runtime" / "include", root / "nvidia" / "cuda_nvcc" / "include"
        if (rt / "cuda_runtime_api.h").is_file() and (nvcc / "crt" / "host_defines.h").is_file():
            return [str(rt), str(nvcc)]
    return None


def _compile(version: str, source: Path):
    cuda = _cuda_includes()
    includes = [f"-isystem{TRT_HEADERS / version / 'include'}", *(f"-isystem{p}" for p in cuda)]
    ffmpeg = subprocess.run(["pkg-config", "--cflags", "libavformat", "libavcodec", "libswscale", "libavutil"],
                            capture_output=True, text=True).stdout.split()
    # The headers as system headers: their own deprecated internals stay quiet, any deprecated
    # name the sample uses is an error.
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wdeprecated-declarations",
           *includes, *ffmpeg, f"-I{CPP / 'include'}", str(source)]
    return subprocess.run(cmd, capture_output=True, text=True), cmd


@pytest.fixture
def headers():
    why = _missing_tools()
    if why:
        pytest.skip(why)
    if not TRT_HEADERS.is_dir():
        pytest.skip(f"{TRT_HEADERS} is not there (the TensorRT headers come with ../shared)")
    if _cuda_includes() is None:
        pytest.skip("CUDA headers not installed (pip install nvidia-cuda-runtime-cu12 nvidia-cuda-nvcc-cu12; .ci/run does)")


@pytest.mark.parametrize("version", ["10.16", "11.1"])
def test_sample_compiles_against_tensorrt_headers(headers, version):
    done, cmd = _compile(version, CPP / "src" / "srexport_upscale.cpp")
    assert done.returncode == 0, " ".join(cmd) + "\n" + done.stderr


@pytest.mark.parametrize("version", ["10.16", "11.1"])
@pytest.mark.parametrize("snippet", [
    "void f(nvinfer1::IBuilderConfig& c) { c.setFlag(nvinfer1::BuilderFlag::kFP16); }",  # deprecated in 10, gone in 11
    "bool f(nvinfer1::IExecutionContext& c, void** b, cudaStream_t s) { return c.enqueueV2(b, s, nullptr); }",
    "int f(nvinfer1::ICudaEngine& e) { return e.getBindingIndex(\"lr\"); }",
])
def test_the_compile_check_catches_old_api(headers, tmp_path, version, snippet):
    source = tmp_path / "old.cpp"
    source.write_text("#include <NvInfer.h>\n" + snippet + "\n")
    done, _ = _compile(version, source)
    assert done.returncode != 0
