import logging
from pathlib import Path

import pytest

logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"


@pytest.fixture
def cifar10_dir() -> Path:
    if not SHARED_CIFAR10.is_dir():
        pytest.skip(f"the shared CIFAR-10 subset is not at {SHARED_CIFAR10}")
    return SHARED_CIFAR10
