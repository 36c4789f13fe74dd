"""Print the README's quality table from the records of the shipped checkpoints in models/.

The figures come from `srexport eval CHECKPOINT --data Set5|Set14 --record`, stored in each record.
Usage: python tools/quality_table.py
"""

from pathlib import Path

from srexport.archs import SCALES, list_networks
from srexport.checkpoint import read_record
from srexport.published import bicubic, published

MODELS = Path(__file__).resolve().parents[1] / "models"


def cell(measured: dict | None, paper: dict | None) -> str:
    ours = f"{measured['psnr']:.2f} / {measured['ssim']:.4f}" if measured else "-"
    theirs = f"{paper['psnr']:.2f}" if paper and paper.get("psnr") else "-"
    return f"{ours} ({theirs})"


def main() -> None:
    print("| network | scale | Set5 PSNR / SSIM (paper) | Set14 PSNR / SSIM (paper) | bicubic Set5 / Set14 | trained |")
    print("|---|---|---|---|---|---|")
    for name in list_networks():
        for scale in SCALES:
            path = MODELS / f"{name}_x{scale}.safetensors"
            if not path.is_file():
                continue
            record = read_record(path)
            m = record.metrics
            training = record.training
            start, init = "", training.get("init_from")
            while init:  # a chain of fine-tunes: "from x4, from x3"; "(1200 epochs, 24 min)" where recorded
                earlier = init.get("training")
                start += (f" from x{init['scale']}"
                          + (f" ({earlier['epochs']} epochs, {earlier['seconds'] / 60:.0f} min)" if earlier else "")
                          + ("," if init.get("init_from") else ""))
                init = init.get("init_from")
            if training.get("scales"):
                start += f" (one model for x{', x'.join(map(str, training['scales']))})"
            trained = (f"{training.get('epochs', '?')} epochs{start}, {training.get('device', '?')}, "
                       f"{training.get('seconds', 0) / 60:.0f} min")
            print(f"| {name} | x{scale} | {cell(m.get('Set5'), published(name, scale, 'Set5'))} | "
                  f"{cell(m.get('Set14'), published(name, scale, 'Set14'))} | "
                  f"{bicubic(scale, 'Set5')['psnr']:.2f} / {bicubic(scale, 'Set14')['psnr']:.2f} | {trained} |")


if __name__ == "__main__":
    main()
