"""Synthetic detection and segmentation batches (edgeslim.testing.tasks)."""
import pytest

from edgeslim.testing.tasks import synthetic_batch


@pytest.fixture
def batch():
    return synthetic_batch
