import pytest

from srexport.atomic import atomic_output, write_text
from srexport.errors import SRExportError


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_force_and_replace(tmp_path):
    target = write_text(tmp_path / "a.txt", "one")
    with pytest.raises(SRExportError, match="a.txt: already exists"):
        write_text(target, "two")
    assert target.read_text() == "one"
    write_text(target, "two", force=True)
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_outputs_get_ordinary_permissions(tmp_path):
    import os

    from srexport.archs import build
    from srexport.checkpoint import save_checkpoint

    umask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "p.txt", "x")
        # safetensors replaces the file it is given (0600): permissions are set after writing
        model = build("espcn", 2)
        ckpt = tmp_path / "m.safetensors"
        save_checkpoint(model, ckpt)
    finally:
        os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert (ckpt.stat().st_mode & 0o777) == 0o644
