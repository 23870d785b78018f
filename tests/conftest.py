"""Shared fixtures. Tests that need the real data in ../shared/data skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs two workers on a 2-core machine) each worker keeps one
# intra-op thread and bounds how long idle OpenMP/OpenBLAS threads spin, as genforge's own thread
# policy does for two processes (core/threads.py): two workers with two spinning threads each
# would put 4 busy threads on 2 cores. Set before any test module imports torch.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (see shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_test_dir(shared_data: Path) -> Path:
    d = shared_data / "mnist-test"
    if not (d / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test split not found in {d}")
    return d


@pytest.fixture(scope="session")
def cifar_tar(shared_data: Path) -> Path:
    p = shared_data / "cifar10" / "cifar10-jpg.tar.gz"
    if not p.is_file():
        pytest.skip(f"CIFAR-10 archive not found at {p}")
    return p


@pytest.fixture(scope="session")
def fsdd_dir(shared_data: Path) -> Path:
    d = shared_data / "fsdd" / "recordings"
    if not d.is_dir() or not any(d.glob("*.wav")):
        pytest.skip(f"FSDD recordings not found in {d}")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the test: tiny networks gain nothing from a second thread, which
    only contends with other processes on the shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_worker():
    if XDIST_WORKER:
        import torch

        torch.set_num_threads(1)
    yield
