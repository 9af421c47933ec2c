"""Mask-based pruning: exact sparsity patterns, masks survive fine-tuning, honest sparse size."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from edgeslim.core.config import Config
from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, run
from edgeslim.pruning import SparsePrune, prune, sparse_size
from edgeslim.testing.models import TinyConvNet, TinyMLP, TinyResNet, toy_loader


def _data():
    loader = toy_loader((1, 8, 8), 4, n=32, batch_size=16)
    return SimpleNamespace(train=loader, val=loader, test=loader, meta=None)


def test_fine_per_layer_sparsity_is_exact_and_smallest_go():
    model = TinyMLP().eval()
    small, d = run(model, SparsePrune(granularity="fine", ratio=0.75), Context())
    for name in ("1", "3", "5"):
        w0, w = model.get_submodule(name).weight, small.get_submodule(name).weight
        assert (w == 0).float().mean().item() == pytest.approx(0.75, abs=1 / w.numel())
        kept = w0.abs()[w != 0]
        dropped = w0.abs()[w == 0]
        assert kept.min() >= dropped.max()  # magnitude: the smallest weights went
    # pruned model == dense model with the mask applied
    x = torch.randn(3, 1, 8, 8)
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name in ("1", "3", "5"):
            masked.get_submodule(name).weight.mul_(small.get_submodule(name).weight != 0)
    assert torch.allclose(small(x), masked(x), atol=1e-5)
    assert d["sparsity"] == pytest.approx(0.75, abs=0.01)


def test_global_ranking_uses_one_threshold():
    model = TinyMLP().eval()
    small, d = run(model, SparsePrune(ratio=0.5, global_ranking=True), Context())
    ws = [small.get_submodule(n).weight for n in ("1", "3", "5")]
    w0 = [model.get_submodule(n).weight for n in ("1", "3", "5")]
    kept = torch.cat([a.abs()[b != 0] for a, b in zip(w0, ws)])
    dropped = torch.cat([a.abs()[b == 0] for a, b in zip(w0, ws)])
    assert kept.min() >= dropped.max()
    assert d["ranking"] == "global"


def test_vector_and_kernel_granularity():
    model = TinyResNet().eval()
    small, d = run(model, SparsePrune(granularity="kernel", ratio=0.5), Context())
    w = small.block1.conv1.weight
    zero_k = (w == 0).flatten(2).all(-1)
    nonzero_k = (w != 0).flatten(2).all(-1)
    assert torch.all(zero_k | nonzero_k) and zero_k.float().mean() == pytest.approx(0.5, abs=0.02)
    small, d = run(model, SparsePrune(granularity="vector", ratio=0.5), Context())
    w = small.block1.conv1.weight
    assert torch.all((w == 0).all(-1) | (w != 0).all(-1))  # whole kernel rows
    assert any("left dense: fc" in n for n in d["notes"])


def test_nm_two_four():
    model = TinyResNet().eval()
    small, d = run(model, SparsePrune(granularity="nm", nm="2:4", exclude=("stem\\.0", "fc")), Context())
    w = small.block1.conv1.weight.movedim(1, -1).reshape(-1, 4)
    assert ((w != 0).sum(-1) <= 2).all()
    assert d["sparsity"] == pytest.approx(0.5, abs=1e-6)


def test_nm_refuses_indivisible_input():
    with pytest.raises(UsageError, match="does not divide") as e:
        prune(TinyConvNet(), SparsePrune(granularity="nm", nm="2:4"))
    assert "conv1" in str(e.value) and "--exclude" in e.value.hint
    with pytest.raises(UsageError):
        SparsePrune(granularity="nm", nm="4:2")


def test_masks_survive_finetuning_and_agp():
    data = _data()
    model = TinyConvNet()
    small, d = run(model, SparsePrune(ratio=0.8, finetune_epochs=2), Context(data=data, progress=False))
    assert d["sparsity"] == pytest.approx(0.8, abs=0.01)
    small, d = run(model, SparsePrune(ratio=0.8, schedule="agp", finetune_epochs=4), Context(data=data, progress=False))
    assert d["sparsity"] == pytest.approx(0.8, abs=0.01)
    trace = [s for _, s in d["schedule_trace"]]
    assert trace == sorted(trace) and len(trace) >= 2


def test_sparse_size_is_a_real_encoding():
    model = TinyMLP().eval()
    small, d = run(model, SparsePrune(ratio=0.9), Context())
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert d["dense_size_bytes"] == dense
    assert d["sparse_size_bytes"] < 0.35 * dense
    w = small.get_submodule("1").weight.detach().numpy()
    nnz = int((w != 0).sum())
    row = next(r for r in d["layers"] if r["layer"] == "1")
    csr = nnz * 4 + nnz * 2 + (w.shape[0] + 1) * 4
    bitmap = int(np.ceil(w.size / 8)) + nnz * 4
    assert row["bytes"] == min(csr, bitmap, w.size * 4)
    assert any("ONNX file stays dense" in n for n in d["notes"])
    assert sparse_size(model)["sparse_bytes"] >= sparse_size(small)["sparse_bytes"]


def test_bad_sparse_configs():
    with pytest.raises(UsageError):
        SparsePrune(ratio=1.0)
    with pytest.raises(UsageError):
        SparsePrune(granularity="diagonal")
    with pytest.raises(UsageError, match="single weights"):
        SparsePrune(importance="bn")
    cfg = SparsePrune(granularity="nm", nm="1:4", exclude=("fc",))
    assert Config.from_yaml(cfg.to_yaml()) == cfg
