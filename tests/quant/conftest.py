import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # the toy models are tiny: a second intra-op thread only adds synchronisation on a busy machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
