import pytest
import torch
from torch import nn

from edgeslim.core.config import Config
from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, run
from edgeslim.lowrank import CP, SVD, Tucker, factorize


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(torch.relu(self.stem(x)))))
        return self.fc2(torch.relu(self.fc1(self.flat(x))))


@pytest.mark.parametrize("cfg", [Tucker(target_macs=0.5), SVD(rank=3), CP(rank=2), Tucker(vbmf=True), SVD(energy=0.8)])
def test_config_roundtrip(cfg):
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg


def test_bad_configs():
    with pytest.raises(UsageError, match="rank"):
        SVD(rank=0)
    with pytest.raises(UsageError, match="one way"):
        Tucker(rank=3, energy=0.9)
    with pytest.raises(UsageError):
        Tucker(target_macs=1.5)


def test_tucker_target_macs_without_latency_check():
    torch.manual_seed(0)
    model = Net().eval()
    out, det = run(model, Tucker(target_macs=0.6, check_latency=False), Context(input_shape=(1, 12, 12)))
    assert isinstance(out.conv, nn.Sequential) and isinstance(model.conv, nn.Conv2d)  # caller untouched
    assert isinstance(out.stem, nn.Conv2d)  # 1 input channel: skipped
    assert det["macs_after"] <= 0.6 * det["macs_before"] * 1.01
    rows = {r["layer"]: r for r in det["layers"]}
    assert rows["conv"]["kept"] == "factorized" and "input channels" in rows["stem"]["why"]
    assert out(torch.randn(2, 1, 12, 12)).shape == (2, 10)


def test_svd_full_rank_model_equal_and_bad_rank():
    torch.manual_seed(0)
    model = Net().eval()
    out = factorize(model, SVD(rank=32, include=("fc1",), check_latency=False), input_shape=(1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(out(x), model(x), atol=1e-5, rtol=0)
    with pytest.raises(UsageError, match="larger than fc1 allows"):
        factorize(model, SVD(rank=33, include=("fc1",), check_latency=False), input_shape=(1, 8, 8))


def test_latency_check_reverts_slower_layers():
    # a tiny Linear split in two is never faster in ONNX Runtime: it must stay as it was
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64))
    out, det = run(model, SVD(rank=8, min_speedup=1.5, latency_runs=5), Context(input_shape=(1, 8, 8)))
    row = det["layers"][0]
    assert isinstance(out[1], nn.Linear) and row["kept"] == "original" and "not faster" in row["why"]
    assert "latency_ms_before" in row and any("not faster" in n for n in det["notes"])


def test_needs_input_shape():
    with pytest.raises(UsageError, match="input shape"):
        factorize(Net(), Tucker(rank=2))


@pytest.mark.parametrize("cfg", [Tucker(rank=4, check_latency=False), CP(rank=3, check_latency=False, n_iter_max=5),
                                 SVD(rank=2, check_latency=False, min_channels=1)])
def test_factorized_checkpoint_reloads(cfg, tmp_path):
    import edgeslim.models as M

    spec = "edgeslim.testing.models:TinyConvNet"
    model = M.create(spec).eval()
    out = factorize(model, cfg, input_shape=(1, 8, 8))
    assert any(isinstance(m, nn.Sequential) for m in out.modules())
    M.save(out, tmp_path / "ck", spec=spec, input_shape=(1, 8, 8))
    loaded, _ = M.load(tmp_path / "ck", spec=spec)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded(x), out(x))


class TwoConv(nn.Module):
    """Two 3x3 convs of equal cost: ``a`` is nearly rank 2 in both channel modes, ``b`` is dense."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        with torch.no_grad():
            core = torch.randn(2, 2, 3, 3, generator=g)
            u, v = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
            w = torch.einsum("abkl,oa,ib->oikl", core, u, v)
            self.a.weight.copy_(w + 1e-3 * torch.randn(w.shape, generator=g))
            self.b.weight.copy_(torch.randn(self.b.weight.shape, generator=g))
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return self.bn(self.b(torch.relu(self.a(x))))


def test_energy_allocation_takes_rank_from_the_compressible_layer():
    model = TwoConv().eval()
    out, det = run(model, Tucker(target_macs=0.5, check_latency=False, min_channels=1), Context(input_shape=(16, 8, 8)))
    rows = {r["layer"]: r for r in det["layers"]}
    ra, rb = (tuple(map(int, rows[n]["ranks"].split("x"))) for n in ("a", "b"))
    assert max(ra) <= 3 and min(rb) > max(ra), (ra, rb)
    assert det["macs_after"] <= 0.5 * det["macs_before"]
    _, uni = run(model, Tucker(target_macs=0.5, check_latency=False, min_channels=1, allocation="uniform"),
                 Context(input_shape=(16, 8, 8)))
    assert {r["layer"]: r["ranks"] for r in uni["layers"]}["a"] == {r["layer"]: r["ranks"] for r in uni["layers"]}["b"]
    with pytest.raises(UsageError, match="allocation"):
        Tucker(allocation="greedy")


def test_bn_recalibrated_with_data():
    from edgeslim.lowrank import recalibrate_bn

    model = TwoConv()
    x = torch.randn(64, 16, 8, 8) * 3 + 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(64, dtype=torch.long)),
                                         batch_size=16)
    assert recalibrate_bn(model, loader, 4) == 1
    with torch.no_grad():
        feats = model.b(torch.relu(model.a(x)))
    torch.testing.assert_close(model.bn.running_mean, feats.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert model.bn.momentum == 0.1 and model.training
    out, det = run(model.eval(), Tucker(rank=4, check_latency=False, min_channels=1),
                   Context(data=loader, input_shape=(16, 8, 8)))
    assert any("BatchNorm" in n for n in det["notes"])
    assert not torch.equal(out.bn.running_mean, model.bn.running_mean)
