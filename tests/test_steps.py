"""srexport.steps: the parts of a training step (optimizer groups, clipping, losses, init)."""

from __future__ import annotations

import pytest
import torch

from srexport.archs import build
from srexport.recipes import recipe_for
from srexport.steps import clip_gradients, init_weights, make_optimizer, masked_mse, training_loss


@pytest.mark.parametrize("net, prefix", [("srcnn", "reconstruction"), ("fsrcnn", "deconv"), ("espcn", "body.4")])
def test_last_layer_learning_rate_multipliers(net, prefix):
    model = build(net, 3)
    opt = make_optimizer(model, recipe_for(net), 1e-3)
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    last = {id(p) for n, p in model.named_parameters() if n.startswith(prefix + ".")}
    assert len(by_lr) == 2 and by_lr[1e-3 * 0.1] == last and len(by_lr[1e-3]) > 0


def test_adjustable_clipping_bounds_at_theta_over_the_current_lr():
    model = build("vdsr", 2, depth=3, channels=4)
    value = recipe_for("vdsr").replace(optimizer="sgd", clip_theta=0.4, clip_mode="value")
    opt = make_optimizer(model, value, 0.1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    clip_gradients(opt, value)
    for p in model.parameters():
        assert torch.allclose(p.grad, torch.full_like(p, 0.4 / 0.1))  # every value within theta/lr
    for g in opt.param_groups:
        g["lr"] = 0.001  # a later stage: the bound theta/lr widens
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    clip_gradients(opt, value)
    assert all(torch.all(p.grad == 100.0) for p in model.parameters())

    norm = value.replace(clip_mode="norm")
    opt = make_optimizer(model, norm, 0.1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    clip_gradients(opt, norm)
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert total.item() == pytest.approx(0.4 / 0.1, rel=1e-4)  # the whole update lr*g has norm theta


def test_drcn_recursive_supervision_uses_the_intermediates():
    torch.manual_seed(0)
    model = build("drcn", 2, channels=4, recursions=3)  # PyTorch init: the predictions differ
    recipe = recipe_for("drcn")
    x, y = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 12, 12)
    out, preds = model.forward_with_intermediates(x)
    mse = torch.nn.functional.mse_loss
    inter = sum(mse(p, y) for p in preds) / len(preds)
    assert training_loss(model, x, y, recipe, 1.0).item() == pytest.approx(inter.item(), rel=1e-6)
    assert training_loss(model, x, y, recipe, 0.0).item() == pytest.approx(mse(out, y).item(), rel=1e-6)
    mixed = 0.3 * inter + 0.7 * mse(out, y)
    assert training_loss(model, x, y, recipe, 0.3).item() == pytest.approx(mixed.item(), rel=1e-6)
    # with alpha = 1 only the intermediate predictions are supervised: no gradient reaches the
    # ensemble weights; with alpha < 1 it does
    model.zero_grad()
    training_loss(model, x, y, recipe, 1.0).backward()
    assert model.ensemble_weights.grad is None or torch.all(model.ensemble_weights.grad.abs() < 1e-12)
    model.zero_grad()
    training_loss(model, x, y, recipe, 0.5).backward()
    assert model.ensemble_weights.grad.abs().sum() > 0
    assert recipe.alpha(0) == 1.0 and 0 < recipe.alpha(10) < 1 and recipe.alpha(recipe.alpha_zero_epoch) == 0.0


def test_the_loss_mask_keeps_only_its_pixels_in_the_loss_and_the_gradient():
    torch.manual_seed(1)
    out, y = torch.rand(3, 1, 10, 10, requires_grad=True), torch.rand(3, 1, 10, 10)
    mask = torch.zeros(3, 1, 10, 10)
    mask[0, :, 2:8, 2:8] = 1
    mask[1, :, :8, 2:] = 1  # a window at the image's top and right edges
    mask[2] = 1
    sel = mask.bool()
    assert masked_mse(out, y, mask).item() == pytest.approx(((out - y)[sel] ** 2).mean().item(), rel=1e-6)
    assert masked_mse(out, y).item() == pytest.approx(torch.nn.functional.mse_loss(out, y).item(), rel=1e-6)
    masked_mse(out, y, mask).backward()
    assert torch.all(out.grad[~sel] == 0) and torch.all(out.grad[sel] != 0)
    # recursive supervision masks every intermediate prediction too
    model = build("drcn", 2, channels=4, recursions=3)
    x, y2 = torch.rand(3, 1, 5, 5), torch.rand(3, 1, 10, 10)
    final, preds = model.forward_with_intermediates(x)
    expected = 0.4 * sum(masked_mse(p, y2, mask) for p in preds) / 3 + 0.6 * masked_mse(final, y2, mask)
    got = training_loss(model, x, y2, recipe_for("drcn"), 0.4, mask)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_drcn_init_makes_the_recursion_an_identity():
    model = build("drcn", 2, channels=4, recursions=2)
    init_weights(model, "drcn")
    h = torch.rand(1, 4, 5, 5)
    assert torch.allclose(torch.relu(model.inference(h)), h)
    x = torch.rand(1, 1, 6, 7)
    out, preds = model.forward_with_intermediates(x)  # every prediction starts as the bicubic image
    assert all(torch.equal(p, model.upsample(x)) for p in preds) and torch.allclose(out, model.upsample(x))
