import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeslim import models
from edgeslim.core.errors import CheckpointError, UsageError
from edgeslim.export import onnx as export_onnx
from edgeslim.measure import count_macs, count_params

ZOO = sorted(models.ZOO)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_builds_trains_saves_loads_exports(name, tmp_path):
    torch.manual_seed(0)
    shape = models.ZOO[name].input_shape
    m = models.create(name)
    x = torch.randn(4, *shape)
    y = torch.randint(0, 10, (4,))
    m.train()
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.01).step()
    m.eval()
    models.save(m, tmp_path / "ckpt", spec=name, input_shape=shape)
    m2, meta = models.load(tmp_path / "ckpt")
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert meta["spec"] == name and meta["input_shape"] == list(shape)
    res = export_onnx(m2, tmp_path / "m.onnx", input_shape=shape)
    assert res["max_abs_diff"] < 1e-4 and res["top1_agreement"] == 1.0


def test_reference_param_counts():
    assert count_params(models.create("lenet300")) == 266_610
    assert count_params(models.create("lenet5")) == 431_080


@pytest.mark.parametrize("spec", ["resnet8", "resnet20"])
def test_cifar_resnets_take_1_or_3_channels_and_28_or_32_px(spec):
    for c, s in ((1, 28), (3, 32)):
        assert models.create(spec, in_channels=c)(torch.randn(2, c, s, s)).shape == (2, 10)


def test_torchvision_resnet18_params_and_macs():
    m = models.create("torchvision:resnet18")
    assert count_params(m) == 11_689_512
    macs, layers = count_macs(m, (1, 3, 224, 224))
    assert abs(macs - 1.82e9) / 1.82e9 < 0.01
    assert sum(r["macs"] for r in layers) == macs


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_torchvision_exports_with_parity(name, tmp_path):
    m = models.create(f"torchvision:{name}", num_classes=10, in_channels=1)
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    res = export_onnx(m, tmp_path / "m.onnx", input_shape=(1, 1, 64, 64))
    assert res["max_abs_diff"] < 1e-4


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UsageError, match="unknown model 'resnet2'") as e:
        models.create("resnet2")
    assert "resnet20" in e.value.hint
    with pytest.raises(UsageError, match="torchvision"):
        models.create("torchvision:resnet19")
    with pytest.raises(UsageError, match="cannot import"):
        models.create("no_such_pkg.mod:fn")


def test_user_factory_spec():
    m = models.create("edgeslim.testing.models:TinyConvNet", num_classes=3)
    assert m(torch.randn(1, 1, 8, 8)).shape == (1, 3)


def test_structure_changes_survive_save_load(tmp_path):
    """A pruned conv and a Linear replaced by two Linears load without the code that made them."""
    m = models.create("lenet5")
    m.conv2 = nn.Conv2d(20, 30, 5)
    m.fc1 = nn.Sequential(nn.Linear(30 * 16, 64, bias=False), nn.Linear(64, 500))
    x = torch.randn(2, 1, 28, 28)
    ref = m.eval()(x)
    models.save(m, tmp_path / "c", spec="lenet5", input_shape=(1, 28, 28))
    m2, meta = models.load(tmp_path / "c")
    assert set(meta["structure"]) == {"conv2", "fc1"}
    assert torch.allclose(m2(x), ref, atol=1e-6)


def test_pickled_model_is_refused_and_state_dict_needs_spec(tmp_path):
    m = models.create("lenet300")
    torch.save(m, tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="never unpickles") as e:
        models.load(tmp_path / "full.pt")
    assert "edgeslim.models.save" in e.value.hint
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UsageError, match="bare state_dict"):
        models.load(tmp_path / "sd.pt")
    m2, _ = models.load(tmp_path / "sd.pt", spec="lenet300")
    assert torch.equal(m2[1].weight, m[1].weight)


def test_corrupt_weights_and_missing_checkpoint(tmp_path):
    m = models.create("lenet300")
    models.save(m, tmp_path / "c", spec="lenet300", input_shape=(1, 28, 28))
    w = tmp_path / "c" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        models.load(tmp_path / "c")
    with pytest.raises(CheckpointError, match="no such file"):
        models.load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="not an edgeslim checkpoint"):
        models.load(tmp_path)


def test_resolve_accepts_out_dir(tmp_path):
    m = models.create("lenet300")
    models.save(m, tmp_path / "run" / "checkpoint", spec="lenet300", input_shape=(1, 28, 28))
    m2, info = models.resolve(str(tmp_path / "run"))
    assert info["spec"] == "lenet300" and torch.equal(m2[1].weight, m[1].weight)
