"""Depth pruning: which blocks are removable, the greedy order, the result exports / saves, bad input."""
import copy
from types import SimpleNamespace

import onnx
import pytest
import torch
from torch import nn

import edgeslim
import edgeslim.runtimes
import edgeslim.models
from edgeslim.core.errors import DataError, UsageError
from edgeslim.core.registry import Context, run
from edgeslim.pruning import BlockPrune
from edgeslim.pruning.depth import _loss, remove_blocks, removal_order, residual_blocks
from edgeslim.search.recipe import load_recipe
from edgeslim.testing.models import TinyConvNet, TinyResNet, toy_loader

X = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _data():
    loader = toy_loader((1, 8, 8), 4, n=64, batch_size=16)
    return SimpleNamespace(train=loader, val=loader, test=loader, meta=None)


def test_finds_the_blocks_with_an_identity_shortcut():
    assert residual_blocks(TinyResNet(), X) == ["block1", "block2"]
    assert residual_blocks(TinyConvNet(), X) == []  # plain convolutions are not removable
    mb = edgeslim.models.create("mobilenetv2_tiny", num_classes=10, in_channels=1)
    # stride-1 inverted residuals with equal channels; the first block of each stage changes shape
    assert residual_blocks(mb, torch.randn(1, 1, 28, 28)) == ["features.1", "features.3", "features.5", "features.7"]


def test_explicit_blocks_replace_them_by_the_identity_and_leave_the_input_alone():
    model = TinyResNet().eval()
    before = copy.deepcopy(model.state_dict())
    out, det = run(model, BlockPrune(blocks=("block1",)), Context(input_shape=(1, 8, 8)))
    assert isinstance(out.block1, nn.Identity) and not isinstance(model.block1, nn.Identity)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():  # the same as skipping block1 by hand
        ref = model.fc(model.flatten(model.pool(model.block2(model.stem(X)))))
        assert torch.allclose(out(X), ref)
    assert det["removed"] == ["block1"] and det["candidates"] == ["block1", "block2"]
    assert det["macs_after"] < det["macs_before"]


def test_ratio_removes_the_block_whose_loss_rises_least(tmp_path):
    torch.manual_seed(0)
    model = TinyResNet().eval()
    data = _data()
    batches = [b for b in data.train][:4]
    losses = {b: _loss(remove_blocks(copy.deepcopy(model), [b]), batches) for b in ("block1", "block2")}
    order = removal_order(model, X, batches)
    assert [o["block"] for o in order][0] == min(losses, key=losses.get)
    assert len(order) == 2 and order[0]["loss"] == pytest.approx(min(losses.values()), abs=1e-4)
    out, det = run(model, BlockPrune(ratio=0.5, calibration_batches=4, bn_batches=0),
                   Context(data=data, input_shape=(1, 8, 8)))
    assert det["removed"] == [min(losses, key=losses.get)]
    assert sum(isinstance(m, nn.Identity) for m in (out.block1, out.block2)) == 1


def test_the_result_exports_with_fewer_nodes_and_saves_without_its_code(tmp_path):
    model = TinyResNet().eval()
    out = edgeslim.prune(model, BlockPrune(blocks=("block1", "block2")), input_shape=(1, 8, 8))
    edgeslim.runtimes.export_onnx(out, tmp_path / "m.onnx", input_shape=(1, 1, 8, 8))
    convs = [n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "Conv"]
    assert len(convs) == 1  # the stem only
    ck = edgeslim.models.save(out, tmp_path / "ck", spec="edgeslim.testing.models:TinyResNet", input_shape=(1, 8, 8))
    back, _ = edgeslim.models.load(ck, spec="edgeslim.testing.models:TinyResNet")
    assert isinstance(back.block1, nn.Identity)
    with torch.no_grad():
        assert torch.allclose(back(X), out(X))


def test_a_recipe_step_replays():
    steps, _ = load_recipe({"steps": [{"type": "block_prune", "blocks": ["block2"]}]})
    assert steps == [BlockPrune(blocks=("block2",))]


def test_bad_input():
    model = TinyResNet()
    with pytest.raises(UsageError, match="not a removable residual block") as e:
        edgeslim.prune(model, BlockPrune(blocks=("stem",)), input_shape=(1, 8, 8))
    assert "block1, block2" in e.value.hint
    with pytest.raises(DataError, match="a few training batches"):
        edgeslim.prune(model, BlockPrune(ratio=0.5), input_shape=(1, 8, 8))
    with pytest.raises(UsageError, match="no removable residual block"):
        edgeslim.prune(TinyConvNet(), BlockPrune(ratio=0.5), data=_data(), input_shape=(1, 8, 8))
    with pytest.raises(UsageError, match=r"ratio must be in \[0, 1\]"):
        BlockPrune(ratio=1.5)


def test_fine_tuning_with_distillation_after_the_removal():
    model = TinyResNet().eval()
    out, det = run(model, BlockPrune(blocks=("block2",), finetune_epochs=1, distill=True, lr=0.05),
                   Context(data=_data(), input_shape=(1, 8, 8)))
    assert "fine-tuned with distillation from the unpruned model" in det["notes"]
    assert not torch.equal(out.block1.conv1.weight, model.block1.conv1.weight)  # trained, the input model untouched
