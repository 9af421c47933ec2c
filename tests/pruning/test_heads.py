"""Vision-transformer pruning: whole heads (exact), MLP and embedding width, token merging, clear refusals."""
import copy

import pytest
import torch

import edgeslim
from edgeslim import models
from edgeslim.core.errors import DataError, ModelError, UsageError
from edgeslim.core.registry import Context, run
from edgeslim.graph import attention
from edgeslim.pruning import HeadPrune, TokenMerge
from edgeslim.testing.models import TinyConvNet, toy_loader

SHAPE = (1, 28, 28)


def _vit():
    torch.manual_seed(0)
    return models.create("vit_tiny").eval()


def test_removing_whole_heads_equals_silencing_them():
    m, x = _vit(), torch.randn(2, *SHAPE)
    attn = m.blocks[1].attn
    ref = copy.deepcopy(m)
    ra = ref.blocks[1].attn
    v = [i for i in attention.head_channels(ra, [1]) if i >= 2 * ra.proj.in_features]
    with torch.no_grad():  # a head whose values are zero adds nothing
        ra.qkv.weight[v] = 0
        ra.qkv.bias[v] = 0
    attention.remove(attn, attention.head_channels(attn, [1]), whole_heads=1)
    assert (attn.num_heads, attn.head_dim, attn.qkv.out_features, attn.proj.in_features) == (2, 32, 192, 64)
    assert torch.allclose(m(x), ref(x), atol=1e-5)
    with pytest.raises(UsageError, match="same in q, k and v"):
        attention.remove(attn, [0])


@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_head_mlp_and_embed_pruning(importance):
    data = toy_loader(SHAPE, 10, n=16, batch_size=8)
    small, details = run(_vit(), HeadPrune(heads=0.34, mlp=0.5, embed=0.25, importance=importance),
                         Context(input_shape=SHAPE, data=data))
    assert all(b.attn.num_heads == 2 for b in small.blocks)
    assert all(b.mlp.fc1.out_features == 96 for b in small.blocks)
    assert small.norm.normalized_shape == (72,) and small.cls_token.shape == (1, 1, 72)
    assert details["macs_before"] / details["macs_after"] > 2
    assert small(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_head_pruning_refusals():
    with pytest.raises(DataError, match="calibration"):
        edgeslim.prune(_vit(), HeadPrune(importance="taylor"), input_shape=SHAPE)
    with pytest.raises(ModelError, match="fused qkv"):
        edgeslim.prune(TinyConvNet(), HeadPrune(), input_shape=(1, 8, 8))
    with pytest.raises(UsageError, match="heads"):
        HeadPrune(heads=1.0)


def test_token_merge_reaches_a_macs_target_and_refuses_what_it_cannot():
    m = _vit()
    small, details = run(m, TokenMerge(target_macs=0.66, schedule="decreasing"), Context(input_shape=SHAPE))
    assert details["macs_kept"] <= 0.66 and sum(details["per_block"]) == details["tokens_merged"]
    assert details["per_block"] == sorted(details["per_block"], reverse=True)
    fewer = run(m, TokenMerge(tokens=details["tokens_merged"] - 1, schedule="decreasing"), Context(input_shape=SHAPE))[1]
    assert fewer["macs_kept"] > 0.66  # the fewest tokens that reach it
    assert all(b.merge == 0 for b in m.blocks)  # the caller's model is untouched
    with pytest.raises(ModelError, match="merge count"):
        edgeslim.prune(TinyConvNet(), TokenMerge(), input_shape=(1, 8, 8))
    with pytest.raises(UsageError, match="out of reach"):
        edgeslim.prune(m, TokenMerge(target_macs=0.05), input_shape=SHAPE)


def test_an_attention_whose_heads_cannot_go_keeps_them_with_the_reason():
    from edgeslim.models.vit import Attention

    class HeadBias(Attention):  # a per-head table sized at build time (like a relative position bias)
        def __init__(self, src):
            super().__init__(src.proj.out_features, src.num_heads)
            self.load_state_dict(src.state_dict())
            self.register_buffer("bias", torch.zeros(src.num_heads, 1, 1))

        def forward(self, x, size=None):
            out, keys = super().forward(x, size)
            return out + 0 * self.bias.expand(self.num_heads, 1, 1).sum(), keys  # fails once a head is gone

    m = _vit()
    m.blocks[0].attn = HeadBias(m.blocks[0].attn)
    small, details = run(m, HeadPrune(heads=0.34), Context(input_shape=SHAPE))
    rows = {r["layer"]: r for r in details["layers"]}
    assert rows["blocks.0.attn.qkv"]["kept"] == 3 and "breaks the model" in rows["blocks.0.attn.qkv"]["note"]
    assert all(rows[f"blocks.{i}.attn.qkv"]["kept"] == 2 for i in range(1, 6))
    assert small(torch.randn(1, *SHAPE)).shape == (1, 10)
