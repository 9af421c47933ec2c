"""Channel pruning: physically smaller, equal to the masked dense model, exports, saves, refuses bad input."""
import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import edgeslim
import edgeslim.runtimes
import edgeslim.models
from edgeslim.core.config import Config
from edgeslim.core.errors import DataError, ModelError, UsageError
from edgeslim.graph import build_graph
from edgeslim.core.registry import Context, run
from edgeslim.pruning import ChannelPrune, prune
from edgeslim.pruning.importance import IMPORTANCE_NAMES, Magnitude
from edgeslim.pruning.structured import macs_of, prune_once
from edgeslim.testing.models import TinyConvNet, TinyResNet, toy_loader

sys.path.insert(0, str(Path(__file__).parents[1] / "graph"))
import prune_toys as toys  # noqa: E402


def _data(shape=(1, 8, 8), classes=4):
    loader = toy_loader(shape, classes, n=32, batch_size=16)
    return SimpleNamespace(train=loader, val=loader, test=loader, meta=None)


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _masked(model, shape, removed: dict):
    """The dense model with the removed channels zeroed at every producer (conv/linear rows, norm scale+shift)."""
    dense = copy.deepcopy(model)
    graph = build_graph(dense, torch.randn(1, *shape))
    with torch.no_grad():
        for g in graph.groups():
            drop = set(removed.get(g.root, []))
            if not drop:
                continue
            for m in g.members:
                if m.role != "out" or not isinstance(m.module, nn.Module):
                    continue
                idx = [i for i, r in zip(m.idxs, m.root_idxs) if r in drop]
                for p in (getattr(m.module, "weight", None), getattr(m.module, "bias", None)):
                    if p is not None:
                        p[idx] = 0
    return dense


@pytest.mark.parametrize("factory", [TinyResNet, toys.MobileNetLike, toys.DenseNetLike])
def test_pruned_equals_masked_dense(factory):
    torch.manual_seed(0)
    model = _randomize_bn(factory())
    shape = factory.input_shape
    pruned = copy.deepcopy(model)
    rows = prune_once(pruned, torch.randn(1, *shape), ratio=0.5, importance=Magnitude(1))
    removed = {r["layer"]: r["removed"] for r in rows}
    assert sum(len(v) for v in removed.values()) > 0
    dense = _masked(model, shape, removed)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.allclose(pruned.eval()(x), dense.eval()(x), atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("factory", [TinyResNet, toys.MobileNetLike, toys.DenseNetLike, toys.TinyTransformer])
def test_structured_forward_and_onnx_parity(factory, tmp_path):
    model = factory().eval()
    small = edgeslim.prune(model, ChannelPrune(ratio=0.5), input_shape=factory.input_shape)
    x = torch.randn(3, *factory.input_shape)
    assert small(x).shape == model(x).shape
    assert macs_of(small, x[:1]) < 0.7 * macs_of(model, x[:1])
    info = edgeslim.runtimes.export_onnx(small, tmp_path / "m.onnx", input_shape=(1, *factory.input_shape))
    assert info["max_abs_diff"] < 1e-4


def test_no_masks_plain_modules_and_caller_untouched():
    model = TinyResNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = prune(model, ChannelPrune(ratio=0.5), input_shape=(1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert small.block1.conv1.out_channels == 4 and model.block1.conv1.out_channels == 8
    assert not any(n.endswith("_mask") or n.endswith("_orig") for n, _ in small.named_parameters())
    assert not small._forward_hooks and not small._forward_pre_hooks


def test_save_load_roundtrip(tmp_path):
    model = edgeslim.models.create("resnet8", num_classes=10, in_channels=1).eval()
    small = prune(model, ChannelPrune(ratio=0.5, round_to=4), input_shape=(1, 28, 28))
    edgeslim.models.save(small, tmp_path / "ck", spec="resnet8", input_shape=(1, 28, 28),
                         build={"num_classes": 10, "in_channels": 1})
    loaded, meta = edgeslim.models.load(tmp_path / "ck")
    x = torch.randn(2, 1, 28, 28)
    assert meta["structure"]
    assert torch.allclose(loaded(x), small.eval()(x), atol=1e-6)


def test_round_to_and_global_ranking():
    model = toys.MobileNetLike().eval()
    _, d = run(model, ChannelPrune(ratio=0.5, round_to=8, global_ranking=True), Context(input_shape=model.input_shape))
    for row in d["layers"]:
        if row["kept"] != row["channels"]:
            assert row["kept"] % 8 == 0, row
    assert d["ranking"] == "global"


def test_exclude_by_name_and_type():
    model = TinyResNet().eval()
    _, d = run(model, ChannelPrune(ratio=0.5, exclude=("block1\\.conv1",)), Context(input_shape=(1, 8, 8)))
    rows = {r["layer"]: r for r in d["layers"]}
    assert rows["block1.conv1"]["kept"] == 8 and rows["block2.conv1"]["kept"] == 4
    with pytest.raises(UsageError, match="no prunable"):
        prune(model, ChannelPrune(ratio=0.5, exclude_types=("Conv2d",)), input_shape=(1, 8, 8))


@pytest.mark.parametrize("name", IMPORTANCE_NAMES)
def test_every_importance_criterion(name):
    model = TinyResNet().eval()
    small, d = run(model, ChannelPrune(ratio=0.5, importance=name), Context(data=_data(), input_shape=(1, 8, 8)))
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    assert d["macs_after"] < d["macs_before"]


def test_bn_importance_removes_smallest_gammas():
    model = TinyConvNet().eval()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.arange(1, 9, dtype=torch.float))  # channels 0..3 smallest
    small = prune(model, ChannelPrune(ratio=0.5, importance="bn"), input_shape=(1, 8, 8))
    assert torch.equal(small.bn1.weight.data, torch.arange(5, 9, dtype=torch.float))


def test_target_macs_uniform():
    model = toys.MobileNetLike().eval()
    _, d = run(model, ChannelPrune(target_macs=0.5), Context(input_shape=model.input_shape))
    assert d["macs_kept"] <= 0.5 and d["macs_kept"] > 0.3


def test_iterative_schedule_with_finetune():
    model = TinyResNet()
    _, d = run(model, ChannelPrune(ratio=0.5, schedule="iterative", steps=2, finetune_epochs=1),
               Context(data=_data(), input_shape=(1, 8, 8), progress=False))
    assert [s["fraction"] for s in d["steps"]] == [0.5, 1.0]
    assert d["steps"][0]["macs"] > d["steps"][1]["macs"]


def test_config_roundtrip():
    cfg = ChannelPrune(ratio=0.3, importance="taylor", exclude=("fc",), layer_ratios=(("conv1", 0.2),))
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg


# -- bad input: clear errors, caller's model untouched -------------------------------------
@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_range(ratio):
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        ChannelPrune(ratio=ratio)


def test_ratio_removing_every_channel():
    model = TinyConvNet().eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UsageError, match="every channel") as e:
        prune(model, ChannelPrune(ratio=0.5, layer_ratios=(("conv1", 0.95),)), input_shape=(1, 8, 8))
    assert "conv1" in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_custom_parameters_pruned_and_breaking_groups_kept_with_reason():
    model = toys.WithCustom()
    before = copy.deepcopy(model.state_dict())
    small = prune(model, ChannelPrune(ratio=0.5))
    assert small.conv1.out_channels == 4 and small.scale.gamma.shape == (1, 4, 1, 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    small = prune(model, ChannelPrune(ratio=0.5, exclude=("scale",)))
    assert small.conv2.out_channels == 4 and small.conv1.out_channels == 8
    ctx = Context(input_shape=(1, 8, 8))
    small, details = run(toys.FixedMask(), ChannelPrune(ratio=0.5), ctx)
    assert small.conv1.out_channels == 8 and small.conv2.out_channels == 4
    row = next(r for r in details["layers"] if r["layer"] == "conv1")
    assert "breaks the model" in row["note"]
    with pytest.raises(ModelError, match="cannot trace"):
        prune(toys.Untraceable(), ChannelPrune(ratio=0.5))


def test_data_criteria_need_data():
    with pytest.raises(DataError):
        prune(TinyConvNet(), ChannelPrune(importance="taylor"), input_shape=(1, 8, 8))


def test_missing_input_shape():
    with pytest.raises(UsageError, match="input shape"):
        prune(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), ChannelPrune())


def test_bn_l1_penalty_hook_shrinks_gammas():
    from edgeslim.pruning import bn_l1_penalty
    from edgeslim.train import fit

    model = TinyConvNet()
    hook = bn_l1_penalty(1e-2)
    out = model(torch.randn(2, 1, 8, 8))
    want = 1e-2 * (model.bn1.weight.abs().sum() + model.bn2.weight.abs().sum())
    assert torch.allclose(hook(model, None, None, out), want)
    before = model.bn1.weight.abs().sum().item()
    fit(model, _data().train, epochs=2, hooks=[bn_l1_penalty(0.5)], weight_decay=0, progress=False)
    assert model.bn1.weight.abs().sum().item() < before


def test_finetune_with_distillation_from_unpruned_model():
    _, d = run(TinyResNet(), ChannelPrune(ratio=0.5, finetune_epochs=1, distill=True),
               Context(data=_data(), input_shape=(1, 8, 8), progress=False))
    assert any("distillation" in n for n in d["notes"])


def test_batchnorm_statistics_re_estimated_after_pruning():
    from edgeslim.train import recalibrate_bn

    model = _randomize_bn(TinyResNet())
    data = _data()
    plain = prune(model, ChannelPrune(ratio=0.5, bn_batches=0), data=data, input_shape=(1, 8, 8), progress=False)
    fresh, d = run(model, ChannelPrune(ratio=0.5, bn_batches=2),
                   Context(data=data, input_shape=(1, 8, 8), progress=False))
    # bn_batches=0 keeps the old statistics (the pruned model equals the masked one); with batches
    # they are what a separate re-estimation on the same batches gives
    assert not torch.equal(plain.block1.bn2.running_mean, fresh.block1.bn2.running_mean)
    assert recalibrate_bn(plain, data, 2) > 0
    for k, v in fresh.state_dict().items():
        assert torch.allclose(v.float(), plain.state_dict()[k].float(), atol=1e-6), k
    assert d["steps"][0]["bn_recalibrated"] > 0 and any("BatchNorm" in n for n in d["notes"])
    # without data there is nothing to re-estimate on: pruning still works
    prune(model, ChannelPrune(ratio=0.5), input_shape=(1, 8, 8))


def test_distillation_leaves_the_callers_teacher_as_it_was():
    teacher = TinyResNet().train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    prune(TinyResNet(), ChannelPrune(ratio=0.5, finetune_epochs=1), data=_data(), input_shape=(1, 8, 8),
          teacher=teacher, progress=False)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_sensitivity_allocation_keeps_unlisted_layers_whole(monkeypatch):
    import edgeslim.pruning.sensitivity as sens

    monkeypatch.setattr(sens, "analyze", lambda *a, **k: {"rows": [], "layers": []})
    monkeypatch.setattr(sens, "allocate", lambda *a, **k: {"block1.conv1": 0.5})
    _, d = run(TinyResNet().eval(), ChannelPrune(target_macs=0.9, allocation="sensitivity"),
               Context(data=_data(), input_shape=(1, 8, 8)))
    kept = {r["layer"]: r["kept"] for r in d["layers"]}
    assert kept["block1.conv1"] == 4 and kept["block2.conv1"] == 8 and kept["block2.conv2"] == 8


def test_a_model_no_channel_of_which_can_go_is_one_clear_line():
    class Fixed(nn.Module):  # every channel count is pinned by a buffer the tracer cannot see
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.register_buffer("w", torch.ones(1, 8, 1, 1))
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc((self.conv(x) * self.w).mean((2, 3)))

    with pytest.raises(ModelError, match="no channel of this model can be removed without breaking it: layer 'conv'"):
        prune(Fixed(), ChannelPrune(ratio=0.5), input_shape=(1, 8, 8))
