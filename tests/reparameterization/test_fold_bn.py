import pytest
import torch
from torch import nn

from edgeslim.core.errors import UsageError
from edgeslim.reparameterization.fold_bn import find_conv_bn_pairs, fold_bn


def _randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn2 = nn.BatchNorm2d(c, affine=False)

    def forward(self, x):
        return x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        if x.sum() > 1e9:  # data-dependent: torch.fx cannot trace this
            return x
        return self.seq(x)


class Shared(nn.Module):
    """conv output used twice: the BN cannot be folded into it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), Block(8)), (2, 3, 9, 9)),
    (lambda: Untraceable(), (2, 3, 8, 8)),
    (lambda: nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6)), (4, 5)),
    (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3)), (2, 2, 7)),
])
def test_fold_equals_unfolded(make, shape):
    torch.manual_seed(0)
    model = _randomize_bn(make()).eval()
    x = torch.randn(shape)
    ref = model(x)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    folded = fold_bn(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert n_bn > 0
    torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=0)
    # the caller's model is untouched
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == n_bn


def test_fold_torchvision_resnet_block():
    tv = pytest.importorskip("torchvision")
    model = _randomize_bn(tv.models.resnet18(num_classes=10)).eval()
    x = torch.randn(1, 3, 64, 64)
    rec = []
    folded = fold_bn(model, record=rec)
    assert len(rec) == 20  # every conv has its BN, incl. downsample
    torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-5)


def test_shared_output_not_folded():
    model = _randomize_bn(Shared()).eval()
    assert find_conv_bn_pairs(model) == []
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(fold_bn(model)(x), model(x))


def test_training_mode_bn_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    with pytest.raises(UsageError, match="training mode"):
        fold_bn(model)


def test_inplace():
    model = _randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).eval()
    out = fold_bn(model, inplace=True)
    assert out is model and isinstance(model[1], nn.Identity)
