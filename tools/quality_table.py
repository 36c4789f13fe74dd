"""Print the README's quality table from the records of the shipped checkpoints in models/, and
with --plot draw it: each checkpoint's PSNR gain over bicubic beside the published figure it is held to.

The figures come from `srexport eval CHECKPOINT --data Set5|Set14 --record`, stored in each record.
Usage: python tools/quality_table.py [--plot models/quality.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srexport.archs import SCALES, list_networks
from srexport.atomic import atomic_output
from srexport.checkpoint import ModelRecord, read_record
from srexport.published import bicubic, published

MODELS = Path(__file__).resolve().parents[1] / "models"
SETS = ("Set5", "Set14")
# ESPCN's paper measured Gaussian-blurred LR and srexport's RED is its own LR-input variant, so
# neither has a figure under this protocol; both are held to FSRCNN's.
BAR_OF = {"espcn": "fsrcnn", "red": "fsrcnn"}


def shipped(models: Path = MODELS) -> list[tuple[str, int, ModelRecord]]:
    return [(name, scale, read_record(models / f"{name}_x{scale}.safetensors"))
            for name in list_networks() for scale in SCALES
            if (models / f"{name}_x{scale}.safetensors").is_file()]


def bar(network: str, scale: int, dataset: str) -> float | None:
    """The published PSNR a checkpoint is held to (its paper's, or FSRCNN's for ESPCN and RED)."""
    paper = published(BAR_OF.get(network, network), scale, dataset)
    return paper["psnr"] if paper and paper.get("psnr") and paper["protocol"] == "bicubic" else None


def cell(measured: dict | None, paper: dict | None) -> str:
    ours = f"{measured['psnr']:.2f} / {measured['ssim']:.4f}" if measured else "-"
    theirs = f"{paper['psnr']:.2f}" if paper and paper.get("psnr") else "-"
    return f"{ours} ({theirs})"


def trained(training: dict) -> str:
    start, init = "", training.get("init_from")
    while init:  # a chain of fine-tunes: "from x4, from x3"; "(1200 epochs, 24 min)" where recorded
        earlier = init.get("training")
        start += (f" from x{init['scale']}"
                  + (f" ({earlier['epochs']} epochs, {earlier['seconds'] / 60:.0f} min)" if earlier else "")
                  + ("," if init.get("init_from") else ""))
        init = init.get("init_from")
    if training.get("scales"):
        start += f" (one model for x{', x'.join(map(str, training['scales']))})"
    return (f"{training.get('epochs', '?')} epochs{start}, {training.get('device', '?')}, "
            f"{training.get('seconds', 0) / 60:.0f} min")


def table(models: Path = MODELS) -> list[str]:
    lines = ["| network | scale | Set5 PSNR / SSIM (paper) | Set14 PSNR / SSIM (paper) | bicubic Set5 / Set14 | trained |",
             "|---|---|---|---|---|---|"]
    for name, scale, record in shipped(models):
        m = record.metrics
        lines.append(f"| {name} | x{scale} | {cell(m.get('Set5'), published(name, scale, 'Set5'))} | "
                     f"{cell(m.get('Set14'), published(name, scale, 'Set14'))} | "
                     f"{bicubic(scale, 'Set5')['psnr']:.2f} / {bicubic(scale, 'Set14')['psnr']:.2f} | "
                     f"{trained(record.training)} |")
    return lines


def plot(path: Path, models: Path = MODELS) -> Path:
    """Per set, each checkpoint's PSNR gain over bicubic (filled) and its bar's (hollow), joined by a
    line whose length is the gap; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = shipped(models)
    names = list(dict.fromkeys(name for name, _, _ in rows))
    fig = Figure(figsize=(10, 6.4), dpi=100)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, dataset in zip(axes, SETS):
        for name, scale, record in rows:
            x = names.index(name) + 0.22 * (scale - 3)
            base = bicubic(scale, dataset)["psnr"]
            ours, target = record.metrics.get(dataset, {}).get("psnr"), bar(name, scale, dataset)
            colour = f"C{scale - 2}"
            if ours is not None and target is not None:
                ax.plot([x, x], [ours - base, target - base], color=colour, linewidth=1, alpha=0.6)
            if target is not None:
                ax.plot(x, target - base, "o", markerfacecolor="none", markeredgecolor=colour, markersize=8)
            if ours is not None:
                ax.plot(x, ours - base, "o", color=colour, markersize=5)
        ax.set_ylabel(f"{dataset}: dB over bicubic")
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(names)), names)
    handles = [Line2D([], [], marker="o", linestyle="", color=f"C{s - 2}", label=f"x{s}") for s in SCALES]
    handles += [Line2D([], [], marker="o", linestyle="", color="gray", label="shipped checkpoint"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="gray",
                       markersize=8, label="paper's figure (ESPCN, RED: FSRCNN's)")]
    fig.suptitle("Shipped checkpoints by the published protocol (Y PSNR, border = scale) against their bar")
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=len(handles), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="also draw the table as a PNG here")
    args = parser.parse_args()
    print("\n".join(table()))
    if args.plot:
        print(f"wrote {plot(args.plot)}")


if __name__ == "__main__":
    main()
