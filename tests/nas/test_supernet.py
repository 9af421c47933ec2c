"""The supernet: subnets are slices of it (extracted, converted, soft == hard), BN recalibration."""
from __future__ import annotations

import random

import pytest
import torch

from edgeslim import models
from edgeslim.core.errors import UsageError
from edgeslim.nas import space as S
from edgeslim.nas.convert import convertible, space_of
from edgeslim.nas.supernet import Supernet, extract, from_model, recalibrate
from nas_toys import TINY_MB, TINY_RES


def _randomize_bn(net):
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


@pytest.mark.parametrize("spec", [TINY_MB, TINY_RES])
def test_extracted_subnet_equals_the_supernet_and_soft_one_hot_equals_hard(spec):
    sp = S.from_dict(spec)
    net = Supernet(sp, num_classes=4).eval()
    _randomize_bn(net)
    x = torch.randn(3, 1, 8, 8)
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        a = sp.sample(rng)
        y = net.set_arch(a)(x)
        sub = extract(net, a)
        assert type(sub).__name__ == "NasNet"
        torch.testing.assert_close(sub(x), y, atol=1e-5, rtol=0)
        probs = {n: torch.tensor([float(v == a[n]) for v in c]) for n, c in sp.decisions()}
        torch.testing.assert_close(net.set_soft(probs)(x), y, atol=1e-5, rtol=0)
        seen.add(sum(p.numel() for p in sub.parameters()))
    assert len(seen) > 2  # the subnets really differ


def test_a_checkpoint_of_the_subnet_loads_without_the_supernet(tmp_path):
    sp = S.from_dict(TINY_MB)
    net = Supernet(sp, num_classes=4).eval()
    a = sp.smallest()
    sub = extract(net, a)
    models.save(sub, tmp_path / "ck", spec="nasnet", input_shape=(1, 8, 8),
                build={"num_classes": 4, "in_channels": 1, **sp.net(a)})
    loaded, meta = models.load(tmp_path / "ck")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded(x), sub(x))
    with pytest.raises(UsageError, match="needs stem"):
        models.create("nasnet", stem={"out": 8}, blocks=[])
    default = models.create("nasnet").eval()  # mobilenetv2_tiny's layout, its weights copied by name
    tiny = models.create("mobilenetv2_tiny").eval()
    assert sum(p.numel() for p in default.parameters()) == sum(p.numel() for p in tiny.parameters())


@pytest.mark.parametrize("spec", ["mobilenetv2_tiny", "resnet20", "resnet8"])
def test_zoo_models_become_their_largest_subnet(spec):
    m = models.create(spec).eval()
    _randomize_bn(m)
    sp = space_of(m)
    assert sp.size() > 1 and all(d in ("depth", "width", "expand") for d in (n.split(".")[1] for n, _ in sp.decisions()))
    net = from_model(m, sp, 10, 1).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(net.set_arch(sp.largest())(x), m(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(extract(net, sp.largest())(x), m(x), atol=1e-5, rtol=0)
    small = extract(net, sp.smallest())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in m.parameters()) / 3


def test_other_models_are_refused():
    m = models.create("lenet5")
    assert not convertible(m)
    with pytest.raises(UsageError, match="cannot become a supernet"):
        space_of(m)


def test_recalibration_sets_the_statistics_of_the_subnet():
    sp = S.from_dict(TINY_MB)
    net = Supernet(sp, num_classes=4)
    a = sp.smallest()
    batches = [torch.randn(16, 1, 8, 8) * 3 + 1 for _ in range(3)]
    net.set_arch(a)
    recalibrate(net, batches)
    sub = extract(net, a)
    ref = extract(net, a)
    recalibrate(ref, batches)  # the plain subnet recalibrated on the same batches agrees
    for (n, b1), (_, b2) in zip(sub.named_buffers(), ref.named_buffers()):
        if "running" in n:
            torch.testing.assert_close(b1, b2, atol=1e-5, rtol=1e-4)
    assert not net.training and net.stem[1].momentum == 0.1  # modes and momentum put back
