import pytest
import torch
from torch import nn

from srexport.archs import SCALES, build, get_spec, list_networks
from srexport.archs.drcn import DRCN
from srexport.errors import SRExportError

NETWORKS = ["srcnn", "srcnn_955", "fsrcnn", "fsrcnn_s", "espcn", "vdsr", "drcn", "red"]


def test_registry_lists_every_network_in_order():
    assert list_networks() == NETWORKS


def test_unknown_network_and_bad_scale_are_user_errors():
    with pytest.raises(SRExportError, match="unknown network 'nope'.*espcn"):
        get_spec("nope")
    with pytest.raises(SRExportError, match="scale must be one of 2, 3, 4"):
        build("espcn", 5)
    with pytest.raises(SRExportError, match="bad hyperparameters"):
        build("espcn", 2, nonsense=1)


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("scale", SCALES)
def test_output_is_exactly_scale_times_input(name, scale):
    model = build(name, scale).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (2, 3), (7, 13), (11, 5)]:  # odd and prime sizes, and 1x1
            y = model(torch.rand(2, 1, h, w))
            assert y.shape == (2, 1, scale * h, scale * w)
            assert torch.isfinite(y).all()


def test_scale_free_weights_have_the_same_tensors_at_every_scale():
    for name in list_networks():
        shapes = [{k: v.shape for k, v in build(name, s).state_dict().items()} for s in SCALES]
        if get_spec(name).scale_free_weights:
            assert shapes[0] == shapes[1] == shapes[2], name
    assert [n for n in list_networks() if get_spec(n).scale_free_weights] == ["srcnn", "srcnn_955", "vdsr", "drcn"]


def test_variants_and_hyperparameters():
    assert build("srcnn", 3).hparams["f2"] == 1 and build("srcnn_955", 3).hparams["f2"] == 5
    assert build("fsrcnn_s", 3).hparams == {"d": 32, "s": 5, "m": 1}
    assert build("red", 2, channels=16, depth=3, skip_step=1).hparams == {"channels": 16, "depth": 3, "skip_step": 1}
    # Published weight counts (biases and PReLU slopes excluded): SRCNN 9-1-5 8,032, 9-5-5 57,184, VDSR 664,704.
    def weights(m):
        return sum(p.numel() for n, p in m.named_parameters() if n.endswith("weight") and p.dim() == 4)
    assert weights(build("srcnn", 3)) == 8032
    assert weights(build("srcnn_955", 3)) == 57184
    assert weights(build("vdsr", 3)) == 664704


def test_fsrcnn_has_a_prelu_after_every_conv():
    model = build("fsrcnn", 3)
    layers = list(model.body)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    prelus = [m for m in layers if isinstance(m, nn.PReLU)]
    assert len(convs) == len(prelus) == 7  # extraction, shrinking, m=4 mapping, expanding
    for conv, act in zip(layers[::2], layers[1::2]):
        assert isinstance(conv, nn.Conv2d) and isinstance(act, nn.PReLU)
        assert act.num_parameters == conv.out_channels


def test_drcn_shares_one_recursion_weight_and_exposes_intermediates():
    model = build("drcn", 2, channels=8).eval()
    assert isinstance(model, DRCN)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 + 1 + 2  # embedding, the shared inference conv, reconstruction
    x = torch.rand(1, 1, 5, 6)
    with torch.no_grad():
        out, preds = model.forward_with_intermediates(x)
        ilr = model.upsample(x)
    assert len(preds) == 16 and all(p.shape == (1, 1, 10, 12) for p in preds)
    w = model.ensemble_weights / model.ensemble_weights.sum()
    assert torch.allclose(out, sum(wi * p for wi, p in zip(w, preds)), atol=1e-6)
    # The reconstruction ends without a ReLU, so a prediction may go below the skip input.
    last = model.reconstruction[-1]
    with torch.no_grad():
        last.bias.fill_(-1.0)
        assert (model.forward_with_intermediates(x)[1][0] < ilr).all()


def test_vdsr_is_residual_on_the_bicubic_image():
    model = build("vdsr", 3).eval()
    with torch.no_grad():
        model.residual[-1].weight.zero_()
        model.residual[-1].bias.zero_()
        x = torch.rand(1, 1, 9, 7)
        assert torch.equal(model(x), model.upsample(x))


def test_forward_is_device_free_and_pure():
    # Same input twice gives the same output, and the input is not modified in place.
    for name in NETWORKS:
        model = build(name, 2).eval()
        x = torch.rand(1, 1, 6, 6)
        x0 = x.clone()
        with torch.no_grad():
            a, b = model(x), model(x)
        assert torch.equal(a, b) and torch.equal(x, x0)
