import pytest
import torch
from torch import nn

from edgeslim import models
from edgeslim.core.errors import CheckpointError, UsageError
from edgeslim.runtimes import export_onnx
from edgeslim.measure import count_macs, count_params

ZOO = sorted(n for n, e in models.ZOO.items() if e.task == "classification")  # detectors etc.: test_dense.py


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_builds_trains_saves_loads_exports(name, tmp_path):
    torch.manual_seed(0)
    shape = models.ZOO[name].input_shape
    m = models.create(name)
    x = torch.randn(4, *shape)
    y = torch.randint(0, 10, (4,))
    m.train()
    from edgeslim.train.task import loss_for

    loss = loss_for(m, "classification")(m(x), y)  # DeiT: both heads' losses
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
    with pytest.raises(CheckpointError, match="corrupted"):
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


# -- input size from the data (issue 23) -------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_takes_a_non_square_input_size(name):
    m = models.create(name, num_classes=4, in_channels=3, input_size=(64, 48)).eval()
    assert m(torch.randn(2, 3, 64, 48)).shape == (2, 4)
    assert models.create(name, input_size=28).eval()(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_lenet_fc_is_sized_from_the_input():
    assert models.create("lenet5", input_size=(64, 64)).fc1.in_features == 50 * 13 * 13
    assert models.create("lenet300", in_channels=3, input_size=(32, 16))[1].in_features == 3 * 32 * 16
    assert count_params(models.create("lenet5", input_size=28)) == 431_080


@pytest.mark.parametrize("name,size,smallest", [("lenet5", 15, 16), ("vgg_small", (7, 32), 8)])
def test_a_size_a_model_cannot_take_names_the_sizes_it_takes(name, size, smallest):
    assert models.ZOO[name].min_size == smallest
    with pytest.raises(UsageError, match=f"{name} takes inputs of at least {smallest}x{smallest} pixels, got"):
        models.create(name, input_size=size)
    models.create(name, input_size=smallest).eval()(torch.randn(1, 1, smallest, smallest))  # the smallest works


@pytest.mark.parametrize("bad", [0, (28,), (28, 28, 3), (28.0, 28), "28", True])
def test_bad_input_size_is_a_usage_error(bad):
    with pytest.raises(UsageError, match=r"input_size must be one positive side or \(height, width\)"):
        models.create("lenet5", input_size=bad)


def test_resolve_builds_for_the_data_size_and_the_checkpoint_rebuilds_it(tmp_path):
    from edgeslim.models.zoo import size_kwargs

    assert size_kwargs("lenet5", (28, 28)) == {} and size_kwargs("torchvision:resnet18", (64, 64)) == {}
    assert size_kwargs("resnet20", (64, 64)) == {"input_size": [64, 64]}
    m, info = models.resolve("lenet5", num_classes=4, in_channels=3, input_size=(64, 48))
    assert info["build"] == {"num_classes": 4, "in_channels": 3, "input_size": [64, 48]}
    assert info["input_shape"] == [3, 64, 48]
    models.save(m, tmp_path / "c", spec="lenet5", build=info["build"], input_shape=info["input_shape"])
    m2, meta = models.load(tmp_path / "c")
    x = torch.randn(2, 3, 64, 48)
    assert torch.equal(m2(x), m(x)) and meta["input_shape"] == [3, 64, 48]


def test_cli_models_take_an_imagefolder_size(tmp_path):
    """load_model (what every command uses) builds zoo models for 64x64 RGB images."""
    import argparse

    from edgeslim import data
    from edgeslim.cli_common import load_model
    from edgeslim.testing.data import write_image_folder

    bundle = data.load(f"imagefolder:{write_image_folder(tmp_path / 'img', classes=3, per_class=4)}", batch_size=4,
                       val_fraction=0)
    for name in ZOO:
        args = argparse.Namespace(model=name, num_classes=None, in_channels=None, spec=None)
        model, info = load_model(args, bundle)  # check_classes runs a forward at the data's shape
        assert info["input_shape"] == [3, 64, 64]
        x, _ = next(iter(bundle.train))
        assert model(x).shape == (4, 3)
