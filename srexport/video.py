"""Video upscaling with PyAV: decode -> network on the Y plane -> encode, audio copied.

Colour: decoded frames are taken as 8-bit YUV 4:2:0 (other pixel formats are converted to
yuv420p by FFmpeg's swscale). The Y plane goes through the network directly as Y/255: video luma
is limited-range BT.601/709, the same [16, 235] convention as the training Y from MATLAB's
rgb2ycbcr. The chroma planes are upscaled by MATLAB bicubic and rounded to 8 bits in the same
fused loop that rounds Y and lays out the output frame (colour.yuv420_frame). Colour range,
primaries, transfer and matrix tags are copied to the output stream.

Timing: every frame keeps its pts and the input stream's time base, so frame rate (variable or
not) and A/V sync are kept; the output stream's nominal rate is the input's average rate. Audio
streams are remuxed packet by packet (no re-encoding).

Three stages overlap: a decode thread (demux + decode + plane extraction), an inference thread
(network + chroma) and the calling thread (encode + mux), joined by bounded queues. PyAV's codec
calls, ONNX Runtime, PyTorch and the Numba loops release the GIL, so the stages really run in
parallel.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_output, check_writable
from .errors import SRExportError
from .colour import yuv420_frame
from .tiling import upscale_tiled

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
CRF_CODECS = {"libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"}
PRESET_CODECS = {"libx264", "libx265", "libsvtav1"}
# veryfast, not x264's own medium: on a CPU the encoder competes with the network for the cores.
# ESPCN x2 to 1080p on 2 cores (benchmarks/PIPELINE.md): 8.9 fps end to end with medium, 11.2 with
# veryfast (encoder busy 4.2 s instead of 10.7 for 150 frames; at CRF 18 the file even came out
# smaller, 3.5 MiB against 4.9, with less detail kept). `--preset medium` for x264's default.
DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PRESET = "libx264", 18, "veryfast"
_END = object()


@dataclass
class VideoStats:
    frames: int
    seconds: float  # wall clock, opening to closing the files
    fps: float  # end-to-end frames per second
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    frame_rate: float | None
    codec: str
    audio_streams: int
    decode_seconds: float = 0.0  # busy time of each stage
    network_seconds: float = 0.0  # the network alone (runner calls)
    convert_seconds: float = 0.0  # chroma upscaling and frame assembly, in the inference thread
    encode_seconds: float = 0.0
    output: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def network_fps(self) -> float:
        return self.frames / self.network_seconds if self.network_seconds else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["network_fps"] = self.network_fps
        return d

    def summary(self) -> str:
        """One line: end-to-end fps beside the network's own fps and each stage's busy time."""
        (w, h), (ow, oh) = self.input_size, self.output_size
        return (f"{self.output}: {self.frames} frames {w}x{h} -> {ow}x{oh} in {self.seconds:.1f} s: "
                f"{self.fps:.1f} fps end to end, network alone {self.network_fps:.1f} fps (busy: decode "
                f"{self.decode_seconds:.1f} s, network {self.network_seconds:.1f} s, chroma {self.convert_seconds:.1f} s, "
                f"encode {self.encode_seconds:.1f} s)")


class _Stop(Exception):
    pass


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _plane(frame, i: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()


def _encoder_options(codec: str, crf: int | None, preset: str | None, bitrate: int | None) -> dict:
    opts = {}
    if bitrate is None and crf is not None and codec in CRF_CODECS:
        opts["crf"] = str(crf)
        if codec == "libvpx-vp9":
            opts["b"] = "0"  # constant quality
    if preset and codec in PRESET_CODECS:
        opts["preset"] = str(preset)
    return opts


def upscale_video(runner, path_in: str | os.PathLike, path_out: str | os.PathLike, *, force: bool = False,
                  codec: str = DEFAULT_CODEC, crf: int | None = DEFAULT_CRF, preset: str | None = DEFAULT_PRESET,
                  bitrate: int | None = None, tile=None, progress: bool = True, queue_size: int = 8,
                  max_frames: int | None = None) -> VideoStats:
    """Upscale `path_in` by `runner.scale` into `path_out` (container from the suffix: .mp4 .mkv
    .mov .webm .avi). `codec` is any FFmpeg encoder in PyAV's build (libx264 default, libx265,
    libvpx-vp9, libsvtav1, ...); quality by `crf` (default 18) or `bitrate` (bits/s); `preset` for
    x264/x265/SVT-AV1. Returns frames, wall seconds and end-to-end fps, plus per-stage busy time."""
    try:
        import av
    except ImportError:
        raise SRExportError("video needs PyAV: pip install av") from None
    from tqdm import tqdm

    path_in, path_out = Path(path_in), Path(path_out)
    container = CONTAINERS.get(path_out.suffix.lower())
    if container is None:
        raise SRExportError(f"{path_out}: unsupported video container {path_out.suffix or '(no suffix)'}; "
                            f"use one of {', '.join(sorted(CONTAINERS))}")
    if codec not in av.codecs_available:
        raise SRExportError(f"encoder {codec!r} is not in this PyAV build")
    check_writable(path_out, force)
    if not path_in.is_file():
        raise SRExportError(f"{path_in}: no such file")
    scale = runner.scale
    if not scale:
        raise SRExportError("the runner does not know its scale")
    start = time.perf_counter()
    try:
        inp = av.open(str(path_in))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SRExportError(f"{path_in}: cannot open video ({str(e).splitlines()[0][:150]})") from None
    try:
        if not inp.streams.video:
            raise SRExportError(f"{path_in}: has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        audio_in = list(inp.streams.audio)
        w, h = vin.codec_context.width, vin.codec_context.height
        if not w or not h:
            raise SRExportError(f"{path_in}: video stream has no frame size")
        ow, oh = scale * w - (scale * w) % 2, scale * h - (scale * h) % 2  # 4:2:0 needs even sizes
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate
        total = vin.frames or (int(float(vin.duration * vin.time_base) * float(rate))
                               if vin.duration and rate else None)
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        stats = VideoStats(0, 0.0, 0.0, (w, h), (ow, oh), float(rate) if rate else None, codec, len(audio_in),
                           output=str(path_out))
        if (ow, oh) != (scale * w, scale * h):
            stats.notes.append(f"output cropped to even size {ow}x{oh} for 4:2:0")
        with atomic_output(path_out, force) as tmp:
            with av.open(str(tmp), "w", format=container) as out:
                vout = out.add_stream(codec, rate=rate, options=_encoder_options(codec, crf, preset, bitrate))
                vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
                vout.time_base = vin.time_base
                vout.codec_context.time_base = vin.time_base
                if bitrate is not None:
                    vout.bit_rate = int(bitrate)
                for attr in ("color_range", "color_primaries", "color_trc", "colorspace"):
                    try:
                        setattr(vout.codec_context, attr, getattr(vin.codec_context, attr))
                    except (AttributeError, ValueError, TypeError):
                        pass
                audio_map = {}
                for a in audio_in:
                    try:
                        audio_map[a.index] = out.add_stream_from_template(a)
                    except (av.FFmpegError, ValueError) as e:
                        raise SRExportError(f"{path_in}: audio stream {a.index} ({a.codec_context.name}) cannot be "
                                            f"copied into {path_out.suffix} ({str(e).splitlines()[0][:100]})") from None
                _pipeline(runner, inp, vin, audio_in, out, vout, audio_map, stats, scale, tile, queue_size,
                          tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, file=sys.stderr,
                               desc=path_in.name), max_frames)
    finally:
        inp.close()
    stats.seconds = time.perf_counter() - start
    stats.fps = stats.frames / stats.seconds if stats.seconds else 0.0
    return stats


def _pipeline(runner, inp, vin, audio_in, out, vout, audio_map, stats, scale, tile, queue_size, bar, max_frames):
    import av

    decoded: queue.Queue = queue.Queue(maxsize=queue_size)
    upscaled: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    errors: list[BaseException] = []
    ow, oh = stats.output_size

    def decode():
        busy = 0.0
        try:
            count = 0
            t = time.perf_counter()
            for packet in inp.demux(vin, *audio_in):
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        busy += time.perf_counter() - t
                        _put(decoded, ("audio", packet), stop)
                        t = time.perf_counter()
                    continue
                for frame in packet.decode():
                    if frame.format.name != "yuv420p":
                        frame = frame.reformat(format="yuv420p")
                    item = ("frame", frame.pts, frame.time_base, _plane(frame, 0), _plane(frame, 1), _plane(frame, 2))
                    busy += time.perf_counter() - t
                    _put(decoded, item, stop)
                    t = time.perf_counter()
                    count += 1
                    if max_frames is not None and count >= max_frames:
                        raise StopIteration
        except StopIteration:
            pass
        except _Stop:
            return
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
            stop.set()
            return
        finally:
            stats.decode_seconds = busy
        try:
            _put(decoded, _END, stop)
        except _Stop:
            pass

    def infer():
        busy = network = 0.0
        try:
            while True:
                item = _get(decoded, stop)
                if item is _END:
                    break
                if item[0] == "audio":
                    _put(upscaled, item, stop)
                    continue
                _, pts, time_base, y, u, v = item
                t = time.perf_counter()
                x = (y.astype(np.float32) * np.float32(1 / 255))[None, None]
                t_net = time.perf_counter()
                y_sr = upscale_tiled(runner, x, scale, tile)
                network += time.perf_counter() - t_net
                frame = av.VideoFrame.from_ndarray(yuv420_frame(y_sr, u, v, scale, (ow, oh)), format="yuv420p")
                frame.pts, frame.time_base = pts, time_base
                busy += time.perf_counter() - t
                _put(upscaled, ("frame", frame), stop)
            _put(upscaled, _END, stop)
        except _Stop:
            return
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()
        finally:
            stats.network_seconds, stats.convert_seconds = network, busy - network

    threads = [threading.Thread(target=decode, name="srexport-decode", daemon=True),
               threading.Thread(target=infer, name="srexport-infer", daemon=True)]
    for t in threads:
        t.start()
    busy = 0.0
    try:
        while True:
            item = _get(upscaled, stop)
            if item is _END:
                break
            t = time.perf_counter()
            if item[0] == "audio":
                packet = item[1]
                packet.stream = audio_map[packet.stream.index]
                out.mux(packet)
            else:
                out.mux(vout.encode(item[1]))
                stats.frames += 1
                bar.update(1)
            busy += time.perf_counter() - t
        t = time.perf_counter()
        out.mux(vout.encode(None))
        busy += time.perf_counter() - t
    except _Stop:
        pass
    except BaseException:
        stop.set()
        raise
    finally:
        stats.encode_seconds = busy
        bar.close()
        stop.set() if errors else None
        for t in threads:
            t.join()
    if errors:
        e = errors[0]
        if isinstance(e, SRExportError):
            raise e
        if isinstance(e, av.FFmpegError):
            raise SRExportError(f"video processing failed: {str(e).splitlines()[0][:200]}") from e
        raise e


def make_test_video(path: str | os.PathLike, *, frames: int = 12, width: int = 64, height: int = 48, fps: int = 24,
                    audio: bool = True, codec: str = "libx264", seed: int = 0, content=None,
                    options: dict | None = None) -> Path:
    """A short video with an optional sine audio track, for tests and benchmarks: `content(i)` gives
    frame i as (height, width, 3) uint8 RGB (default: a moving gradient with noise). `options` are
    the encoder's (default for libx264: crf 18, preset ultrafast)."""
    import av
    from fractions import Fraction

    path = Path(path)
    rng = np.random.default_rng(seed)
    container = CONTAINERS.get(path.suffix.lower(), "mp4")
    with av.open(str(path), "w", format=container) as out:
        if options is None:
            options = {"crf": "18", "preset": "ultrafast"} if codec == "libx264" else {}
        vs = out.add_stream(codec, rate=fps, options=options)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        a_stream = None
        if audio:
            a_stream = out.add_stream("aac", rate=48000)
            a_stream.layout = "mono"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            if content is not None:
                rgb = np.ascontiguousarray(content(i), dtype=np.uint8)
            else:
                rgb = np.stack([(xx * 4 + i * 8) % 256, (yy * 4 + i * 4) % 256, (xx + yy + i * 16) % 256], -1)
                rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if a_stream is not None:
            sr, n = 48000, 1024
            total = int(sr * frames / fps)
            t = np.arange(total) / sr
            wave = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            for k in range(0, total, n):
                chunk = wave[k:k + n]
                if len(chunk) < n:
                    chunk = np.pad(chunk, (0, n - len(chunk)))
                af = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
                af.sample_rate, af.pts = sr, k
                af.time_base = Fraction(1, sr)
                out.mux(a_stream.encode(af))
            out.mux(a_stream.encode(None))
    return path
