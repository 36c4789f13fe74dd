"""The Python 3.12 environment with VapourSynth and vs-mlrt's CPU plugins that
tests/test_vapoursynth.py runs srexport.vapoursynth in (VapourSynth R81 wheels need Python 3.12+;
that environment has no torch). Made once under ~/.cache/srexport-dev/vs-venv and reused;
`python tests/_vs_env.py` makes it ahead of the tests (.ci/run does) and prints its interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("SREXPORT_DEV_CACHE") or Path.home() / ".cache" / "srexport-dev")
VENV = CACHE / "vs-venv"
PACKAGES = ("vapoursynth", "vapoursynth-mlrt-ort", "vapoursynth-mlrt-ov", "numpy")
READY = VENV / "srexport-ready"  # written last, holding PACKAGES: a half-made environment is remade


def python312() -> list[str] | None:
    """A command that starts Python 3.12 or newer: pyenv's (as `PYENV_VERSION=3.12.1 python` runs
    it; called by path, since a pyenv-run process has its own version's bin first on PATH), else
    python3.12 / python3.13 on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob("3.1[2-9]*/bin/python"))] + ["python3.12", "python3.13"]
    for cmd in candidates:
        try:
            done = subprocess.run([cmd, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.stdout.strip() == "True":
            return [cmd]
    return None


def interpreter() -> Path:
    return VENV / "bin" / "python"


def ensure() -> tuple[Path | None, str]:
    """(the environment's python, "") once it is ready, else (None, why not)."""
    if READY.is_file() and READY.read_text() == "\n".join(PACKAGES) and interpreter().is_file():
        return _configured()
    base = python312()
    if base is None:
        return None, "no Python 3.12+ (python3.12, or pyenv's 3.12.1) to make the VapourSynth environment"
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    steps = ([*base, "-m", "venv", str(VENV)],
             [str(interpreter()), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return None, f"could not make the VapourSynth environment ({' '.join(step[:4])} ...: {tail[0][:200]})"
    READY.write_text("\n".join(PACKAGES))
    return _configured()


def _configured() -> tuple[Path | None, str]:
    """vspipe finds its Python through ~/.config/vapoursynth/vapoursynth.toml, which `vapoursynth
    config` writes (idempotent, fast): done on every call, since the file lives outside the cache."""
    done = subprocess.run([str(VENV / "bin" / "vapoursynth"), "config"], capture_output=True, text=True)
    if done.returncode:
        return None, f"vapoursynth config failed: {(done.stderr or done.stdout).strip()[-200:]}"
    return interpreter(), ""


if __name__ == "__main__":
    python, why = ensure()
    if python is None:
        sys.exit(f"error: {why}")
    print(python)
