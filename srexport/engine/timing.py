"""TensorRT's timing cache: kernel timings kept between builds, one file per TensorRT version and GPU."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..atomic import write_bytes


def attach_timing_cache(config, cache_file: Path) -> None:
    data = b""
    if cache_file.is_file():
        try:
            data = cache_file.read_bytes()
        except OSError as e:
            warnings.warn(f"{cache_file}: cannot read the timing cache ({e}); starting a new one")
    cache = None
    try:
        cache = config.create_timing_cache(data)
    except Exception as e:  # a corrupt file must not stop the build
        warnings.warn(f"{cache_file}: unusable timing cache ({e}); starting a new one")
    if cache is None or not config.set_timing_cache(cache, False):
        if data:
            warnings.warn(f"{cache_file}: TensorRT rejected the timing cache; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)


def save_timing_cache(config, cache_file: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    try:  # atomic, so concurrent builds never leave a torn file; the last writer wins
        write_bytes(cache_file, bytes(memoryview(cache.serialize())), force=True)
    except OSError as e:
        warnings.warn(f"{cache_file}: cannot save the timing cache ({e})")
