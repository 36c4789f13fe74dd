"""One training step and what it is made of, per the recipe (recipes.py): the weights' init, the
optimizer with its per-layer learning-rate multipliers, the schedule, the loss (masked MSE, DRCN's
recursive supervision), gradient clipping (VDSR's adjustable clipping), and the validation PSNR.
The loop that runs the steps epoch after epoch is train.py's."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import ModelRecord, weights_sha256
from .data import imresize, round_uint8
from .errors import SRExportError
from .metrics import psnr
from .recipes import Recipe


def init_weights(model: nn.Module, how: str) -> None:
    """Re-initialise `model` per the recipe's `init` ("default" keeps PyTorch's)."""
    if how == "default":
        return
    if how not in ("he", "fsrcnn", "drcn"):
        raise SRExportError(f"unknown init {how!r}")
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if how == "fsrcnn" and name == "deconv":
                nn.init.normal_(m.weight, 0.0, 0.001)
            elif how == "fsrcnn":
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")  # PReLU init 0.25
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if how == "drcn" and hasattr(model, "inference"):
        w = model.inference.weight  # (C, C, 3, 3): zero except self-connections -> identity map
        with torch.no_grad():
            w.zero_()
            c, k = w.shape[0], w.shape[-1]
            w[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1.0
            # Every prediction is reconstruction(h) + the bicubic image: a zero last layer makes the
            # network start at bicubic instead of ~8 dB (He init's residual swamps the image).
            last = model.reconstruction[-1]
            last.weight.zero_()
            last.bias.zero_()


def warm_start(model: nn.Module, source: nn.Module, record: ModelRecord, path: str | os.PathLike) -> dict:
    """Copy `source`'s weights (a checkpoint of the same network, for fine-tuning or for another
    scale, as FSRCNN's x2/x4 from x3) into `model`. Tensors whose shape depends on the scale (ESPCN's
    last conv, scale^2 channels) keep the recipe's init and are listed in the returned record, with
    the source's own start (its `init_from`) and how long it was trained, so a chain of fine-tunes
    stays traceable after a checkpoint in it has been replaced by its successor."""
    if record.hparams != dict(model.hparams):
        raise SRExportError(f"{path}: holds {record.network} {record.hparams}, "
                            f"this run trains {dict(model.hparams)}")
    target = model.state_dict()
    loaded = {k: v for k, v in source.state_dict().items() if v.shape == target[k].shape}
    model.load_state_dict(loaded, strict=False)
    trained = {k: record.training[k] for k in ("epochs", "seconds", "device") if k in record.training}
    return {"path": str(Path(path).resolve()), "network": record.network, "scale": record.scale,
            "weights_sha256": weights_sha256(source), "tensors_loaded": len(loaded),
            "tensors_reinitialised": sorted(set(target) - set(loaded)),
            **({"training": trained} if trained else {}),
            **({"init_from": record.training["init_from"]} if record.training.get("init_from") else {})}


def param_groups(model: nn.Module, recipe: Recipe, base_lr: float) -> list[dict]:
    """Optimizer groups: parameters under a `lr_mult` prefix get base_lr * multiplier."""
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        mult = 1.0
        for prefix, m in recipe.lr_mult.items():
            if name == prefix or name.startswith(prefix + "."):
                mult = float(m)
        groups.setdefault(mult, []).append(p)
    return [{"params": ps, "lr": base_lr * mult, "lr_mult": mult} for mult, ps in groups.items()]


def make_optimizer(model: nn.Module, recipe: Recipe, base_lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe, base_lr)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=base_lr, weight_decay=recipe.weight_decay)
    raise SRExportError(f"unknown optimizer {recipe.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe):
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, recipe.step_epochs), gamma=recipe.gamma)
    if recipe.schedule == "plateau":
        min_lrs = [recipe.min_lr * g.get("lr_mult", 1.0) for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=recipe.gamma, patience=recipe.patience, min_lr=min_lrs)
    if recipe.schedule == "none":
        return None
    raise SRExportError(f"unknown schedule {recipe.schedule!r}")


def masked_mse(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the pixels where `mask` is 1 (all pixels without a mask)."""
    if mask is None:
        return nn.functional.mse_loss(out, y)
    return ((out - y).square() * mask).sum() / mask.sum()


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
                  alpha: float = 0.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of the network's output (over `mask`, see patches.PatchSet.loss_mask); DRCN with
    recursive supervision: alpha * mean_d MSE(prediction_d) + (1 - alpha) * MSE(ensemble)."""
    mse = functools.partial(masked_mse, mask=mask)
    if recipe.recursive_supervision and hasattr(model, "forward_with_intermediates"):
        out, preds = model.forward_with_intermediates(x)
        ensemble = mse(out, y)
        if alpha <= 0:
            return ensemble
        intermediate = torch.stack([mse(p, y) for p in preds]).mean()
        return alpha * intermediate + (1.0 - alpha) * ensemble
    return mse(model(x), y)


def clip_gradients(optimizer: torch.optim.Optimizer, recipe: Recipe) -> None:
    if recipe.clip_theta is not None:
        for g in optimizer.param_groups:  # VDSR: bound theta / lr at each group's current lr
            if recipe.clip_mode == "value":
                nn.utils.clip_grad_value_(g["params"], recipe.clip_theta / g["lr"])
            elif recipe.clip_mode == "norm":
                nn.utils.clip_grad_norm_(g["params"], recipe.clip_theta / g["lr"])
            else:
                raise SRExportError(f"unknown clip mode {recipe.clip_mode!r}")
    if recipe.clip_norm is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, recipe.clip_norm)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe, batch: tuple, dev: torch.device,
               autocast, alpha: float, share: float = 1.0, world: int = 1) -> torch.Tensor:
    """One optimizer step on a uint8 (LR, HR, loss mask) batch from PatchSet.batches; returns the
    loss, detached and left on the device (reading it would wait for the GPU).

    With `world` processes training together (DistributedDataParallel averages their gradients),
    `batch` is this process's part of the global batch and `share` the part of that batch's loss it
    carries (PatchSet.shards): the loss is weighted so that the averaged gradient is the whole
    batch's, and the returned loss is this process's part of it (the parts add up to the batch's)."""
    lr_b, hr_b, mask_b = batch
    x = torch.from_numpy(lr_b).to(dev, non_blocking=True).float().div_(255.0)
    y = torch.from_numpy(hr_b).to(dev, non_blocking=True).float().div_(255.0)
    mask = None if mask_b is None else torch.from_numpy(mask_b).to(dev, non_blocking=True).float()
    with autocast():
        loss = training_loss(model, x, y, recipe, alpha, mask)
    optimizer.zero_grad(set_to_none=True)
    summed = recipe.loss_reduction == "sum"  # the papers' scale: summed over the pixels in the loss
    pixels = (y.numel() if mask is None else mask.sum()) if summed else None
    if world == 1 and share == 1.0:  # one process: exactly the loss as ever
        (loss * pixels if summed else loss).backward()
    else:  # `world` times this process's part, since DDP divides the summed gradients by `world`
        weight = 0.0 if share == 0 else world * (pixels if summed else share)
        (loss * weight).backward()
    clip_gradients(optimizer, recipe)
    optimizer.step()
    return loss.detach() if share == 1.0 else (loss * share).detach()


def validate(model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, device) -> float:
    """Mean Y-PSNR (border = scale) of the model on protocol pairs, output rounded to 8 bits."""
    return float(np.mean(validation_psnrs(model, pairs, scale, device)))


@torch.no_grad()
def validation_psnrs(model: nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, device) -> list[float]:
    """Each pair's Y-PSNR, as `validate` averages them (processes training together share them out)."""
    was_training = model.training
    model.eval()
    values = []
    try:
        for hr_y, lr_y in pairs:
            x = torch.from_numpy((lr_y / 255.0).astype(np.float32))[None, None].to(device)
            out = model(x)[0, 0].float().cpu().numpy().astype(np.float64)
            values.append(psnr(round_uint8(out * 255.0), hr_y, border=scale))
    finally:
        model.train(was_training)
    return values


def bicubic_psnr(pairs: list[tuple[np.ndarray, np.ndarray]], scale: int) -> float:
    return float(np.mean([psnr(round_uint8(imresize(lr, scale)), hr, border=scale) for hr, lr in pairs]))


def share_parameters(model: nn.Module, source: nn.Module) -> None:
    """Make `model` use `source`'s parameter tensors, so one optimizer trains both (a network built
    at several scales whose weights do not depend on the scale)."""
    for name, _ in list(model.named_parameters()):
        module_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(module_name), attr, source.get_parameter(name))
