"""Shared test fixtures."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and OpenMP spin-waits crawl on a busy
    2-core machine; one thread also gives the same kernels, bit for bit, as subprocesses
    started with OMP_NUM_THREADS=1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def transformers():
    """The oracle (a dev dependency): a test that compares with it skips, on its own, where it is missing."""
    return pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data (the real corpora and task sets) for the few checks that want real text rather than the
    generated fixtures (textgen.py); they skip in a clone without it."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return path
