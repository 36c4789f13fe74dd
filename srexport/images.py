"""Upscaling image files: `upscale_image` for one, `upscale_many` for files, folders and globs.

Colour follows the training protocol (REFERENCE.md §2): RGB -> YCbCr with MATLAB's BT.601
limited-range `rgb2ycbcr`, Y/255 through the network, Cb and Cr upscaled by MATLAB bicubic, back
to RGB with the exact inverse and rounded. A grayscale image is its own Y (as the published tables
treated Set14's `bridge`); 16-bit grayscale (PNG/TIFF mode I;16) stays 16-bit, with Y/65535 in and
out. An alpha channel is upscaled by MATLAB bicubic and kept. EXIF orientation is applied before
upscaling, and the orientation tag is reset in what is written. Outputs are written atomically;
an existing output is kept unless `force`.

Pillow reads 16-bit-per-channel RGB PNGs as 8-bit RGB, so those come out 8-bit.
"""

from __future__ import annotations

import glob
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .atomic import atomic_output, check_writable
from .data import IMAGE_SUFFIXES, rgb2ycbcr, ycbcr2rgb
from .errors import SRExportError
from .tiling import upscale_tiled

# Pillow format name per output suffix.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
           ".webp": "WEBP"}
READABLE_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF", "WEBP"}
# PNG at zlib level 3, not Pillow's 6: a 1920x1080 photo took ~170 ms instead of 410-580 ms (2
# cores) for a file 7-11% larger; PNG encoding dominated `upscale` of a 1080p PNG at level 6.
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}, "PNG": {"compress_level": 3}}
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}

_bicubic_cache: dict[tuple[int, torch.dtype], torch.nn.Module] = {}


def bicubic_upscale(planes: np.ndarray, scale: int, dtype=np.float64) -> np.ndarray:
    """MATLAB `imresize(x, scale, 'bicubic')` of float (..., H, W) planes (MatlabBicubicUpsample: a
    5x5 convolution + pixel shuffle, equal to data.imresize and faster). float64 is exact to 1e-12
    on [0, 255]; float32 (for planes rounded to 8 bits afterwards) to 1e-4, and 5x faster."""
    from .archs import MatlabBicubicUpsample

    tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    if (scale, tdtype) not in _bicubic_cache:
        _bicubic_cache[scale, tdtype] = MatlabBicubicUpsample(scale).to(tdtype).eval()
    arr = np.asarray(planes, dtype=dtype)
    lead = arr.shape[:-2]
    x = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1, 1, *arr.shape[-2:])))
    with torch.inference_mode():
        y = _bicubic_cache[scale, tdtype](x).numpy()
    return y.reshape(*lead, *y.shape[-2:])


@dataclass
class _Decoded:
    kind: str  # "gray", "rgb"
    planes: np.ndarray  # gray: (H, W); rgb: (H, W, 3); float64 in [0, maxval], 8-bit RGB kept as uint8
    alpha: np.ndarray | None
    maxval: float
    info: dict


def _open(path: Path) -> tuple[_Decoded, str]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise SRExportError(f"{path}: unsupported format {path.suffix or '(no suffix)'}; "
                            f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    if not path.is_file():
        raise SRExportError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SRExportError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in READABLE_FORMATS:
                raise SRExportError(f"{path}: unsupported image format {fmt}")
            im.load()  # decode now, so a truncated file fails here
            if im.width == 0 or im.height == 0:
                raise SRExportError(f"{path}: image has zero size {im.width}x{im.height}")
            icc = im.info.get("icc_profile")
            im = ImageOps.exif_transpose(im)
            exif = im.getexif()
            decoded = _to_arrays(im)
    except SRExportError:
        raise
    except UnidentifiedImageError:
        raise SRExportError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise SRExportError(f"{path}: cannot read image ({str(exc).splitlines()[0][:150] or type(exc).__name__})") from None
    if decoded.planes.size == 0:
        raise SRExportError(f"{path}: image has zero size")
    decoded.info = {"icc_profile": icc, "exif": exif}
    return decoded, fmt


def _to_arrays(im) -> _Decoded:
    """Pillow image -> planes. Modes: 1/L/P/LA/PA/RGB/RGBA/CMYK/YCbCr/I;16*/I/F."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _Decoded("gray", np.asarray(im, dtype=np.uint16).astype(np.float64), None, 65535.0, {})
    if mode in ("I", "F"):  # 32-bit integer or float grayscale: treat as 16-bit if it fits, else clip
        arr = np.asarray(im, dtype=np.float64)
        maxval = 65535.0 if arr.max(initial=0) > 255 or mode == "I" else 255.0
        return _Decoded("gray", np.clip(arr, 0, maxval), None, maxval, {"mode_in": mode})
    if mode in ("1", "L"):
        return _Decoded("gray", np.asarray(im.convert("L"), dtype=np.float64), None, 255.0, {})
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"), dtype=np.float64)
        return _Decoded("gray", la[..., 0], la[..., 1], 255.0, {})
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"))
        return _Decoded("rgb", rgba[..., :3], rgba[..., 3].astype(np.float64), 255.0, {})
    return _Decoded("rgb", np.asarray(im.convert("RGB")), None, 255.0, {})


def _round(x: np.ndarray, maxval: float, dtype) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, maxval).astype(dtype)


def upscale_array(runner, decoded_planes: np.ndarray, kind: str, scale: int, *, maxval: float = 255.0,
                  tile=None) -> np.ndarray:
    """Upscale planes in [0, maxval]: gray (H, W) -> (sH, sW); rgb (H, W, 3) -> (sH, sW, 3).
    Unrounded float64 result in [0, maxval] scale (8-bit RGB takes `upscale_rgb8`, which rounds
    to the same values faster)."""
    if kind == "gray":  # float64 here, as in `evaluate`: the two paths round identically
        y = decoded_planes[None, None].astype(np.float32) / np.float32(maxval)
        return upscale_tiled(runner, y, scale, tile)[0, 0].astype(np.float64) * maxval
    ycc = rgb2ycbcr(decoded_planes)
    y = (ycc[..., 0] / 255).astype(np.float32)[None, None]
    y_sr = upscale_tiled(runner, y, scale, tile)[0, 0].astype(np.float64) * 255
    chroma = bicubic_upscale(np.moveaxis(ycc[..., 1:], -1, 0), scale)
    return ycbcr2rgb(np.stack([y_sr, chroma[0], chroma[1]], axis=-1))


def upscale_rgb8(runner, rgb: np.ndarray, scale: int, *, tile=None) -> np.ndarray:
    """8-bit RGB (H, W, 3) -> (sH, sW, 3) uint8: Y through the network; Cb/Cr bicubic, back to RGB
    and rounding in colour.py's fused loops (the same values as `upscale_array`, faster)."""
    from .colour import rgb8_to_ycbcr, ycbcr_to_rgb8

    y, cbcr = rgb8_to_ycbcr(rgb)
    return ycbcr_to_rgb8(upscale_tiled(runner, y, scale, tile), cbcr, scale)


def upscale_image(runner, path_in: str | os.PathLike, path_out: str | os.PathLike, *, force: bool = False,
                  tile=None) -> Path:
    """Upscale one image file by `runner.scale` and write `path_out` (format from its suffix)."""
    return _write(*_upscaled(runner, path_in, path_out, force=force, tile=tile), force=force)


def _upscaled(runner, path_in, path_out, *, force: bool, tile):
    """Everything of `upscale_image` but the write: (Pillow image, path_out, format, save options)."""
    from PIL import Image

    path_in, path_out = Path(path_in), Path(path_out)
    if path_in.suffix.lower() not in IMAGE_SUFFIXES:
        raise SRExportError(f"{path_in}: unsupported format {path_in.suffix or '(no suffix)'}; "
                            f"supported: {', '.join(sorted(INPUT_SUFFIXES))}")
    out_format = FORMATS.get(path_out.suffix.lower())
    if out_format is None:
        raise SRExportError(f"{path_out}: unsupported output format {path_out.suffix or '(no suffix)'}; "
                            f"use one of {', '.join(sorted(FORMATS))}")
    check_writable(path_out, force)
    scale = runner.scale
    if not scale:
        raise SRExportError("the runner does not know its scale")
    decoded, _ = _open(path_in)
    rgb8 = decoded.kind == "rgb" and decoded.maxval <= 255
    out = upscale_rgb8(runner, decoded.planes, scale, tile=tile) if rgb8 else upscale_array(
        runner, decoded.planes, decoded.kind, scale, maxval=decoded.maxval, tile=tile)
    alpha = None
    if decoded.alpha is not None and out_format in ALPHA_FORMATS:
        alpha = _round(bicubic_upscale(decoded.alpha, scale, np.float32), 255, np.uint8)
    if decoded.kind == "gray":
        if decoded.maxval > 255 and out_format in SIXTEEN_BIT_FORMATS:
            img = Image.fromarray(_round(out, 65535, np.uint16))  # mode I;16
        else:
            img = Image.fromarray(_round(out * (255.0 / decoded.maxval), 255, np.uint8), "L")
            if alpha is not None:
                img = Image.merge("LA", (img, Image.fromarray(alpha, "L")))
    else:
        img = Image.fromarray(out if rgb8 else _round(out, 255, np.uint8), "RGB")
        if alpha is not None:
            img = Image.merge("RGBA", (*img.split(), Image.fromarray(alpha, "L")))
    if out_format == "WEBP" and img.mode == "L":
        img = img.convert("RGB")
    if out_format == "WEBP" and img.mode == "LA":
        img = img.convert("RGBA")
    options = dict(SAVE_OPTIONS.get(out_format, {}))
    if decoded.info.get("icc_profile") and out_format in ("PNG", "JPEG", "TIFF", "WEBP"):
        options["icc_profile"] = decoded.info["icc_profile"]
    exif = decoded.info.get("exif")
    if exif is not None and len(exif) and out_format in ("JPEG", "PNG", "WEBP"):
        exif[0x0112] = 1  # orientation already applied
        options["exif"] = exif.tobytes()
    if out_format == "JPEG" and img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img, path_out, out_format, options


def _write(img, path_out: Path, out_format: str, options: dict, *, force: bool) -> Path:
    with atomic_output(path_out, force) as tmp:
        try:
            img.save(tmp, format=out_format, **options)
        except (OSError, ValueError) as exc:
            raise SRExportError(f"{path_out}: cannot write {out_format} ({str(exc).splitlines()[0][:150]})") from None
    return path_out


VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
INPUT_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files, folders (their image and video files, not recursive) and glob patterns ->
    (files, failures)."""
    files, failures, seen = [], [], set()

    def add(p: Path):
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                failures.append((p, f"{p}: no images or videos (looked for {', '.join(sorted(INPUT_SUFFIXES))})"))
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True) if Path(m).is_file())
            if not matches:
                failures.append((p, f"{item}: no files match"))
            for q in matches:
                add(q)
        else:
            failures.append((p, f"{p}: no such file"))
    return files, failures


def upscale_many(runner, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False,
                 tile=None, progress: bool = True, out_suffix: str | None = None, codec: str | None = None,
                 crf: int | None = None, preset: str | None = None) -> list[tuple[Path, str]]:
    """Upscale every input (image files, videos, folders, globs) into the folder `out`, keeping file
    names (`out_suffix` such as ".png" changes the image format). With a single input file, `out`
    may instead be the output file itself (it has an image or video suffix and is not a folder).
    Videos go through `video.upscale_video` with `codec`/`crf`/`preset` (defaults libx264, 18,
    veryfast). A bad input is reported on one line naming the file and skipped; the rest are still
    processed. Returns the failures as (path, message): empty when everything was written, so a
    CLI exits non-zero when it is not."""
    from tqdm import tqdm

    files, failures = expand_inputs(inputs)
    for _, message in failures:
        _report(message)
    out = Path(out)
    single_target = (len(files) == 1 and len(list(inputs)) == 1 and not out.is_dir()
                     and out.suffix.lower() in set(FORMATS) | VIDEO_SUFFIXES)
    if not single_target and out.exists() and not out.is_dir():
        raise SRExportError(f"{out}: exists and is not a folder")
    targets: dict[Path, Path] = {}
    bar = tqdm(files, unit="file", disable=not progress or len(files) < 2, dynamic_ncols=True, file=sys.stderr)

    def fail(path: Path, message: str) -> None:
        failures.append((path, message))
        _report(message, bar)

    # Each picture is encoded and written in a second thread while the next one goes through the
    # network (Pillow's encoders and the network release the GIL): PNG's zlib alone takes 2-3x the
    # network's time for ESPCN x2 at 1080p. At most one write is pending.
    pending: tuple[Path, Future] | None = None

    def finish_write() -> None:
        nonlocal pending
        if pending is not None:
            source, job = pending
            pending = None
            try:
                job.result()
            except SRExportError as e:
                fail(source, str(e))
            except MemoryError:
                fail(source, f"{source}: out of memory while writing")

    with ThreadPoolExecutor(max_workers=1) as writer:
        for path in bar:
            bar.set_postfix_str(path.name, refresh=False)
            is_video = path.suffix.lower() in VIDEO_SUFFIXES
            if single_target:
                target = out
            else:
                target = out / (path.stem + out_suffix if out_suffix and not is_video else path.name)
            try:
                if target in targets:
                    raise SRExportError(f"{path}: same output name as {targets[target]} ({target})")
                targets[target] = path
                if is_video:
                    from . import video

                    finish_write()
                    stats = video.upscale_video(runner, path, target, force=force, tile=tile, progress=progress,
                                                codec=codec or video.DEFAULT_CODEC,
                                                crf=video.DEFAULT_CRF if crf is None else crf,
                                                preset=preset or video.DEFAULT_PRESET)
                    _report(stats.summary(), bar, prefix="")
                else:
                    picture = _upscaled(runner, path, target, force=force, tile=tile)
                    finish_write()
                    pending = (path, writer.submit(_write, *picture, force=force))
            except SRExportError as e:
                fail(path, str(e))
            except MemoryError:
                fail(path, f"{path}: out of memory (try --tile auto or a smaller --tile)")
        finish_write()
    bar.close()
    return failures


def _report(message: str, bar=None, prefix: str = "error: ") -> None:
    line = prefix + message
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
