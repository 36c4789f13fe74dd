"""Every checkpoint in models/ says what it is, and what it says is true.

The record must match the file name and the weights (parameter count, the network it rebuilds
into), carry its training provenance and its Set5/Set14 figures; where ../shared/datasets is
present, Set5 is evaluated again and must give the recorded PSNR and SSIM.
"""

from pathlib import Path

import pytest

from srexport.checkpoint import load_checkpoint, read_record, weights_sha256
from srexport.evaluate import evaluate

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(MODELS.glob("*.safetensors"))
# Set5 re-evaluation is cheap for every shipped network but DRCN (minutes on a CPU).
REEVALUATE_SKIP = {"drcn"}


def test_models_are_shipped():
    assert len(SHIPPED) >= 15


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_record_matches_the_file(path):
    network, scale = path.stem.rsplit("_x", 1)
    record = read_record(path)
    assert (record.network, record.scale) == (network, int(scale))
    model, loaded = load_checkpoint(path, network=network, scale=int(scale))
    assert loaded == record
    assert record.param_count == sum(p.numel() for p in model.parameters())
    training = record.training
    assert training["kind"] == "trained" and training["device"] and training["epochs"] >= 1
    assert training["seconds"] > 0 and "T91" in training["data"]["dir"] and "held-out" in training["data"]["validation"]
    assert training["recipe"]["network"] == network and training["seed"] is not None
    for dataset in ("Set5", "Set14"):
        m = record.metrics[dataset]
        assert 20 < m["psnr"] < 45 and 0 < m["ssim"] <= 1 and m["bicubic_psnr"] > 20
        if m.get("published_psnr") is not None:
            assert m["gap_to_published_db"] == pytest.approx(m["psnr"] - m["published_psnr"], abs=2e-3)
    assert (path.with_suffix("").with_suffix(".curve.png")).is_file()


def lineage(path: Path) -> tuple[list[dict], dict | None]:
    """The earlier versions of a shipped file that its record names (the --init-from starts under the
    same file name, newest first) and the first start from another file, if any."""
    earlier, init = [], read_record(path).training.get("init_from")
    while init and Path(init["path"]).name == path.name:
        earlier.append(init)
        init = init.get("init_from")
    return earlier, init


@pytest.mark.parametrize("path", [p for p in SHIPPED if read_record(p).training.get("init_from")], ids=lambda p: p.stem)
def test_a_fine_tuned_checkpoint_started_from_a_shipped_one(path):
    """The checkpoint a run started from (--init-from) ships too, with the weights the record names or
    as their fine-tuned successor; where the run continued an earlier version of this same file, which
    it replaced, the chain of starts the record carries leads to one that ships or to a version trained
    from scratch."""
    earlier, init = lineage(path)
    assert all(e["weights_sha256"] != weights_sha256(load_checkpoint(path)[0]) for e in earlier)  # really earlier
    if init is None:  # the earliest version was trained from scratch; its training is on record
        assert earlier[-1]["training"]["epochs"] >= 1 and earlier[-1]["training"]["seconds"] > 0
        return
    source = MODELS / Path(init["path"]).name
    assert source.is_file() and init["network"] == read_record(source).network
    source_versions = [weights_sha256(load_checkpoint(source)[0]), *(e["weights_sha256"] for e in lineage(source)[0])]
    assert init["weights_sha256"] in source_versions


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.stem.rsplit("_x", 1)[0] not in REEVALUATE_SKIP],
                         ids=lambda p: p.stem)
def test_set5_figures_are_reproduced(path, datasets):
    model, record = load_checkpoint(path)
    report = evaluate(model, datasets / "Set5", record.scale)
    assert report.psnr == pytest.approx(record.metrics["Set5"]["psnr"], abs=1e-3)
    assert report.ssim == pytest.approx(record.metrics["Set5"]["ssim"], abs=1e-4)
