#!/usr/bin/env python3
"""Build every network's engine at x2, x3 and x4 from its FP32 and FP16 graph with the default,
memory-sized profile, and print one markdown row per engine: parse result, FP16 share of the parsed
network, default maximum shape, activation memory (predicted from the probes / reported by the
builder), plan size and build time.

    python tools/engine_table.py                          # TensorRT-RTX, shipped weights, ./engines-table/
    python tools/engine_table.py --engine tensorrt -o /tmp/t --networks espcn,fsrcnn

Needs an engine flavour (TensorRT-RTX builds without a GPU). Writes the ONNX files and engines
under -o (reused on a second run), the table to stdout and, with --markdown FILE, to that file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srexport.archs import list_networks  # noqa: E402
from srexport.build import artifact_paths, build_artifacts  # noqa: E402
from srexport.checkpoint import resolve_network  # noqa: E402
from srexport.engine import engine_from_onnx, load_flavour  # noqa: E402
from srexport.engine.profiles import human_bytes  # noqa: E402
from srexport.errors import SRExportError  # noqa: E402


def rows(flavour_name: str, out: Path, networks, scales):
    flavour = load_flavour(flavour_name)
    yield (f"| network | scale | graph | parse | FP16 share (parsed) | default max (LR) | activations predicted / "
           f"reported | plan | build ({flavour.label}) |")
    yield "|---|---|---|---|---:|---|---:|---:|---:|"
    for name in networks:
        for scale in scales:
            model, record = resolve_network(name, scale, random_weights=not _has_checkpoint(name, scale))
            build_artifacts(model, record, out_dir=out, fp16=True, onnx_only=True)
            paths = artifact_paths(out, record.network, record.scale)
            for graph, onnx_path in (("FP32", paths["onnx"]), ("FP16", paths["fp16"])):
                start = time.perf_counter()
                try:
                    built = engine_from_onnx(onnx_path, Path(f"{onnx_path}.{flavour.name}.engine"), flavour=flavour,
                                             force=True)
                except SRExportError as e:
                    yield f"| {name} | x{scale} | {graph} | failed: {e} | | | | | |"
                    continue
                s = built.sidecar
                memory = s["memory"]
                yield (f"| {name} | x{scale} | {graph} | ok, {s['network_precisions']['compute_layers']} conv layers "
                       f"| {s['network_precisions']['fp16_share']:.0%} | {s['profile']['max'][2]}x{s['profile']['max'][3]} "
                       f"| {human_bytes(memory['predicted_bytes'])} / {human_bytes(memory['builder_reported_bytes'])} "
                       f"| {s['engine_bytes'] / 1e6:.2f} MB | {s['plan_seconds']:.2f} s plan, "
                       f"{time.perf_counter() - start:.1f} s in all |")


def _has_checkpoint(name: str, scale: int) -> bool:
    from srexport.checkpoint import shipped_checkpoint

    return shipped_checkpoint(name, scale) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="tensorrt-rtx", choices=["tensorrt", "tensorrt-rtx"])
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("engines-table"))
    parser.add_argument("--networks", default=",".join(list_networks()))
    parser.add_argument("--scales", default="2,3,4")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    lines = []
    for line in rows(args.engine, args.output_dir, args.networks.split(","), [int(s) for s in args.scales.split(",")]):
        print(line, flush=True)
        lines.append(line)
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
