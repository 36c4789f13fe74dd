"""srexport's networks inside VapourSynth, through vs-mlrt's plugins: `upscale(clip, network, scale)`.

The same picture as `srexport upscale` (images.py, video.py): Y through the network, chroma by
MATLAB's bicubic, which VapourSynth's `resize.Bicubic` with b = 0, c = 0.5 (Keys, a = -0.5) on a
plane of its own reproduces, borders included (mirrored, centre-sited samples; measured: equal to
`data.imresize` to 4e-5 on [0, 255] in float32). Each plane is taken apart with ShufflePlanes, so
VapourSynth's chroma siting never shifts it: srexport treats a chroma plane as a picture.

- YUV clips (any subsampling, integer or float): Y / (2^bits - 1) into the network as video.py
  does (video luma is limited range, the training convention), the output rounded back; U and V
  upscaled by the bicubic and rounded.
- RGB clips: MATLAB's rgb2ycbcr, Y / 255 through the network, Cb and Cr by the bicubic, back with
  the exact inverse (images.py), rounded half up. Float RGB is taken as [0, 1].
- GRAY clips are their own Y.

VapourSynth computes in float32 where srexport computes the colour conversion in float64, so a
pixel that falls within float32 rounding of a .5 boundary can differ by one level
(tests/test_vapoursynth.py measures it frame by frame).

Backends (vs-mlrt plugin, pip package): "ort" (`vapoursynth-mlrt-ort`, ONNX Runtime; ONNX file),
"ov" (`vapoursynth-mlrt-ov`, OpenVINO; ONNX file), "trt" (`vapoursynth-mlrt-trt`; an engine of
flavour "tensorrt" built with the TensorRT version that plugin bundles), "trt_rtx"
(`vapoursynth-mlrt-trt-rtx`; an engine of flavour "tensorrt-rtx"). An engine's sidecar is checked
first (flavour, scale, I/O contract), and frames larger than its profile are tiled with the
sidecar's overlap rule.

Imports only the standard library and VapourSynth (inside the functions): this module runs in a
VapourSynth environment without torch (`pip install --no-deps srexport` there, or PYTHONPATH).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import SRExportError

BACKENDS = ("ort", "ov", "trt", "trt_rtx")
PLUGIN_PACKAGES = {"ort": "vapoursynth-mlrt-ort", "ov": "vapoursynth-mlrt-ov", "trt": "vapoursynth-mlrt-trt",
                   "trt_rtx": "vapoursynth-mlrt-trt-rtx"}
ENGINE_FLAVOURS = {"trt": "tensorrt", "trt_rtx": "tensorrt-rtx"}
COLOUR_SPACE = "Y of YCbCr BT.601 limited range (MATLAB rgb2ycbcr), Y/255"  # checkpoint.COLOUR_SPACE

# MATLAB rgb2ycbcr (data._YCBCR_MATRIX, _YCBCR_OFFSET) and its exact inverse as srexport computes
# it (numpy.linalg.inv; data._RGB_MATRIX, colour._TO_RGB_BIAS), to the bit.
_YCBCR = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
_YCBCR_OFFSET = (16.0, 128.0, 128.0)
_RGB = ((float.fromhex("0x1.2a150a8542a15p+0"), float.fromhex("0x1.435471aeea8e6p-22"),
         float.fromhex("0x1.989537d4a4be2p+0")),
        (float.fromhex("0x1.2a150a8542a15p+0"), float.fromhex("-0x1.912a330362bc7p-2"),
         float.fromhex("-0x1.a03d61470b151p-1")),
        (float.fromhex("0x1.2a150a8542a16p+0"), float.fromhex("0x1.0234addba8cccp+1"),
         float.fromhex("0x1.99efa26d0ad0bp-19")))
_RGB_BIAS = tuple(-sum(_RGB[k][i] * _YCBCR_OFFSET[i] for i in range(3)) for k in range(3))


# vs-mlrt's `overlap` is shared by two neighbouring tiles, half of it kept on each side: measured
# with ESPCN x2 (true receptive radius 4 LR pixels), tiles equal the whole frame from overlap=8 on,
# and differ by up to 0.12 at 7. So srexport's overlap (context on each side) is passed doubled.
VS_OVERLAP = 2


def _vs():
    try:
        import vapoursynth
    except ImportError:
        raise SRExportError("VapourSynth is not installed (pip install vapoursynth; wheels need Python 3.12+)") from None
    return vapoursynth


def read_engine_sidecar(engine: str | os.PathLike) -> dict:
    """An engine's JSON sidecar (`X.engine.json`), or an error naming what is wrong."""
    path = Path(f"{engine}.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SRExportError(f"{path}: no such file (every srexport engine has a JSON sidecar beside it)") from None
    except (OSError, ValueError) as e:
        raise SRExportError(f"{path}: unreadable sidecar ({e})") from None
    if not isinstance(data, dict):
        raise SRExportError(f"{path}: sidecar is not a JSON object")
    return data


def check_engine_sidecar(sidecar: dict, backend: str, scale: int, where: str) -> None:
    """Refuse an engine the backend's plugin cannot load or that breaks the I/O contract."""
    flavour = sidecar.get("flavour") or "tensorrt"  # sidecars from before flavours: TensorRT
    if flavour != ENGINE_FLAVOURS[backend]:
        other = next((b for b, f in ENGINE_FLAVOURS.items() if f == flavour), None)
        hint = f" (use backend={other!r})" if other else ""
        raise SRExportError(f"{where}: engine flavour {flavour!r} cannot run on backend {backend!r}, which loads "
                            f"{ENGINE_FLAVOURS[backend]!r} engines{hint}")
    if sidecar.get("scale") != scale:
        raise SRExportError(f"{where}: engine upscales x{sidecar.get('scale')}, not the x{scale} asked for")
    names = ([t.get("name") for t in sidecar.get("inputs", [])], [t.get("name") for t in sidecar.get("outputs", [])])
    if names != (["lr"], ["sr"]):
        raise SRExportError(f"{where}: expected one input 'lr' and one output 'sr', got {names[0]} -> {names[1]}")
    if sidecar["inputs"][0].get("dtype") != "float32" or sidecar["outputs"][0].get("dtype") != "float32":
        raise SRExportError(f"{where}: vs-mlrt gives the engine float32 planes; this engine has "
                            f"{sidecar['inputs'][0].get('dtype')} I/O (build it with --io fp32)")
    if sidecar.get("layout") != "NCHW" or sidecar.get("colour_space") != COLOUR_SPACE \
            or list(sidecar.get("value_range", [])) != [0.0, 1.0]:
        raise SRExportError(f"{where}: not srexport's I/O contract (NCHW, {COLOUR_SPACE}, values in [0, 1])")


def _engine_tiles(sidecar: dict, width: int, height: int, overlap: int | None, where: str):
    """(tilesize [w, h], overlap [w, h]) for vs-mlrt where the frame is larger than the profile."""
    max_shape = (sidecar.get("profile") or {}).get("max")
    if not max_shape or len(max_shape) != 4:
        raise SRExportError(f"{where}: sidecar has no profile")
    max_h, max_w = int(max_shape[2]), int(max_shape[3])
    if height <= max_h and width <= max_w:
        return None, None
    if overlap is None:
        overlap = (sidecar.get("io_contract") or {}).get("tile_overlap")
    if overlap is None:
        raise SRExportError(f"{where}: a {width}x{height} clip is larger than the engine's profile "
                            f"({max_w}x{max_h}) and the sidecar gives no tile_overlap: pass overlap=N "
                            "(the network's receptive radius; `srexport info` shows it)")
    tile = [min(width, max_w), min(height, max_h)]
    if min(tile) < 4 * overlap:
        raise SRExportError(f"{where}: the profile's largest input {max_w}x{max_h} leaves no room for an overlap of "
                            f"{overlap} LR pixels on each side")
    return tile, [VS_OVERLAP * overlap] * 2


def _model(core, backend: str, clip, network: str, tilesize, overlap, device: str | int | None):
    if not hasattr(core, backend):
        raise SRExportError(f"backend {backend!r}: vs-mlrt's plugin is not installed (pip install "
                            f"{PLUGIN_PACKAGES[backend]})")
    kwargs = {}
    if tilesize is not None:
        kwargs.update(tilesize=tilesize, overlap=overlap)
    if backend == "ort":
        return core.ort.Model(clip, network_path=network, provider=device or "CPU", **kwargs)
    if backend == "ov":
        # OpenVINO's CPU plugin would pick bf16 on CPUs with bfloat16 instructions: ask for f32.
        return core.ov.Model(clip, network_path=network, device=device or "CPU",
                             config=lambda: {"INFERENCE_PRECISION_HINT": "f32"}, **kwargs)
    plugin = core.trt if backend == "trt" else core.trt_rtx
    return plugin.Model(clip, engine_path=network, device_id=int(device or 0), **kwargs)


def upscale(clip, network: str | os.PathLike, scale: int, backend: str = "ort", *, tile: int | None = None,
            overlap: int | None = None, device: str | int | None = None):
    """`clip` upscaled by `scale` with srexport's `network`: an ONNX file for "ort" and "ov", an
    engine (with its sidecar) for "trt" and "trt_rtx". `tile` (LR pixels; with `overlap` >= the
    network's receptive radius) tiles every frame; engines tile by themselves where a frame is larger
    than their profile. `device`: ONNX Runtime's provider ("CPU", "CUDA"), OpenVINO's device, or the
    GPU index for TensorRT. Returns a clip of the input's format, scale times its size."""
    vs = _vs()
    core = vs.core
    if backend not in BACKENDS:
        raise SRExportError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(scale, int) or scale < 1:
        raise SRExportError(f"scale must be a positive integer, got {scale!r}")
    path = Path(network)
    if not path.is_file():
        raise SRExportError(f"{path}: no such file")
    if not isinstance(clip, vs.VideoNode) or clip.format is None or not clip.width or not clip.height:
        raise SRExportError("clip: needs a VapourSynth clip of constant format and size")
    fmt = clip.format
    if backend in ENGINE_FLAVOURS:
        if path.suffix != ".engine":
            raise SRExportError(f"{path}: backend {backend!r} runs an srexport engine (.engine), not {path.suffix or 'this file'}")
        sidecar = read_engine_sidecar(path)
        check_engine_sidecar(sidecar, backend, scale, str(path))
        tilesize, overlaps = _engine_tiles(sidecar, clip.width, clip.height, overlap, str(path))
    elif path.suffix != ".onnx":
        raise SRExportError(f"{path}: backend {backend!r} runs an ONNX file (.onnx), not {path.suffix or 'this file'}")
    else:
        tilesize = overlaps = None
    if tile is not None:
        if overlap is None:
            raise SRExportError("tile: needs overlap=N too (the network's receptive radius; `srexport info` shows it)")
        if tile < 1 or overlap < 0:
            raise SRExportError(f"tile and overlap must be positive, got {tile} and {overlap}")
        if tile < 2 * overlap:
            raise SRExportError(f"tile: vs-mlrt needs tiles of at least twice the overlap ({2 * overlap}), got {tile}")
        tilesize = [min(clip.width, tile + 2 * overlap), min(clip.height, tile + 2 * overlap)]
        overlaps = [VS_OVERLAP * overlap] * 2

    def network_on(y):  # y: GRAYS in [0, 1] -> GRAYS, scale times larger
        out = _model(core, backend, y, str(path), tilesize, overlaps, device)
        if (out.width, out.height) != (scale * y.width, scale * y.height):
            raise SRExportError(f"{path}: gives {out.width}x{out.height} for a {y.width}x{y.height} clip, "
                                f"not x{scale}")
        return out

    if fmt.color_family == vs.RGB:
        return _upscale_rgb(vs, clip, network_on, scale)
    if fmt.color_family not in (vs.YUV, vs.GRAY):
        raise SRExportError(f"clip: colour family {fmt.color_family} is not YUV, RGB or GRAY")
    return _upscale_yuv(vs, clip, network_on, scale)


def _plane(vs, clip, i):
    return vs.core.std.ShufflePlanes(clip, i, vs.GRAY)


def _to_float(vs, plane, divisor: float):
    """An integer plane as float32 values / divisor (float32 multiply by float32(1 / divisor), as
    video.py does; not resize's range-aware conversion, which would stretch limited range)."""
    if plane.format.sample_type == vs.FLOAT:
        return plane
    return vs.core.std.Expr(plane, f"x {1.0 / divisor!r} *" if divisor != 1 else "x", format=vs.GRAYS)


def _round_to(vs, plane, fmt, multiplier: float):
    """A GRAYS plane times `multiplier`, rounded half up into the integer format `fmt`, clamped.
    std.Expr has no floor and rounds an integer output half to even, so a half-level nudge of one
    float32 step at the format's top value makes an exact .5 round up as srexport's floor(x + 0.5)
    does (bicubic chroma at x2 lands on exact halves: its taps are dyadic)."""
    if fmt.sample_type == vs.FLOAT:
        return plane
    gray = vs.core.query_video_format(vs.GRAY, vs.INTEGER, fmt.bits_per_sample, 0, 0)
    nudge = 2.0 ** (fmt.bits_per_sample - 24)
    return vs.core.std.Expr(plane, f"x {multiplier!r} * {nudge!r} +", format=gray.id)


def _bicubic(vs, plane, scale):
    # Keys' cubic, a = -0.5: b = 0, c = 0.5 in zimg's Mitchell-Netravali terms; MATLAB's imresize.
    return vs.core.resize.Bicubic(plane, plane.width * scale, plane.height * scale, filter_param_a=0,
                                  filter_param_b=0.5)


def _upscale_yuv(vs, clip, network_on, scale):
    fmt = clip.format
    maxval = float((1 << fmt.bits_per_sample) - 1) if fmt.sample_type == vs.INTEGER else 1.0
    y = _round_to(vs, network_on(_to_float(vs, _plane(vs, clip, 0), maxval)), fmt, maxval)
    if fmt.color_family == vs.GRAY:
        return y
    chroma = [_round_to(vs, _bicubic(vs, _to_float(vs, _plane(vs, clip, i), 1), scale), fmt, 1.0) for i in (1, 2)]
    return vs.core.std.ShufflePlanes([y, *chroma], [0, 0, 0], vs.YUV)


def _upscale_rgb(vs, clip, network_on, scale):
    core, fmt = vs.core, clip.format
    # 8-bit values as they are; float RGB in [0, 1] and deeper integers brought to [0, 255].
    to255 = 255.0 if fmt.sample_type == vs.FLOAT else 255.0 / ((1 << fmt.bits_per_sample) - 1)
    rgb = [_to_float(vs, _plane(vs, clip, i), 1) for i in range(3)]
    m, o = _YCBCR, _YCBCR_OFFSET

    def ycc(k, extra=""):
        coeffs = [f"{m[k][i] / 255.0 * to255!r}" for i in range(3)]
        return core.std.Expr(rgb, f"x {coeffs[0]} * y {coeffs[1]} * + z {coeffs[2]} * + {o[k]!r} + {extra}",
                             format=vs.GRAYS)
    y_sr = network_on(ycc(0, f"{1 / 255.0!r} *"))
    cb, cr = (_bicubic(vs, ycc(k), scale) for k in (1, 2))
    planes = []
    for k in range(3):
        expr = (f"x 255 * {_RGB[k][0]!r} * y {_RGB[k][1]!r} * + z {_RGB[k][2]!r} * + {_RGB_BIAS[k]!r} +")
        planes.append(core.std.Expr([y_sr, cb, cr], expr, format=vs.GRAYS))
    if fmt.sample_type == vs.FLOAT:
        planes = [core.std.Expr(p, f"x {1 / 255.0!r} *") for p in planes]
    else:
        planes = [_round_to(vs, p, fmt, 1 / to255) for p in planes]
    return core.std.ShufflePlanes(planes, [0, 0, 0], vs.RGB)
