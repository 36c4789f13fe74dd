"""Benchmark every network and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py                       # every network, x2, 1920x1080 output (DRCN smaller)
    python benchmarks/run_all.py --scales 2 3 4 --networks espcn fsrcnn --output-size 1280x720

Each network runs `srexport.bench.bench` (every available backend in one run, a GEMM probe in
the same run). RESULTS.md gets a summary (the CPU path `auto` picks without a GPU: the fused
kernel for FSRCNN, FSRCNN-s and ESPCN, the tuned ONNX Runtime session for the rest, against the
issue's targets), one table per network, the machine and the exact command. `--json` also writes
every report as JSON.

Reduced precision: a second summary sets srexport's bf16 route (`--precision bf16`: the fused
kernel in bf16 where it applies, else OpenVINO's bf16 on srexport's tuned graph) beside OpenVINO's
default precision (bf16 on a CPU with bf16 dot products) and its FP32 hint, all from the same
interleaved run, with each bf16 route's PSNR from FP32 on the real images of `--quality-data`
(Set14 by default, where it exists): every image's LR (MATLAB bicubic) through the route and
through FP32 ONNX Runtime, PSNR of the difference over all pixels, worst image. `--quality-images`
limits the images for networks costing more than `--max-gflop` (DRCN).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from srexport.archs import build, list_networks  # noqa: E402
from srexport.bench import BURST_S, ROWS, bench, parse_size  # noqa: E402
from srexport.complexity import macs  # noqa: E402

DATASETS = HERE.parent.parent / "shared" / "datasets"

# The targets for the auto CPU path, as a fraction of the GEMM probe.
TARGETS = {"srcnn": 0.70, "vdsr": 0.70, "drcn": 0.70, "red": 0.70, "fsrcnn": 0.50, "espcn": 0.50}


def output_size_for(name: str, scale: int, size: tuple[int, int], max_gflop: float) -> tuple[int, int]:
    """`size`, or the same shape scaled down until one frame costs at most `max_gflop` (DRCN costs
    81 TFLOP per 1080p frame: minutes per run on a CPU; its efficiency does not depend on size)."""
    w, h = size
    gflop = 2 * macs(build(name, scale), math.ceil(h / scale), math.ceil(w / scale)) / 1e9
    if gflop <= max_gflop:
        return size
    f = math.sqrt(max_gflop / gflop)
    return max(scale, int(w * f) // scale * scale), max(scale, int(h * f) // scale * scale)


def summary_line(report) -> str:
    auto = report.auto_row()
    torch_row, default = report.row("torch-fp32"), report.row("ort-default")
    baselines = [r.ms_median for r in (torch_row, default) if r is not None and r.ms_median is not None]
    if auto is None or auto.ms_median is None:
        return f"| {report.network} | x{report.scale} | | auto row failed | | | | | | | | |"
    best = min(baselines) if baselines else None
    target = TARGETS.get(report.network)

    def verdict(fraction):
        return "" if target is None or fraction is None else ("met" if fraction >= target else "**missed**")

    vs = "" if best is None else f"{best / auto.ms_median:.2f}x"
    local = auto.local_fraction
    ow, oh = report.output_size
    return (f"| {report.network} | x{report.scale} | {auto.backend} | {ow}x{oh} | {auto.ms_median:,.1f} | "
            f"{auto.fps:.2f} | {auto.gflops:.0f} | "
            f"{report.gemm_gflops:.0f} | {100 * auto.peak_fraction:.0f}% {verdict(auto.peak_fraction)} | "
            f"{'' if local is None else f'{100 * local:.0f}%'} {verdict(local)} | "
            f"{'' if target is None else f'{100 * target:.0f}%'} | {vs} |")


def quality_vs_fp32(name: str, scale: int, data_dir: Path, limit: int | None) -> dict:
    """Worst-image PSNR (dB) from FP32 of srexport's bf16 route and OpenVINO's default on the LR of
    every image of `data_dir` (the first `limit` by size, smallest first, when given)."""
    from srexport.checkpoint import resolve_network
    from srexport.data import list_images, load_image, protocol_pair
    from srexport.openvino_runner import OpenVINORunner, openvino_available
    from srexport.runtime import OnnxRuntimeRunner, exported_onnx, open_runner
    from srexport.verify import diff_case

    model, record = resolve_network(name, scale)
    model.record = record
    proto = exported_onnx(model, record)
    runners = {"fp32": OnnxRuntimeRunner(proto.SerializeToString(), tuned=True)}
    runners["srexport-bf16"] = open_runner(model=model, precision="bf16")
    if openvino_available():
        runners["openvino-default"] = OpenVINORunner(proto, precision="default")
    lrs = [(lr_y / 255.0).astype("float32")[None, None]
           for lr_y in (protocol_pair(load_image(p), scale)[1] for p in list_images(data_dir))]
    lrs.sort(key=lambda x: x.size)
    if limit is not None:
        lrs = lrs[:limit]
    worst = {k: math.inf for k in runners if k != "fp32"}
    for x in lrs:
        ref = runners["fp32"](x)
        for key in worst:
            worst[key] = min(worst[key], diff_case(ref, runners[key](x), x.shape).psnr_db)
    return {"images": len(lrs), "route": runners["srexport-bf16"].name, **worst}


def bf16_line(report, quality: dict | None) -> str:
    ours, peer, peer32 = report.bf16_row(), report.row("openvino-default"), report.row("openvino-fp32")
    fp32 = report.auto_row()

    def ms(row):
        return "" if row is None or row.ms_median is None else f"{row.ms_median:,.1f}"

    q = quality or {}

    def db(key):
        return "" if key not in q else f"{q[key]:.1f}"

    faster = ""
    if ours is not None and peer is not None and ours.ms_median and peer.ms_median:
        ratio = peer.ms_median / ours.ms_median
        faster = f"{ratio:.2f}x" + ("" if ratio > 1 else " **slower**")
    images = f" ({q['images']} images)" if q else ""
    return (f"| {report.network} | x{report.scale} | {ours.backend if ours else 'no bf16 row'} | {ms(ours)} | "
            f"{db('srexport-bf16')}{images} | {ms(peer)} | {db('openvino-default')} | {ms(peer32)} | "
            f"{fp32.backend if fp32 else ''}: {ms(fp32)} | {faster} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list_networks(), choices=list_networks())
    parser.add_argument("--scales", nargs="+", type=int, default=[2], choices=[2, 3, 4])
    parser.add_argument("--output-size", default="1920x1080", help="WIDTHxHEIGHT of the output (default 1920x1080)")
    parser.add_argument("--max-gflop", type=float, default=10000,
                        help="a network costing more per frame runs at a smaller output of the same shape")
    parser.add_argument("--backends", nargs="+", choices=ROWS, help="rows to run (default: every available one)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-run-s", type=float, default=20.0,
                        help="a row whose warm-up run takes longer is measured by that single run")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write every report as JSON here")
    parser.add_argument("--quality-data", type=Path, default=DATASETS / "Set14",
                        help="HR images for the bf16 rows' PSNR from FP32 (default ../shared/datasets/Set14)")
    parser.add_argument("--quality-images", type=int, default=2,
                        help="images (smallest first) for networks over --max-gflop (default 2)")
    parser.add_argument("--load-note", default="", help="a sentence on other load on the machine during the run")
    args = parser.parse_args(argv)
    size = parse_size(args.output_size)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *(argv or sys.argv[1:])])
    reports, started = [], time.time()
    for scale in args.scales:
        for name in args.networks:
            print(f"== {name} x{scale} ==", file=sys.stderr, flush=True)
            report = bench(name, scale, output_size=output_size_for(name, scale, size, args.max_gflop),
                           backends=args.backends, warmup=args.warmup,
                           repeats=args.repeats, long_run_s=args.long_run_s,
                           progress=lambda msg: print(f"   {msg}", file=sys.stderr, flush=True))
            print(report.table() + "\n", flush=True)
            report.quality = None
            if report.bf16_row() is not None and args.quality_data.is_dir():
                print(f"   bf16 quality on {args.quality_data.name}", file=sys.stderr, flush=True)
                heavy = output_size_for(name, scale, size, args.max_gflop) != size
                report.quality = quality_vs_fp32(name, scale, args.quality_data,
                                                 args.quality_images if heavy else None)
                print(f"   {report.quality}", file=sys.stderr, flush=True)
            reports.append(report)
    machine = reports[0].machine if reports else {}
    lines = [
        "# srexport benchmark results",
        "",
        f"Command: `{command}`  ",
        f"Date: {_dt.datetime.now().isoformat(timespec='seconds')}, total {time.time() - started:.0f} s  ",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('physical_cores', '?')} physical cores "
        f"({machine.get('logical_cpus', '?')} logical), torch {machine.get('torch', '?')}, "
        f"onnxruntime {machine.get('onnxruntime', '?')}" + (f", GPU {machine['gpu']}" if "gpu" in machine else ""),
        "",
        "Times are the median ms per frame over the repeats after warm-up (rows interleaved round-robin when "
        f"memory allows; a repeat of a frame shorter than {BURST_S:g} s is the median of a burst of frames "
        f"lasting {BURST_S:g} s); GFLOP/s counts 2 FLOP per multiply-add of the network's convolutions "
        "(`srexport.complexity.macs`); the GEMM probe is the faster of ONNX Runtime's and NumPy's FP32 "
        "2048^3 matmul measured in the same run: before and after the rows, and ONNX Runtime's again "
        "right before and after every timed run. \"% of peak probe\" divides by the best probe of the "
        "run (the machine's peak); \"% of adjacent probes\" divides each run by the probes taken next "
        "to it (median over runs), which cancels load from other processes on a shared machine. A "
        "network run of minutes (DRCN) is one run between two probes." + (f" {args.load_note}" if args.load_note else ""),
        "",
        "## Summary: bf16 on the CPU, srexport against OpenVINO (same run, interleaved)",
        "",
        f"dB: the worst image's PSNR of the difference from FP32 on {args.quality_data.name} "
        "(each image's MATLAB-bicubic LR through the route and through FP32 ONNX Runtime); the bench rows' own "
        "check on real crops is in the tables below (`dB vs FP32`). OpenVINO runs the exported ONNX graph with "
        "static shapes; srexport's bf16 route is the fused kernel in bf16 where it applies, else OpenVINO's bf16 on "
        "srexport's tuned graph, each checked >= 50 dB from FP32 before use.",
        "",
        "| network | scale | srexport bf16 route | ms/frame | dB vs FP32 | OpenVINO default ms | its dB | "
        "OpenVINO FP32 hint ms | srexport auto (FP32) ms | srexport bf16 over OpenVINO default |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
        *[bf16_line(r, r.quality) for r in reports],
        "",
        "## Summary: the auto CPU path (fused kernel where it applies, else tuned ONNX Runtime)",
        "",
        "| network | scale | auto path | output | ms/frame | fps | GFLOP/s | GEMM probe (peak) GFLOP/s | "
        "% of peak probe | % of adjacent probes | target | speed-up over the best of PyTorch eager and default ORT |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|---:|",
        *[summary_line(r) for r in reports],
        "",
        "## Every backend",
        "",
    ]
    for r in reports:
        lines += [r.table(), ""]
        tuned = r.row("ort-tuned")
        if tuned is not None and tuned.note:
            lines += [f"Tuned path: {tuned.note}.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([{**r.to_dict(), "quality": r.quality} for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
