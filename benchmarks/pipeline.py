"""End-to-end speed of `srexport upscale` beside the network alone; writes benchmarks/PIPELINE.md.

    python benchmarks/pipeline.py                                  # espcn x2 to 1920x1080
    python benchmarks/pipeline.py --model fsrcnn --scale 3 --video my_clip.mp4
    python benchmarks/pipeline.py --model fsrcnn --out benchmarks/PIPELINE_fsrcnn.md

Network alone: `srexport.bench.bench` for the row `auto` picks (on a CPU the fused kernel for
FSRCNN and ESPCN, tuned ONNX Runtime for the rest).
Images: one LR frame as an RGB PNG through the runner the CLI opens, median of several runs of
(b) `images.upscale_rgb8` (colour conversion, network, chroma, colour back, rounding: everything
but the file) and (c) `images.upscale_image` file to file as PNG, BMP and JPEG, each alternating
with (a) the network on its Y alone. Video: `srexport upscale CLIP -o OUT` as a subprocess for
each x264 preset; its summary line gives end-to-end and network-only fps. Without --video the
clip is made here: H.264 (CRF 18, preset medium) with AAC audio, panning across a mosaic of the
Set14 and T91 photographs when ../shared/datasets exists (otherwise a synthetic gradient, which
encodes unrealistically fast).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from srexport import images  # noqa: E402
from srexport.bench import bench, machine_info, parse_size  # noqa: E402
from srexport.data import list_images  # noqa: E402
from srexport.runtime import open_runner_for  # noqa: E402
from srexport.video import DEFAULT_PRESET, make_test_video  # noqa: E402

DATASETS = HERE.parent.parent / "shared" / "datasets"
BENCH_ROW = {"onnxruntime": "ort-tuned", "torch": "torch-fp32", "tensorrt": "tensorrt-fp16", "native": "native-fp32"}
IMAGE_TARGET = 0.15  # the issue: the image path adds at most 15% over the network's own time
VIDEO_TARGET_FPS = 10.0  # the issue: ESPCN x2 to 1080p


def photo_mosaic(width: int, height: int) -> np.ndarray | None:
    """A canvas 2.5 frames wide and 2 high covered with the Set14 and T91 photographs (rows of
    photos scaled to the row's height, repeated until full), or None without ../shared/datasets."""
    from PIL import Image

    folders = [DATASETS / name for name in ("Set14", "T91") if (DATASETS / name).is_dir()]
    if not folders:
        return None
    photos = [Image.open(p).convert("RGB") for folder in folders for p in list_images(folder)]
    cw, ch = int(width * 2.5), height * 2
    canvas = np.zeros((ch, cw, 3), np.uint8)
    y, k, row_h = 0, 0, max(64, height // 3)
    while y < ch:
        x = 0
        while x < cw:
            p = photos[k % len(photos)]
            p = np.asarray(p.resize((max(1, round(p.width * row_h / p.height)), row_h), Image.LANCZOS))
            h, w = min(row_h, ch - y), min(p.shape[1], cw - x)
            canvas[y:y + h, x:x + w] = p[:h, :w]
            x += w
            k += 1
        y += row_h
    return canvas


def make_clip(path: Path, width: int, height: int, frames: int, fps: int) -> str:
    canvas = photo_mosaic(width, height)
    if canvas is None:
        make_test_video(path, frames=frames, width=width, height=height, fps=fps,
                        options={"crf": "18", "preset": "medium"})
        return "synthetic gradient + noise (no ../shared/datasets)"
    ch, cw = canvas.shape[:2]

    def pan(i: int) -> np.ndarray:  # left to right, and down and up once
        t = i / max(1, frames - 1)
        x = round(t * (cw - width))
        y = round(0.5 * (1 - math.cos(2 * math.pi * t)) * (ch - height))
        return canvas[y:y + height, x:x + width]

    make_test_video(path, frames=frames, width=width, height=height, fps=fps, content=pan,
                    options={"crf": "18", "preset": "medium"})
    return "pan across a mosaic of the Set14 and T91 photographs"


def beside_network_ms(fn, network, repeats: int) -> tuple[float, float]:
    """Median ms of `fn` and of `network`, timed alternately (after one untimed call of each), so
    that load from elsewhere on a shared machine hits both alike."""
    fn(), network()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for f, out in ((fn, times[0]), (network, times[1])):
            t = time.perf_counter()
            f()
            out.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="espcn")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--output-size", default="1920x1080")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--video", type=Path, help="a video to use instead of the generated clip")
    parser.add_argument("--frames", type=int, default=150, help="frames of the generated clip (30 fps)")
    parser.add_argument("--presets", nargs="+", default=["veryfast", "medium"], help="x264 presets to run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "PIPELINE.md")
    args = parser.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *(argv or sys.argv[1:])])
    out_w, out_h = parse_size(args.output_size)
    lr_w, lr_h = math.ceil(out_w / args.scale), math.ceil(out_h / args.scale)
    work = Path(tempfile.mkdtemp(prefix="srexport-pipeline-"))
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    say("clip")
    clip = args.video or work / "clip.mp4"
    source = f"given: {clip.name}" if args.video else make_clip(clip, lr_w, lr_h, args.frames, 30)

    runner = open_runner_for(args.model, args.scale, backend=args.backend, spin=False)  # as `srexport upscale`
    row = BENCH_ROW[runner.info["backend"]]
    say(f"bench {row}")
    report = bench(args.model, args.scale, output_size=(out_w, out_h), backends=[row], repeats=args.repeats)
    net_ms = report.row(row).ms_median

    say("image path")
    import av

    with av.open(str(clip)) as c:
        frame = next(f for i, f in enumerate(c.decode(video=0)) if i == min(args.frames, 30) // 2)
    png = work / "frame.png"
    from PIL import Image

    Image.fromarray(frame.to_ndarray(format="rgb24")).save(png)
    decoded, _ = images._open(png)
    y = np.random.default_rng(0).random((1, 1, decoded.planes.shape[0], decoded.planes.shape[1]), dtype=np.float32)
    network = lambda: runner(y)  # noqa: E731
    image_rows = [("colour in, network, chroma, colour out (no file)",
                   *beside_network_ms(lambda: images.upscale_rgb8(runner, decoded.planes, args.scale), network,
                                      args.repeats))]
    for suffix in (".bmp", ".jpg", ".png"):
        target = work / f"out{suffix}"
        image_rows.append((f"file to file, {suffix[1:].upper()} out",
                           *beside_network_ms(lambda: images.upscale_image(runner, png, target, force=True), network,
                                              args.repeats)))

    video_rows = []
    for preset in args.presets:
        say(f"video, preset {preset}")
        target = work / f"out_{preset}.mp4"
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "srexport.cli", "upscale", str(clip), "-o", str(target),
                               "--model", args.model, "--scale", str(args.scale), "--backend", args.backend,
                               "--preset", preset], capture_output=True, text=True)
        wall = time.perf_counter() - t
        line = next((ln for ln in done.stderr.splitlines() if "fps end to end" in ln), None)
        if done.returncode != 0 or line is None:
            raise SystemExit(f"srexport upscale failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        e2e, net = (float(v) for v in re.search(r"([\d.]+) fps end to end, network alone ([\d.]+) fps", line).groups())
        frames = int(re.search(r": (\d+) frames", line).group(1))
        video_rows.append((preset, frames, e2e, net, frames / wall, target.stat().st_size / 2**20,
                           line.split(": ", 1)[1]))

    machine = machine_info()
    verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines = [
        f"# `srexport upscale` end to end: {args.model} x{args.scale}, {lr_w}x{lr_h} -> {out_w}x{out_h}",
        "",
        f"Command: `{command}`  ",
        f"Date: {_dt.datetime.now().isoformat(timespec='seconds')}  ",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('physical_cores', '?')} physical cores, torch "
        f"{machine.get('torch', '?')}, onnxruntime {machine.get('onnxruntime', '?')}  ",
        f"Backend: {runner.info['backend']} ({runner.info.get('session') or runner.info.get('kernel', '')}); "
        f"bench row `{row}`  ",
        f"Clip: {source}; {args.frames if not args.video else '?'} frames at 30 fps, H.264 + AAC",
        "",
        f"Network alone (`srexport bench`, median of {args.repeats}): **{net_ms:.1f} ms** "
        f"({1000 / net_ms:.1f} fps, {100 * report.row(row).peak_fraction:.0f}% of the GEMM probe).",
        "",
        "## Images (median ms per image, same process; the file rows include decoding the PNG input)",
        "",
        "Each row alternates with the network on Y alone (the runner `upscale` opens), and its overhead is",
        "over that network run beside it; the bench figure above is the other reference.",
        "",
        "| step | ms | network on Y beside it, ms | over the network beside it | over bench | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, ms, beside in image_rows:
        over = ms / beside - 1
        lines.append(f"| {label} | {ms:.1f} | {beside:.1f} | {100 * over:+.0f}% | {100 * (ms / net_ms - 1):+.0f}% | "
                     f"<= {100 * IMAGE_TARGET:.0f}%: {verdict(over <= IMAGE_TARGET)} |")
    lines += [
        "",
        "## Video (`srexport upscale CLIP -o OUT --preset P`, one process per row)",
        "",
        "| x264 preset (CRF 18) | frames | end-to-end fps | network-only fps | fps incl. process start | "
        f"output MiB | target {VIDEO_TARGET_FPS:.0f} fps |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for preset, frames, e2e, net, with_start, mib, _ in video_rows:
        lines.append(f"| {preset}{' (default)' if preset == DEFAULT_PRESET else ''} | {frames} | {e2e:.1f} | "
                     f"{net:.1f} | {with_start:.1f} | {mib:.1f} | {verdict(e2e >= VIDEO_TARGET_FPS)} |")
    lines += ["", "Summary lines printed by `srexport upscale`:", ""]
    lines += [f"- {preset}: `{text}`" for preset, *_, text in video_rows]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
