import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Pruning tests run many tiny ops: one thread avoids thread-pool overhead on busy shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
