import pytest
import torch
from torch import nn

from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context
from edgeslim.reparameterization import Reparam, RepVGGBlock, reparam
from edgeslim.reparameterization.repvgg import fold_repvgg


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("cin,cout,stride,groups", [(8, 8, 1, 1), (8, 16, 2, 1), (8, 8, 1, 4), (4, 8, 1, 2)])
def test_block_fold_exact(cin, cout, stride, groups):
    torch.manual_seed(0)
    block = _randomize(RepVGGBlock(cin, cout, stride, groups))
    assert (block.identity is not None) == (cin == cout and stride == 1)
    x = torch.randn(2, cin, 9, 9)
    deployed = block.to_deploy()
    assert isinstance(deployed, nn.Sequential) and deployed.conv.kernel_size == (3, 3)
    torch.testing.assert_close(deployed(x), block(x), atol=1e-5, rtol=0)


def test_repvgg_a0_folds_to_single_branch():
    import edgeslim.models as M

    model = _randomize(M.create("repvgg_a0", width_mult=0.25))
    x = torch.randn(2, 1, 28, 28)
    ctx = Context()
    folded = reparam(model, ctx=ctx)
    assert not any(isinstance(m, (RepVGGBlock, nn.BatchNorm2d)) for m in folded.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in folded.modules()) == 22
    assert (folded(x) - model(x)).abs().max().item() < 1e-5
    assert sum(r["fold"] == "repvgg" for r in ctx.details["folds"]) == 22
    assert any(isinstance(m, RepVGGBlock) for m in model.modules())  # caller's model untouched


def test_training_mode_refused():
    block = RepVGGBlock(4, 4).train()
    with pytest.raises(UsageError, match="training mode"):
        fold_repvgg(nn.Sequential(block))
    with pytest.raises(UsageError, match="training mode"):
        reparam(nn.Sequential(block))


def test_switch_to_deploy_convention():
    class Official(nn.Module):
        def __init__(self):
            super().__init__()
            self.deployed = False

        def switch_to_deploy(self):
            self.deployed = True

        def forward(self, x):
            return x

    model = nn.Sequential(Official())
    rec = []
    out = fold_repvgg(model, record=rec)
    assert out[0].deployed and not model[0].deployed
    assert rec[0]["fold"] == "switch_to_deploy"


def test_config_roundtrip_and_nothing_to_fold():
    cfg = Reparam(conv_bn=False)
    assert Reparam.from_dict(cfg.to_dict()) == cfg
    ctx = Context()
    m = nn.Sequential(nn.Linear(3, 3))
    reparam(m, ctx=ctx)
    assert "nothing to fold" in ctx.details["notes"][0]
    with pytest.raises(UsageError):
        Reparam(repvgg="yes")
