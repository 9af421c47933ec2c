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


@pytest.mark.gpu
def test_bn_statistics_re_estimated_on_cuda_come_back_valid():
    from edgeslim.testing.bn import exact_bn_statistics, set_bn_momentum
    from edgeslim.train import fit_stats

    loader = toy_loader(n=256, batch_size=32, shuffle=True)
    torch.manual_seed(0)
    m = fit(set_bn_momentum(TinyConvNet(), 0.01), loader, epochs=1, progress=False)  # trains on the GPU
    assert next(m.parameters()).device.type == "cpu"
    assert fit_stats(m).bn_recalibration["layers"] == 2
    exact = exact_bn_statistics(m, loader)  # computed on the CPU
    for name in ("bn1", "bn2"):
        torch.testing.assert_close(getattr(m, name).running_var, getattr(exact, name).running_var, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("name,task", [("tinydet", "detection"), ("tinyseg", "segmentation")])
def test_detection_and_segmentation_batches_train_on_cuda(name, task, loader):
    from edgeslim import models

    data = loader(task, n=8, batch_size=4)
    torch.manual_seed(0)
    seen = set()
    m = fit(models.create(name), data, epochs=3, progress=False,
            on_step=[lambda s, mod: seen.add(next(mod.parameters()).device.type)])
    assert seen == {"cuda"} and next(m.parameters()).device.type == "cpu"
    gpu, cpu = evaluate(m, data), evaluate(m, data, device="cpu")
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-3) and next(m.parameters()).device.type == "cpu"
