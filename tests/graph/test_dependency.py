"""Channel-dependency groups: couplings found, head kept, bad models refused clearly."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeslim.core.errors import ModelError, UsageError
from edgeslim.graph import build_graph, custom_layers, excluded_modules, output_shape, unsafe_groups
from edgeslim.testing.models import TinyConvNet, TinyResNet

sys.path.insert(0, str(Path(__file__).parent))
import prune_toys as toys  # noqa: E402


def _groups(model, shape):
    return build_graph(model, torch.randn(1, *shape)).groups()


def _by_root(groups):
    return {g.root: g for g in groups}


def test_residual_add_couples_every_branch():
    groups = _groups(TinyResNet(), (1, 8, 8))
    # the stem's channels are added to both blocks' outputs: one group holds them all
    res = next(g for g in groups if "stem.0" in g.layers("out"))
    assert {"stem.0", "stem.1", "block1.conv2", "block1.bn2", "block2.conv2", "block2.bn2"} <= set(res.layers("out"))
    assert {"block1.conv1", "block2.conv1", "fc"} <= set(res.layers("in"))
    assert res.prunable and res.size == 8


def test_classifier_head_is_frozen():
    g = _by_root(_groups(TinyConvNet(), (1, 8, 8)))
    assert g["fc"].frozen and "output" in g["fc"].frozen
    assert g["conv1"].prunable and g["conv2"].prunable


def test_depthwise_and_grouped_convs():
    groups = _groups(toys.MobileNetLike(), toys.MobileNetLike.input_shape)
    dw = next(g for g in groups if "block1.dw.0" in g.layers())
    # depthwise conv follows its producer's channels: it is an "out" member, not a root of its own
    assert "block1.expand.0" in dw.layers("out") and "block1.dw.0" in dw.layers("out")
    grouped_in = next(g for g in groups if "grouped.0" in g.layers("in"))
    assert grouped_in.channel_groups == 4
    grouped_out = _by_root(groups)["grouped.0"]
    assert grouped_out.channel_groups == 4 and grouped_out.unit == 8


def test_concat_maps_indices():
    groups = _groups(toys.DenseNetLike(), toys.DenseNetLike.input_shape)
    l1 = _by_root(groups)["l1.conv"]
    # l1's 8 output channels sit at offset 8 of l2's input (after the stem's 8)
    l2_in = next(m for m in l1.members if m.name == "l2.norm")
    assert l2_in.idxs == list(range(8, 16))
    trans_norm = next(m for m in l1.members if m.name == "trans.0")
    assert trans_norm.idxs == list(range(8, 16))


def test_flatten_to_linear_and_attention_heads():
    groups = _groups(toys.DenseNetLike(), toys.DenseNetLike.input_shape)
    t = _by_root(groups)["trans.2"]
    fc = next(m for m in t.members if m.name == "fc")
    assert fc.role == "in" and len(fc.idxs) == 16 * 36  # each channel owns its 6x6 positions
    groups = _groups(toys.TinyTransformer(), toys.TinyTransformer.input_shape)
    attn = next(g for g in groups if "block.attn" in g.layers())
    assert attn.channel_groups == 4  # pruned per head: every head loses the same dims
    assert {"block.ln1", "block.ln2", "norm"} <= set(attn.layers())


def test_free_parameters_follow_their_channels_unless_excluded():
    graph = build_graph(toys.WithCustom(), torch.randn(1, 1, 8, 8))
    g = _by_root(graph.groups())
    assert g["conv1"].prunable and "scale.gamma" in g["conv1"].layers("out")
    graph.remove(g["conv1"], [0, 1])
    assert graph.model.scale.gamma.shape == (1, 6, 1, 1)
    assert [n for n, _ in custom_layers(toys.WithCustom())] == ["scale"]
    # excluded: the groups reaching it stay whole, with the reason
    g = _by_root(build_graph(toys.WithCustom(), torch.randn(1, 1, 8, 8), exclude={"scale"}).groups())
    assert not g["conv1"].prunable and "excluded" in g["conv1"].frozen and g["conv2"].prunable


def test_trial_surgery_finds_the_group_that_breaks_the_model():
    model, x = toys.FixedMask(), torch.randn(1, 1, 8, 8)
    unsafe = unsafe_groups(model, x, {}, output_shape(model, x))
    assert list(unsafe) == ["conv1"] and "breaks the model" in unsafe["conv1"]
    assert "RuntimeError" in unsafe["conv1"]
    res = TinyResNet()
    assert unsafe_groups(res, torch.randn(1, 1, 8, 8), {}, output_shape(res, torch.randn(1, 1, 8, 8))) == {}


def test_untraceable_and_broken_models():
    with pytest.raises(ModelError, match="cannot trace"):
        build_graph(toys.Untraceable(), torch.randn(1, 1, 8, 8))
    with pytest.raises(ModelError, match="cannot trace"):
        build_graph(TinyConvNet(), torch.randn(1, 3, 8, 8))  # wrong input channels


def test_excluded_modules_patterns_and_types():
    m = TinyResNet()
    assert excluded_modules(m, ["block1"]) >= {"block1", "block1.conv1", "block1.bn2"}
    assert excluded_modules(m, types=["Linear"]) == {"fc"}
    with pytest.raises(UsageError, match="matches no layer"):
        excluded_modules(m, ["nope"])


def test_remove_refuses_frozen_and_total_removal():
    graph = build_graph(TinyConvNet(), torch.randn(1, 1, 8, 8))
    g = _by_root(graph.groups())
    with pytest.raises(UsageError):
        graph.remove(g["fc"], [0])
    with pytest.raises(UsageError):
        graph.remove(g["conv1"], list(range(8)))
