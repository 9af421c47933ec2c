"""Synthetic detection and segmentation batches and loaders (edgeslim.testing.tasks)."""
import pytest

from edgeslim.testing.tasks import synthetic_batch, synthetic_loader


@pytest.fixture
def batch():
    return synthetic_batch


@pytest.fixture
def loader():
    return synthetic_loader
