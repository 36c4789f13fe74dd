"""Atomic file output: every artifact srexport writes goes through `atomic_output`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SRExportError


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Fail early, before any work, when `path` exists and `force` is not set."""
    path = Path(path)
    if path.exists() and not force:
        raise SRExportError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise SRExportError(f"{path}: is a directory, expected a file path")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    On any exception the temporary file is removed, so a failed or interrupted write never
    leaves a half-written artifact under the final name.
    """
    path = check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        # Ordinary permissions, set after writing: mkstemp makes 0600, and writers such as
        # safetensors replace the file (0600 again) instead of writing into it.
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    with atomic_output(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), force)
