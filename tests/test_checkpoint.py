import json
import struct

import pytest
import torch

from srexport.archs import build
from srexport.checkpoint import (ModelRecord, load_checkpoint, read_record, resolve_network, save_checkpoint,
                                 shipped_checkpoint, weights_sha256)
from srexport.errors import SRExportError


@pytest.fixture
def espcn_ckpt(tmp_path):
    torch.manual_seed(1)
    model = build("espcn", 3)
    record = ModelRecord.for_model(model, training={"kind": "test"}, metrics={"Set5": {"psnr": 1.0}})
    return model, save_checkpoint(model, tmp_path / "espcn_x3.safetensors", record)


@pytest.mark.parametrize("name", ["srcnn_955", "fsrcnn_s", "drcn", "red"])
def test_round_trip_rebuilds_the_same_network(tmp_path, name):
    torch.manual_seed(0)
    model = build(name, 2, **({"channels": 16} if name in ("drcn", "red") else {})).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, record = load_checkpoint(path)
    assert record.network == name and record.scale == 2 and record.hparams == model.hparams
    assert record.param_count == sum(p.numel() for p in model.parameters())
    assert weights_sha256(loaded) == weights_sha256(model)
    x = torch.rand(1, 1, 7, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_record_is_true_and_complete(espcn_ckpt):
    model, path = espcn_ckpt
    record = read_record(path)
    assert record.upsampling.startswith("sub-pixel")
    assert record.value_range == (0.0, 1.0) and "BT.601" in record.colour_space
    assert record.training == {"kind": "test"} and record.metrics == {"Set5": {"psnr": 1.0}}
    assert json.loads(record.to_json())["schema_version"] == 1


def test_drcn_checkpoint_stores_the_shared_weight_once(tmp_path):
    model = build("drcn", 2)
    path = save_checkpoint(model, tmp_path / "d.safetensors")
    params = sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < 1.01 * 4 * params


def test_wrong_network_or_scale_is_named(espcn_ckpt):
    _, path = espcn_ckpt
    with pytest.raises(SRExportError, match=r"espcn_x3.safetensors: holds network 'espcn', expected 'vdsr'"):
        load_checkpoint(path, network="vdsr")
    with pytest.raises(SRExportError, match=r"holds a x3 network, expected x2"):
        load_checkpoint(path, scale=2)


def _rewrite_header(path, change):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    change(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])


def test_shape_mismatch_is_one_line(espcn_ckpt):
    _, path = espcn_ckpt

    def claim_other_hparams(header):
        record = json.loads(header["__metadata__"]["srexport"])
        record["hparams"]["n1"] = 32
        header["__metadata__"]["srexport"] = json.dumps(record)

    _rewrite_header(path, claim_other_hparams)
    with pytest.raises(SRExportError, match=r"tensor body.0.bias has shape \(64,\), espcn expects \(32,\)") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_wrong_architecture_tensors(tmp_path, espcn_ckpt):
    _, path = espcn_ckpt

    def claim_fsrcnn(header):
        record = json.loads(header["__metadata__"]["srexport"])
        record.update(network="fsrcnn", hparams={})
        header["__metadata__"]["srexport"] = json.dumps(record)

    _rewrite_header(path, claim_fsrcnn)
    with pytest.raises(SRExportError, match="tensors do not match fsrcnn"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "no_record", "bad_json", "unknown_net"])
def test_corrupt_files_fail_with_the_file_name(tmp_path, espcn_ckpt, damage):
    _, path = espcn_ckpt
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a checkpoint" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "no_record":
        _rewrite_header(path, lambda h: h.pop("__metadata__"))
    elif damage == "bad_json":
        _rewrite_header(path, lambda h: h["__metadata__"].update(srexport="{nope"))
    else:
        def unknown(h):
            r = json.loads(h["__metadata__"]["srexport"])
            r["network"] = "srgan"
            h["__metadata__"]["srexport"] = json.dumps(r)
        _rewrite_header(path, unknown)
    with pytest.raises(SRExportError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_missing_file_and_no_pickle(tmp_path):
    with pytest.raises(SRExportError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    # A pickle (torch.save) is refused, never unpickled.
    evil = tmp_path / "evil.safetensors"
    torch.save({"a": torch.zeros(1)}, evil)
    with pytest.raises(SRExportError, match="not a valid safetensors file"):
        load_checkpoint(evil)


def test_save_refuses_to_overwrite_without_force(espcn_ckpt):
    model, path = espcn_ckpt
    before = path.read_bytes()
    with pytest.raises(SRExportError, match="already exists"):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    save_checkpoint(model, path, force=True)


def test_resolve_network_and_shipped_lookup(tmp_path, monkeypatch):
    model, record = resolve_network("fsrcnn", 2, random_weights=True, seed=3)
    assert record.training == {"kind": "random-init", "seed": 3}
    again, _ = resolve_network("fsrcnn", 2, random_weights=True, seed=3)
    assert weights_sha256(model) == weights_sha256(again)
    monkeypatch.setenv("SREXPORT_MODELS", str(tmp_path))
    assert shipped_checkpoint("red", 4) is None or "red_x4" in str(shipped_checkpoint("red", 4))
    save_checkpoint(build("red", 4), tmp_path / "red_x4.safetensors")
    assert shipped_checkpoint("red", 4) == tmp_path / "red_x4.safetensors"
    loaded, rec = resolve_network("red", 4)
    assert rec.network == "red"
    with pytest.raises(SRExportError, match="--checkpoint and --random-weights"):
        resolve_network("red", 4, checkpoint=tmp_path / "red_x4.safetensors", random_weights=True)
