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
