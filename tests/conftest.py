"""Shared test setup: 2 torch threads, seeded, and the real datasets when they are beside the project.

``MODELSHIELD_TEST_THREADS`` overrides the thread count (use 1 when other jobs share the cores: two OpenMP
threads on one free core spin against each other and run many times slower).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("MODELSHIELD_TEST_THREADS", "2")))

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    env = os.environ.get("MODELSHIELD_DATA")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "datasets"
    return shared if shared.is_dir() else None


DATA_ROOT = _data_root()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def data_root() -> Path:
    """The real datasets (MNIST, Fashion-MNIST); skips the test where they are absent."""
    if DATA_ROOT is None or not (DATA_ROOT / "mnist").is_dir():
        pytest.skip("real datasets not found: set MODELSHIELD_DATA or place ../shared/datasets beside the project")
    return DATA_ROOT
