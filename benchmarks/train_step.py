"""Training speed of every network, FP32 beside bf16 autocast, on this machine; writes a Markdown table.

    python benchmarks/train_step.py                                  # CPU, all networks, x3
    python benchmarks/train_step.py --device cuda --out benchmarks/TRAINING_gpu.md
    python benchmarks/train_step.py --networks vdsr drcn --batch-size 16

One step is `srexport.steps.train_step` (the training loop's own step: uint8 batch to device, loss,
backward, clipping, optimizer) on the recipe's batch size and patch (its context included), cut
from T91 when ../shared/datasets is there, from generated texture otherwise; the batches come from
the same PatchSet the loop uses, so data preparation is in the time. FP32 and bf16 are timed in
alternating rounds (the median of the rounds' means is quoted), so load from elsewhere on a shared
machine hits both alike. `--time-budget` (budget.py) measures the same step on the device it runs on.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from srexport.archs import build, list_networks  # noqa: E402
from srexport.bench import machine_info  # noqa: E402
from srexport.budget import seconds_per_call, timing_for  # noqa: E402
from srexport.data import list_images  # noqa: E402
from srexport.patches import PatchSet  # noqa: E402
from srexport.recipes import recipe_for  # noqa: E402
from srexport.runsettings import PRECISIONS  # noqa: E402
from srexport.steps import init_weights, make_optimizer, train_step  # noqa: E402

T91 = HERE.parent.parent / "shared" / "datasets" / "T91"


def training_paths(scratch: Path) -> tuple[list[Path], str]:
    """T91's images, or generated texture written to `scratch` when ../shared is not there."""
    if T91.is_dir():
        return list_images(T91), "T91"
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :160] / 160
    for i in range(8):
        grey = 128 + 60 * np.sin(2 * np.pi * (3 + i) * (xx + yy * rng.random())) + rng.normal(0, 12, xx.shape)
        Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(scratch / f"texture{i}.png")
    return list_images(scratch), "generated texture (../shared/datasets/T91 not found)"


def time_network(name: str, scale: int, paths: list[Path], device: torch.device, batch_size: int | None,
                 rounds: int, seconds: float) -> dict:
    recipe = recipe_for(name)
    if batch_size:
        recipe = recipe.replace(batch_size=batch_size)
    patches = PatchSet.from_paths(paths, scale, *recipe.patch_for(scale), augment=True, context=recipe.context)
    batches = patches.batches(recipe.batch_size, np.random.default_rng(0), steps=2**62)

    def stepper(precision: str):
        """A fresh model and optimizer at `precision`, and a call that trains them one step."""
        torch.manual_seed(0)
        model = build(name, scale)
        init_weights(model, recipe.init)
        model.to(device).train()
        optimizer = make_optimizer(model, recipe, recipe.lr)
        autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        return lambda: train_step(model, optimizer, recipe, next(batches), device, autocast, recipe.alpha(0))

    steps = {precision: stepper(precision) for precision in PRECISIONS}
    means = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for precision in PRECISIONS:
            mean, _ = seconds_per_call(steps[precision], warmup=2 if r == 0 else 0, min_calls=1,
                                       min_seconds=seconds, max_seconds=seconds, **timing_for(device))
            means[precision].append(mean)
    ms = {p: 1000 * statistics.median(v) for p, v in means.items()}
    return {"network": name, "batch": recipe.batch_size, "hr_window": patches.hr.shape[-1],
            **{f"{p}_ms": ms[p] for p in PRECISIONS}, "speedup": ms["fp32"] / ms["bf16"],
            **{f"{p}_patches_per_s": recipe.batch_size * 1000 / ms[p] for p in PRECISIONS}}


def bf16_instructions() -> str:
    """The CPU's bfloat16 instruction sets (what decides bf16's speed on a CPU), from /proc/cpuinfo."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    found = sorted({f for f in flags.split(":", 1)[1].split() if "bf16" in f})
    return ", ".join(found) if found else "none"


def markdown(rows: list[dict], args, info: dict, data: str) -> str:
    lines = [f"# Training step speed, FP32 and bf16 autocast ({_dt.date.today().isoformat()})", "",
             f"`python benchmarks/train_step.py {' '.join(sys.argv[1:])}`".rstrip(), "",
             f"Device {args.device}, scale x{args.scale}, {torch.get_num_threads()} CPU threads; data: {data}. "
             f"Median of {args.rounds} alternating rounds of at least {args.seconds:g} s each per precision "
             "(a step slower than that is one call a round).", "",
             "| network | batch | HR window | FP32 ms/step | bf16 ms/step | bf16 speed-up | FP32 patches/s "
             "| bf16 patches/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['batch']} | {r['hr_window']} | {r['fp32_ms']:.1f} | {r['bf16_ms']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['fp32_patches_per_s']:.0f} | {r['bf16_patches_per_s']:.0f} |")
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())
              + f"; CPU bfloat16 instructions: {bf16_instructions()}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", default=list_networks(), choices=list_networks())
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, help="instead of each recipe's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="least time per round and precision")
    ap.add_argument("--out", type=Path, default=HERE / "TRAINING.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        paths, data = training_paths(Path(scratch))
        rows = []
        for name in args.networks:
            rows.append(time_network(name, args.scale, paths, device, args.batch_size, args.rounds, args.seconds))
            r = rows[-1]
            print(f"{name:10s} batch {r['batch']:3d}  fp32 {r['fp32_ms']:9.1f} ms  bf16 {r['bf16_ms']:9.1f} ms  "
                  f"x{r['speedup']:.2f}", flush=True)
    text = markdown(rows, args, machine_info(), data)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
