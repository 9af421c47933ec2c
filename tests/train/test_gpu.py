import pytest
import torch

from edgeslim.testing.models import TinyConvNet, toy_loader
from edgeslim.train import evaluate, fit, pick_device


@pytest.mark.gpu
def test_fit_picks_cuda_and_matches_cpu_evaluation():
    assert pick_device().type == "cuda"
    loader = toy_loader(n=128)
    seen = set()
    m = fit(TinyConvNet(), loader, epochs=4, progress=False, on_step=[lambda s, mod: seen.add(
        next(mod.parameters()).device.type)])
    assert seen == {"cuda"}  # trained on the GPU ...
    assert next(m.parameters()).device.type == "cpu"  # ... and handed back where it came from
    gpu = evaluate(m, loader)["top1"]
    assert next(m.parameters()).device.type == "cpu"
    cpu = evaluate(m.cpu(), loader, device="cpu")["top1"]
    assert gpu == pytest.approx(cpu) and gpu > 50


def test_pick_device_honours_request():
    assert pick_device("cpu") == torch.device("cpu")
