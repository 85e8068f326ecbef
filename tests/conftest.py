"""Shared test fixtures and settings."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng():
    """A fresh, seeded generator per test, so tests do not depend on their order."""
    return np.random.default_rng(0)


def shared_mnist_dir():
    """The MNIST folder beside the checkout (../shared/data/mnist) or $MINSTN_DATA_DIR, if present."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.environ.get("MINSTN_DATA_DIR"), os.path.join(here, "..", "..", "shared", "data", "mnist")):
        if cand and os.path.isfile(os.path.join(cand, "t10k-images-idx3-ubyte.gz")):
            return os.path.abspath(cand)
    return None
