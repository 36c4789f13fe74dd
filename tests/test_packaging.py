"""Shipped checkpoints are found by name from an installed wheel, not only from a checkout, and the
fused kernel's C source travels with it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from srexport.archs import build
from srexport.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_models_and_finds_them(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "engines", "*.egg-info", "build", "dist",
                                                             "__pycache__", ".pytest_cache"))
    for old in (src / "models").glob("*.safetensors"):
        old.unlink()
    save_checkpoint(build("fsrcnn_s", 4), src / "models" / "fsrcnn_s_x4.safetensors")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(src)], check=True, capture_output=True)
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("srexport-*.whl"))) as whl:
        whl.extractall(site)
    assert (site / "srexport" / "_shipped" / "fsrcnn_s_x4.safetensors").is_file()
    kernel = Path("srexport", "csrc", "chain.c")
    assert (site / kernel).read_bytes() == (REPO / kernel).read_bytes()
    code = ("import srexport, srexport.checkpoint as c; "
            "print(srexport.__file__); print(c.shipped_checkpoint('fsrcnn_s', 4)); "
            "print(c.resolve_network('fsrcnn_s', 4)[1].network)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out[0].startswith(str(site))
    assert out[1] == str(site / "srexport" / "_shipped" / "fsrcnn_s_x4.safetensors")
    assert out[2] == "fsrcnn_s"
