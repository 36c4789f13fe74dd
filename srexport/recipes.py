"""Per-network training recipes (REFERENCE.md section 4): optimizer, schedule, patches, init.

Loss is the per-pixel mean squared error on images in [0, 1] (PyTorch's mean reduction) unless a
recipe sets loss_reduction="sum". The papers' Caffe/MatConvNet losses summed over pixels, so their
SGD learning rates are not directly transferable; each recipe's `why` says how its numbers were
chosen, with the short CPU comparisons measured for this module (comment above _SRCNN_WHY).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .archs import get_spec
from .errors import SRExportError


@dataclass(frozen=True)
class Recipe:
    """How one network is trained. Patch size and stride are in HR pixels (`hr_patch`, `stride`)
    or, when `lr_patch` is set, in LR pixels times the scale (ESPCN's 17r x 17r sub-images)."""

    network: str
    optimizer: str  # "sgd" (with momentum) or "adam"
    lr: float
    epochs: int
    batch_size: int
    hr_patch: int = 0
    stride: int = 0
    lr_patch: int = 0
    lr_stride: int = 0
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0  # L2 added to the gradient (the papers' weight decay)
    lr_mult: dict = field(default_factory=dict)  # module-name prefix -> learning-rate multiplier
    schedule: str = "none"  # "step": x gamma every step_epochs; "plateau": x gamma after `patience` epochs without a better val PSNR
    step_epochs: int = 0
    gamma: float = 0.1
    patience: int = 5
    min_lr: float = 0.0
    clip_theta: float | None = None  # adjustable clipping at theta / current lr (VDSR), see clip_mode
    clip_mode: str = "norm"  # "value": each gradient value in [-theta/lr, theta/lr]; "norm": global L2 norm <= theta/lr
    clip_norm: float | None = None  # plain global-norm clipping at a fixed bound
    loss_reduction: str = "mean"  # "mean": per-pixel mean MSE; "sum": summed over pixels and batch (the papers' Caffe/MatConvNet scale)
    recursive_supervision: bool = False  # DRCN: loss = a*mean(intermediate losses) + (1-a)*ensemble loss
    alpha_start: float = 1.0
    alpha_zero_epoch: int = 0  # a decays linearly from alpha_start to 0 at this epoch
    resize_factors: tuple = (1.0,)  # extra bicubic-downscaled copies of each training image
    context: int = 0  # LR pixels of real image around each patch: seen by the network, left out of the loss
    init: str = "default"  # "default" (PyTorch), "he", "fsrcnn", "drcn"
    why: str = ""

    def patch_for(self, scale: int) -> tuple[int, int]:
        """(HR patch, HR stride) at `scale`; the LR patch is HR patch // scale."""
        if self.lr_patch:
            return self.lr_patch * scale, self.lr_stride * scale
        return self.hr_patch, self.stride

    def alpha(self, epoch: int) -> float:
        """DRCN's supervision weight for 0-based `epoch`."""
        if not self.recursive_supervision:
            return 0.0
        if self.alpha_zero_epoch <= 0:
            return self.alpha_start
        return self.alpha_start * max(0.0, 1.0 - epoch / self.alpha_zero_epoch)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["resize_factors"] = list(self.resize_factors)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["resize_factors"] = tuple(d.get("resize_factors", (1.0,)))
        return cls(**d)

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)


# Measured here (CPU, T91 at x3, 3 held-out T91 images, 300-900 steps, val PSNR vs bicubic 30.24 dB):
#   SRCNN 9-1-5, batch 64, 900 steps: Adam 1e-3 30.70 | SGD m0.9 lr 0.3 30.43-30.54 | 0.1 30.26 | 0.01 27.1 (300 steps)
#   VDSR, batch 16, 300 steps: Adam 1e-4 30.90 | SGD 0.1 + value clip 0.4/lr: NaN after 2 steps |
#         SGD 0.1, mean loss, norm clip 0.4/lr: stuck at bicubic | SGD 0.1, summed loss, norm clip
#         0.04/lr (the usual PyTorch port): 28.4 -> 29.7 -> 24.8, unstable
#   RED, batch 64, 900 steps: Adam 1e-3 30.98 | 3e-4 30.49 | 1e-4 29.14
#   DRCN (32 ch, 4 recursions), batch 16, 400 steps: Adam 1e-4 30.69 | 1e-3 31.15
#   ESPCN (Adam 1e-3, batch 16, 2400 steps) 30.76; FSRCNN (Adam 1e-3, batch 128, 1200 steps) 30.1-30.4.
_SRCNN_WHY = (
    "Paper: SGD with momentum 0.9, lr 1e-4 (last layer 1e-5) on a Caffe loss summed over the output "
    "pixels, N(0, 0.001) init, 33x33 sub-images stride 14, batch 128, ~1e8 backprops. Kept: patches, "
    "stride, last layer x0.1. Adam 1e-3 with a x0.1 step at epoch 80 of 120 instead: measured here over "
    "900 steps Adam 1e-3 reached 30.70 dB against 30.26-30.54 for SGD momentum 0.9 at lr 0.1-0.3 and "
    "27.1 at 0.01 (bicubic 30.24), so REFERENCE's note that staged SGD beat Adam was not reproduced in "
    "short runs. Batch 16 instead of 128: eight times the updates per epoch, at no more CPU time per "
    "epoch; 9-1-5 x3 on 5 held-out T91 images reached val 29.76 dB (Set5 32.27) in 60 epochs with the "
    "step at 40 (9 minutes on 2 CPU cores), where batch 128 had reached 29.56 (Set5 32.03) in 100 "
    "epochs. PyTorch's default init instead of N(0, 0.001), which makes the start very slow."
)
_FSRCNN_WHY = (
    "Paper: SGD lr 1e-3, deconv 1e-4, He (PReLU) init with deconv N(0, 0.001), scale augmentation "
    "0.9-0.6 and rotations. Plain SGD needs millions of iterations; Adam lr 1e-3 with the deconv at x0.1 "
    "(the paper's ratio) is the widely reproduced substitute (REFERENCE sec. 4). Kept: init, deconv "
    "multiplier, scale augmentation (1.0, 0.9, 0.8, 0.7, 0.6) plus the 8 dihedral transforms. 33-pixel "
    "HR patches (LR 11 at x3) instead of the paper's 7-pixel LR sub-images, because the network here "
    "pads to same size and tiny patches would be mostly border."
)
_SCALE_AUGMENTATION = (1.0, 0.9, 0.8, 0.7, 0.6)  # FSRCNN's bicubic-downscaled copies of each image
_SRCNN_RECIPE = Recipe(
    network="srcnn", optimizer="adam", lr=1e-3, lr_mult={"reconstruction": 0.1},
    schedule="step", step_epochs=80, gamma=0.1, epochs=120, batch_size=16, hr_patch=33, stride=14,
    why=_SRCNN_WHY,
)
_FSRCNN_RECIPE = Recipe(
    network="fsrcnn", optimizer="adam", lr=1e-3, lr_mult={"deconv": 0.1}, schedule="step",
    step_epochs=100, gamma=0.1, epochs=120, batch_size=16, hr_patch=33, stride=14,
    resize_factors=_SCALE_AUGMENTATION, init="fsrcnn", why=_FSRCNN_WHY + (
        " Batch 16 (the paper's is 128), 120 epochs with one x0.1 step at 100: on the 5 held-out T91 "
        "images x3 val reached 30.45 dB (Set5 33.08) at epoch 109 (48 minutes on one CPU core); the "
        "val PSNR was still rising at lr 1e-3 when 60 epochs with the step at 40 stopped at 30.33 "
        "(Set5 32.96), and batch 128 had reached 30.14 in 200 epochs with the step at 140."),
)
_RECIPES = {
    "srcnn": _SRCNN_RECIPE,
    "srcnn_955": _SRCNN_RECIPE.replace(
        network="srcnn_955", step_epochs=50, epochs=65, resize_factors=_SCALE_AUGMENTATION,
        why=_SRCNN_WHY + (
            " 9-5-5 differs: FSRCNN's scale augmentation (1.0, 0.9, 0.8, 0.7, 0.6), 3.3 times the patches "
            "per epoch, and 65 epochs with the step at 50 instead of 120 with the step at 80. x4 held-out val "
            "27.92 -> 27.97 dB (Set5 30.31 -> 30.33; 200 epochs of the 9-1-5 schedule had added 0.01), the "
            "paper's 9-5-5 table being ImageNet-trained. Leaving the outer 4 HR pixels of each patch out of "
            "the loss was worse (val 27.73 against 27.85 at epoch 25), and leaving 8 out left zero-padded image "
            "borders untrained (val 26.9 after 6 epochs). A patch context of 4 LR pixels (--context 4), which "
            "instead keeps the whole patch in the loss and feeds the network the real image around it, was "
            "measured only as fine-tunes of the x4 checkpoint (18000 steps, lr 3e-4 then 3e-5: val 28.01 -> "
            "28.02, Set5 / Set14 30.34 / 27.38 -> 30.40 / 27.42) and, the same way, of the x3 one (val 30.20 "
            "-> 30.22, 32.67 / 29.19 -> 32.70 / 29.23; 41 minutes on two threads); it stays off here because "
            "it costs 2.3-4 times the time per epoch and was not measured from scratch."),
    ),
    "fsrcnn": _FSRCNN_RECIPE,
    "fsrcnn_s": _FSRCNN_RECIPE.replace(network="fsrcnn_s", why=_FSRCNN_WHY + (
        " FSRCNN's schedule: batch 16, 120 epochs, one x0.1 step at 100 (x3 held-out val 29.78 dB, "
        "Set5 32.27, against 29.62 and 32.12 with 60 epochs and the step at 40).")),
    "espcn": Recipe(
        network="espcn", optimizer="adam", lr=1e-3, lr_mult={"body.4": 0.1}, schedule="step",
        step_epochs=800, gamma=0.1, epochs=1200, batch_size=16, lr_patch=17, lr_stride=14, context=4,
        why=(
            "Paper: 17r x 17r HR sub-images (stride 14r: (17 - sum(k mod 2)) r), MSE, lr 0.01 falling to "
            "1e-4 when improvement stalls, last layer x0.1. Kept: sub-image size and stride, last layer "
            "x0.1. Adam at 1e-3 instead of the paper's 0.01 because the paper's optimizer and loss "
            "scaling are not given and Adam 1e-3 is the widely reproduced setting. One x0.1 step at "
            "epoch 800 of 1200 instead of decay on a plateau: with 5 held-out validation images the "
            "plateau rule (x0.1 after 10 epochs without a better val PSNR) fired by epoch 70 and held "
            "1e-5 from epoch 90 (x3: val 29.11 dB after 200 epochs, Set5 31.44); the step schedule "
            "reached val 30.01 (Set5 32.45) in 10 minutes on 2 CPU cores. FSRCNN's scale augmentation "
            "(1.0-0.6) for the same number of steps (360 epochs, step at 240) gave the same val: 30.00 at x3, "
            "27.90 at x4 (27.89 without). LR is bicubic (the evaluation protocol), not the paper's Gaussian "
            "blur. Context 4: each 17-pixel LR patch is cut with 4 more LR pixels of the real image on every "
            "side, which the loss leaves out except at image edges (the network's receptive radius is 4 LR "
            "pixels), so every trained pixel sees what it sees inside a whole image rather than a zero-padded "
            "patch border. Measured over the recipe's 1200 epochs: x4 held-out val 27.91 against 27.89 "
            "(Set5 / Set14 30.24 / 27.27 against 30.18 / 27.22; 40 minutes on one CPU thread), x3 30.03 "
            "against 30.01 (32.58 / 29.12 against 32.45 / 29.06; 80 minutes on one to two threads). x2 was "
            "fine-tuned from the earlier x2 checkpoint with context 4 instead (150 epochs, lr 1e-4, x0.1 at "
            "100; 22 minutes on one thread): val 33.44 against 33.43, Set5 / Set14 36.62 / 32.34 against "
            "36.58 / 32.30."
        ),
    ),
    "vdsr": Recipe(
        network="vdsr", optimizer="adam", lr=1e-3, schedule="step",
        step_epochs=30, gamma=0.1, epochs=60, batch_size=64, hr_patch=41, stride=14, init="he",
        why=(
            "Paper: SGD momentum 0.9, weight decay 1e-4, lr 0.1 / 10 every 20 epochs, 80 epochs, batch 64, "
            "41x41 patches with flips/rotations, He init, residual learning, adjustable gradient clipping to "
            "[-theta/lr, theta/lr]. Kept: batch, patches (stride 14, since only the 91 images are assumed, "
            "not the paper's 291), He init, residual learning (the network adds the bicubic image, so MSE on "
            "the output is MSE on the residual). Adam instead of SGD 0.1, measured here over 300 steps: "
            "Adam 1e-4 30.90 dB (bicubic 30.24); SGD 0.1 with per-value clipping at 0.4/lr diverged to NaN in 2 "
            "steps (the He-initialised residual starts large and a per-value bound allows an update of norm "
            "theta*sqrt(664k)); with global-norm clipping at 0.4/lr it sat at bicubic on the mean loss and "
            "oscillated (24.8-29.7 dB) on the summed loss at 0.04/lr. The adjustable clipping stays available "
            "(clip_theta, clip_mode) for SGD recipes. Adam at 1e-3, not the 1e-4 the shipped VDSR checkpoints "
            "were trained with (their records say so): a 20-layer, 32-channel VDSR trained over x2+3+4 on the "
            "CPU for 3000 steps of batch 16 (x0.1 at half) reached a mean held-out val of 29.23 dB at 1e-4, "
            "29.57 at 3e-4, 29.71 at 6e-4, 29.83 at 1e-3 and 29.76 at 2e-3, and the full 64-channel network "
            "trained smoothly at 1e-3 (val 28.78 -> 29.27 over its first 600 steps). One x0.1 step half-way "
            "through 60 epochs instead of the paper's four levels over 80: SGD needs its 0.1 start brought "
            "down 1000-fold, while Adam starts near the small end, and its third and fourth levels would "
            "spend half of a time-limited run barely moving. No weight decay: with Adam the paper's L2 term (1e-4) is "
            "normalised like any gradient, so on weights whose data gradient is small it becomes a full-size "
            "step towards zero; measured on an H200 (x2, 447 steps an epoch), val PSNR peaked at 32.07 dB at "
            "epoch 5 and then fell, with the training loss rising, back to the bicubic 30.84 dB by epoch 46. "
            "No patch context (patches.py), although a 41-pixel patch is only 10 LR pixels at x4: context 4 "
            "(73-pixel HR windows, 3.2x the pixels a step) lost at equal time on a 20-layer, 32-channel VDSR at "
            "x4, batch 16, one CPU thread: from scratch, held-out val 27.82 dB after 1500 steps (29 minutes) "
            "against 28.11 after 6000 steps without (36 minutes); as a fine-tune of that 28.11 checkpoint at "
            "lr 1e-4, 28.14 after 900 steps against 28.16 after 3000 (21 minutes each)."
        ),
    ),
    "drcn": Recipe(
        network="drcn", optimizer="adam", lr=1e-4, schedule="plateau", gamma=0.1,
        patience=5, min_lr=1e-6, epochs=60, batch_size=64, hr_patch=41, stride=21, clip_norm=1.0,
        recursive_supervision=True, alpha_start=1.0, alpha_zero_epoch=25, init="drcn",
        why=(
            "Paper: 41x41 patches stride 21, batch 64, MSE with recursive supervision, weight decay 1e-4, "
            "lr 0.01 divided by 10 when validation stalls for 5 epochs, stopping at 1e-6. Kept: patches, "
            "batch, recursive supervision (alpha = 1 decaying linearly to 0 by epoch 25, then the ensemble "
            "alone), plateau decay (patience 5, floor 1e-6; REFERENCE notes plateau decay suited DRCN), "
            "He init with the recursive conv zero except identity self-connections and the last "
            "reconstruction conv zero, so that every prediction starts as the bicubic image (with He init "
            "there it started near 8 dB). Adam 1e-4 "
            "instead of SGD 0.01: the 16-fold shared recursion makes plain SGD at 0.01 prone to exploding "
            "gradients (the paper trained 6 days); global-norm clipping at 1.0 as a guard. A 32-channel "
            "4-recursion DRCN trained faster at 1e-3 (31.15 vs 30.69 dB over 400 steps) but the full "
            "256-channel, 16-recursion network diverged at 1e-3 here (30 steps of batch 8 on the CPU: loss "
            "0.92, then stuck at the bicubic image) and improved at 1e-4 (x4 val 26.64 -> 26.72 dB), so "
            "1e-4 stays. No weight decay, for the reason given in VDSR's recipe (Adam turns the L2 term into "
            "full-size steps towards zero)."
        ),
    ),
    "red": Recipe(
        network="red", optimizer="adam", lr=1e-3, schedule="step", step_epochs=140, gamma=0.1, epochs=200,
        batch_size=64, hr_patch=48, stride=24,
        why=(
            "Paper (RED30): Adam lr 1e-4, 50x50 patches. srexport's RED is a small LR-input variant (32 "
            "channels, 5+5 layers, ConvTranspose upsampler), for which Adam 1e-3 trained much faster here "
            "(900 steps: 30.98 dB vs 30.49 at 3e-4 and 29.14 at 1e-4; bicubic 30.24); one x0.1 step at "
            "epoch 140 of 200. Longer was better on the held-out T91 images (x4: val 27.31 dB after 10 "
            "epochs, 28.07 after 50 with the step at 40, 28.34 after 200 with the step at 140; 7 minutes "
            "on 2 CPU cores). 48-pixel HR patches (divisible by 2, 3 and 4), stride 24."
        ),
    ),
}


def recipe_for(network: str) -> Recipe:
    """The training recipe for `network` (unknown names raise SRExportError)."""
    get_spec(network)
    try:
        return _RECIPES[network]
    except KeyError:
        raise SRExportError(f"no training recipe for network {network!r}") from None
