"""srexport.recipes: every network has a documented recipe that survives its JSON record."""

import json

import pytest

from srexport.archs import list_networks
from srexport.errors import SRExportError
from srexport.recipes import Recipe, recipe_for


def test_every_network_has_a_documented_recipe():
    for net in list_networks():
        r = recipe_for(net)
        assert r.network == net and r.optimizer in ("sgd", "adam") and r.schedule in ("step", "plateau", "none")
        assert len(r.why) > 80 and r.epochs > 0 and r.batch_size > 0
        for scale in (2, 3, 4):
            hp, stride = r.patch_for(scale)
            assert hp // scale >= 5 and stride >= 1
        assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert recipe_for("espcn").patch_for(3) == (51, 42)  # 17r x 17r, stride 14r
    vdsr = recipe_for("vdsr")
    assert vdsr.weight_decay == 0 and vdsr.schedule == "step" and (vdsr.step_epochs, vdsr.epochs) == (30, 60)
    assert recipe_for("drcn").recursive_supervision and recipe_for("drcn").schedule == "plateau"
    with pytest.raises(SRExportError):
        recipe_for("nosuchnet")
