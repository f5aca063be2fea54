import logging
from pathlib import Path

import pytest

logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

# A run small enough for fast tests: VGG-9 at width 1/8 on 200 digits of 16x16, T = 2.
TINY = dict(model="vgg9", dataset="digits", image_size=16, subset=200, width=0.125, T=2, batch_size=50)

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"


@pytest.fixture
def cifar10_dir() -> Path:
    if not SHARED_CIFAR10.is_dir():
        pytest.skip(f"the shared CIFAR-10 subset is not at {SHARED_CIFAR10}")
    return SHARED_CIFAR10


@pytest.fixture(scope="session")
def digits():
    """The TINY runs' data: 200 digits per split at 16x16 (180 train + 20 validation, 200 test), read once
    per test session."""
    from slt.data import load_dataset

    return load_dataset("digits", image_size=16, subset=200)
