"""`srexport upscale` on a video end to end in FP32 and with `--precision bf16`; writes
benchmarks/VIDEO_BF16.md.

    python benchmarks/video_bf16.py                       # espcn x2, 960x540 -> 1920x1080
    python benchmarks/video_bf16.py --model fsrcnn --rounds 3

The clip is pipeline.py's (a pan across the Set14 and T91 photographs, H.264 with AAC audio). Each
round runs `srexport upscale CLIP -o OUT --precision P` as a subprocess once per precision,
alternating, so load from elsewhere on a shared machine hits both alike; the table gives each run's
summary line (end-to-end fps and the network's own) and the medians. There is no quality column:
encoded frames differ by the encoder's own choices; the network's bf16 quality is measured by
`srexport bench` and benchmarks/run_all.py (Set14).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from pipeline import make_clip  # noqa: E402

from srexport.bench import machine_info, parse_size  # noqa: E402

SUMMARY = re.compile(r": (\d+) frames.*?([\d.]+) fps end to end, network alone ([\d.]+) fps")


def run_upscale(clip: Path, target: Path, model: str, scale: int, precision: str, preset: str) -> tuple:
    done = subprocess.run([sys.executable, "-m", "srexport.cli", "upscale", str(clip), "-o", str(target), "--model",
                           model, "--scale", str(scale), "--precision", precision, "--preset", preset, "--force"],
                          capture_output=True, text=True)
    line = next((ln for ln in done.stderr.splitlines() if "fps end to end" in ln), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"srexport upscale --precision {precision} failed ({done.returncode}): "
                         f"{done.stderr.strip()[-500:]}")
    frames, e2e, net = SUMMARY.search(line).groups()
    return int(frames), float(e2e), float(net), line.split(": ", 1)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="espcn")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--output-size", default="1920x1080")
    parser.add_argument("--frames", type=int, default=120, help="frames of the generated clip (30 fps)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per precision, alternating")
    parser.add_argument("--preset", default="veryfast", help="x264 preset of the output")
    parser.add_argument("--load-note", default="", help="a sentence on other load on the machine during the run")
    parser.add_argument("--out", type=Path, default=HERE / "VIDEO_BF16.md")
    args = parser.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *(argv or sys.argv[1:])])
    out_w, out_h = parse_size(args.output_size)
    lr_w, lr_h = math.ceil(out_w / args.scale), math.ceil(out_h / args.scale)
    work = Path(tempfile.mkdtemp(prefix="srexport-video-bf16-"))
    clip = work / "clip.mp4"
    print("clip", file=sys.stderr, flush=True)
    source = make_clip(clip, lr_w, lr_h, args.frames, 30)
    runs: dict[str, list[tuple]] = {"fp32": [], "bf16": []}
    for i in range(args.rounds):
        for precision in runs:
            print(f"round {i + 1}/{args.rounds}: {precision}", file=sys.stderr, flush=True)
            runs[precision].append(run_upscale(clip, work / f"out_{precision}.mp4", args.model, args.scale,
                                               precision, args.preset))
    machine = machine_info()
    med = {p: (statistics.median(r[1] for r in rs), statistics.median(r[2] for r in rs)) for p, rs in runs.items()}
    lines = [
        f"# `srexport upscale` video end to end, FP32 and bf16: {args.model} x{args.scale}, {lr_w}x{lr_h} -> "
        f"{out_w}x{out_h}",
        "",
        f"Command: `{command}`  ",
        f"Date: {_dt.datetime.now().isoformat(timespec='seconds')}  ",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('physical_cores', '?')} physical cores" +
        (f". {args.load_note}" if args.load_note else ""),
        f"Clip: {source}; {args.frames} frames at 30 fps, H.264 + AAC; output x264 preset {args.preset}",
        "",
        "| precision | end-to-end fps (median) | network-only fps (median) | runs (end-to-end fps) |",
        "|---|---:|---:|---|",
    ]
    for p, rs in runs.items():
        lines.append(f"| {p} | {med[p][0]:.1f} | {med[p][1]:.1f} | {', '.join(f'{r[1]:.1f}' for r in rs)} |")
    lines += ["", f"bf16 over FP32: {med['bf16'][0] / med['fp32'][0]:.2f}x end to end, "
              f"{med['bf16'][1] / med['fp32'][1]:.2f}x for the network alone.", "",
              "Summary lines printed by `srexport upscale`:", ""]
    lines += [f"- {p}: `{r[3]}`" for p, rs in runs.items() for r in rs]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
