"""vit_tiny / deit_tiny and token merging: shapes, sizes, exact merging arithmetic, fewer tokens exported."""
import copy

import pytest
import torch

import edgeslim
from edgeslim import models
from edgeslim.graph import build_graph
from edgeslim.measure import count_macs, count_params
from edgeslim.models.tome import merge_tokens, schedule


def test_vit_and_deit_build_small_and_run():
    vit, deit = models.create("vit_tiny").eval(), models.create("deit_tiny").eval()
    assert count_params(vit) <= 5_000_000 and models.ZOO["vit_tiny"].task == "classification"
    x = torch.randn(3, 1, 28, 28)
    assert vit(x).shape == (3, 10) and deit(x).shape == (3, 10)
    cls, dist = deit.forward_train(x)
    assert torch.allclose(deit(x), (cls + dist) / 2)
    assert vit.forward_train(x)[1] is None
    assert models.create("vit_tiny", in_channels=3, input_size=32)(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_merge_keeps_the_size_weighted_sum_and_protects_the_class_token():
    torch.manual_seed(0)
    x, keys, size = torch.randn(2, 11, 8), torch.randn(2, 11, 4), torch.ones(2, 11, 1)
    y, s = merge_tokens(x, keys, size, r=3, protected=1)
    assert y.shape == (2, 8, 8) and s.shape == (2, 8, 1) and float(s.sum()) == 22
    assert torch.allclose((y * s).sum(1), (x * size).sum(1), atol=1e-5)
    assert torch.equal(y[:, 0], x[:, 0])
    assert merge_tokens(x, keys, size, r=0)[0] is x
    assert merge_tokens(x, keys, size, r=99)[0].shape[1] == 1 + 5  # at most half the free tokens go


def test_schedule_sums_to_the_total():
    assert schedule(6, 24) == [4] * 6
    dec = schedule(6, 25, "decreasing")
    assert sum(dec) == 25 and dec == sorted(dec, reverse=True)
    with pytest.raises(ValueError):
        schedule(3, 3, "random")


def test_merged_model_has_fewer_macs_and_exports_with_parity(tmp_path):
    m = models.create("vit_tiny").eval()
    before = count_macs(m, (1, 28, 28))[0]
    for blk, r in zip(m.blocks, schedule(len(m.blocks), 30)):
        blk.merge = r
    assert count_macs(m, (1, 28, 28))[0] < before / 1.3
    r = edgeslim.runtimes.export_onnx(m, tmp_path / "m.onnx", torch.randn(1, 1, 28, 28))
    assert r["max_abs_diff"] < 1e-4


def test_head_dims_pruned_through_the_fused_qkv_match_zeroed_weights():
    m = models.create("vit_tiny").eval()
    x = torch.randn(2, 1, 28, 28)
    graph = build_graph(m, x[:1])
    g = next(g for g in graph.groups() if g.root == "blocks.0.attn.qkv")
    assert g.channel_groups == 3 * 3 and g.unit == 32  # q, k and v of 3 heads, 32 dims each
    drop = g.expand([0, 5])
    ref = copy.deepcopy(m)
    with torch.no_grad():
        ref.blocks[0].attn.qkv.weight[drop] = 0
        ref.blocks[0].attn.qkv.bias[drop] = 0
    graph.remove(g, drop)
    attn = m.blocks[0].attn
    assert attn.qkv.out_features == 270 and attn.proj.in_features == 90 and attn.head_dim == 30
    assert torch.allclose(m(x), ref(x), atol=1e-5)


def test_pruned_and_merged_vit_checkpoint_round_trips(tmp_path):
    from edgeslim.pruning import HeadPrune, TokenMerge

    m = models.create("vit_tiny").eval()
    m = edgeslim.prune(m, HeadPrune(heads=0.34, mlp=0.5, embed=0.25), input_shape=(1, 28, 28))
    m = edgeslim.prune(m, TokenMerge(tokens=20), input_shape=(1, 28, 28))
    models.save(m, tmp_path / "ck", spec="vit_tiny", input_shape=(1, 28, 28))
    loaded = models.load(tmp_path / "ck")
    loaded = (loaded[0] if isinstance(loaded, tuple) else loaded).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), m(x))
    assert [b.merge for b in loaded.blocks] == [b.merge for b in m.blocks] and loaded.blocks[0].attn.num_heads == 2


def test_deit_trains_both_heads_and_distils_its_token_from_a_cnn():
    from edgeslim.testing.models import toy_loader
    from edgeslim.train import fit
    from edgeslim.train.kd import kd_loss_fn

    torch.manual_seed(0)
    deit = models.create("deit_tiny").train()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    cls, dist = deit(x)
    assert torch.isclose(deit.classification_loss((cls, dist), y),
                         (torch.nn.functional.cross_entropy(cls, y) + torch.nn.functional.cross_entropy(dist, y)) / 2)
    teacher = models.create("lenet5").eval()
    loss = kd_loss_fn(teacher, alpha=0.5, student=deit)((cls, dist), y, x)
    want = 0.5 * torch.nn.functional.cross_entropy(dist, teacher(x).argmax(1)) + 0.5 * deit.classification_loss((cls, dist), y)
    assert torch.isclose(loss, want)
    data = toy_loader((1, 28, 28), 10, n=16, batch_size=8)
    fit(deit, data, epochs=1, loss_fn=kd_loss_fn(teacher, alpha=0.5, student=deit), progress=False)
    assert deit.eval()(x).shape == (4, 10)
