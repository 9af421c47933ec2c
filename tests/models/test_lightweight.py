import pytest
import torch
from torch import nn

import edgeslim.models as M
from edgeslim.core.errors import UsageError
from edgeslim.runtimes import export_onnx
from edgeslim.reparameterization import RepVGGBlock, reparam


def _bn_stats(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["shufflenetv2_tiny", "repvgg_a0", "mobilenetv2_tiny"])
@pytest.mark.parametrize("width", [0.5])
def test_width_multiplier(name, width):
    model = M.create(name, width_mult=width, num_classes=7, in_channels=3).eval()
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)


def test_width_scales_params():
    for name in ("shufflenetv2_tiny", "repvgg_a0"):
        small, big = (sum(p.numel() for p in M.create(name, width_mult=w).parameters()) for w in (0.5, 1.0))
        assert small < big * 0.6
    with pytest.raises(UsageError):
        M.create("repvgg_a0", width_mult=0)


@pytest.mark.parametrize("name,width", [("shufflenetv2_tiny", 1.0), ("repvgg_a0", 0.25), ("mobilenetv2_tiny", 0.5)])
def test_exports_with_parity(name, width, tmp_path):
    model = _bn_stats(M.create(name, width_mult=width))
    res = export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    assert res["max_abs_diff"] < 1e-4


def test_repvgg_deploy_form_exports_and_reloads(tmp_path):
    model = _bn_stats(M.create("repvgg_a0", width_mult=0.25))
    deployed = reparam(model)
    assert not any(isinstance(m, (RepVGGBlock, nn.BatchNorm2d)) for m in deployed.modules())
    res = export_onnx(deployed, tmp_path / "d.onnx", input_shape=(1, 28, 28))
    assert res["max_abs_diff"] < 1e-4
    M.save(deployed, tmp_path / "ckpt", spec="repvgg_a0", build={"width_mult": 0.25}, input_shape=(1, 28, 28))
    loaded, _ = M.load(tmp_path / "ckpt")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), deployed(x))
    assert (deployed(x) - model(x)).abs().max().item() < 1e-5


def test_registered_in_zoo():
    assert {"shufflenetv2_tiny", "repvgg_a0"} <= set(M.ZOO)
