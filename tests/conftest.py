import os
from pathlib import Path

import pytest
import torch

# Two cores are shared by everything on the CI machine; one thread per test process is faster.
torch.set_num_threads(int(os.environ.get("SREXPORT_TEST_THREADS", "2")))

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def datasets():
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is not there (the slower real-data checks need ../shared/datasets)")
    return SHARED_DATASETS


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory):
    """srexport's cache (exported ONNX, TensorRT engines) in a folder of this test session, not ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(model, ONNX proto, ONNX path) per (network, scale), exported once for the test session."""
    import onnx

    from srexport.checkpoint import resolve_network
    from srexport.onnx_export import onnx_from_model

    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(name, scale=2):
        if (name, scale) not in cache:
            model, record = resolve_network(name, scale, random_weights=True)
            proto = onnx_from_model(model, record)
            path = folder / f"{name}_x{scale}.onnx"
            onnx.save(proto, str(path))
            cache[name, scale] = (model, proto, path)
        return cache[name, scale]

    return get
