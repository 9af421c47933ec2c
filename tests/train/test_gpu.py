import pytest
import torch

from edgeslim.testing.models import TinyConvNet, toy_loader
from edgeslim.train import evaluate, fit, pick_device


@pytest.mark.gpu
def test_fit_picks_cuda_and_matches_cpu_evaluation():
    assert pick_device().type == "cuda"
    loader = toy_loader(n=128)
    m = fit(TinyConvNet(), loader, epochs=4, progress=False)
    assert next(m.parameters()).device.type == "cuda"
    gpu = evaluate(m, loader)["top1"]
    cpu = evaluate(m.cpu(), loader, device="cpu")["top1"]
    assert gpu == pytest.approx(cpu) and gpu > 50


def test_pick_device_honours_request():
    assert pick_device("cpu") == torch.device("cpu")
