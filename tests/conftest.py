"""Shared test fixtures."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Every test session gets its own GEOXAI_CACHE (artifact store, weights): never a user's cache."""
    previous = os.environ.get("GEOXAI_CACHE")
    os.environ["GEOXAI_CACHE"] = str(tmp_path_factory.mktemp("geoxai-cache"))
    yield
    if previous is None:
        os.environ.pop("GEOXAI_CACHE", None)
    else:
        os.environ["GEOXAI_CACHE"] = previous


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread: intra-op threads only fight each other on a small CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
