"""The one fine-tuning trainer and fit's options object."""
from __future__ import annotations

import copy

import pytest
import torch

import edgeslim.train.finetune as ft
from edgeslim.core.errors import DataError, UsageError
from edgeslim.core.registry import Context
from edgeslim.testing.models import TinyConvNet, toy_loader
from edgeslim.train import FitConfig, fit


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_fit_takes_a_config_or_its_fields_as_keywords():
    loader = toy_loader(n=32, batch_size=16)
    torch.manual_seed(0)
    base = TinyConvNet()
    a, b, c = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    fit(a, loader, epochs=1, lr=0.05, max_batches=2, progress=False)
    fit(b, loader, FitConfig(epochs=1, lr=0.05, max_batches=2, progress=False))
    fit(c, loader, FitConfig(epochs=3, lr=0.05, progress=False), epochs=1, max_batches=2)  # keywords win
    assert _same(a, b) and _same(a, c) and not _same(a, base)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        fit(a, loader, epoch=1)
    with pytest.raises(UsageError, match="FitConfig"):
        fit(a, loader, {"epochs": 1})


def test_cross_entropy_unless_distill():
    loader = toy_loader(n=32, batch_size=16)
    torch.manual_seed(0)
    base, teacher = TinyConvNet(), TinyConvNet(width=4)
    ce, kd, ref = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    ctx = Context(data=loader, teacher=teacher, progress=False)
    ft.finetune(ce, ctx, ft.FinetuneOptions(epochs=1, lr=0.05))  # a teacher is there, and not used
    fit(ref, loader, epochs=1, lr=0.05, progress=False)
    assert _same(ce, ref)
    ft.finetune(kd, ctx, ft.FinetuneOptions(epochs=1, lr=0.05, distill=True, alpha=1.0))
    assert not _same(kd, ref)
    with pytest.raises(UsageError, match="needs a teacher"):
        ft.finetune(kd, Context(data=loader), ft.FinetuneOptions(distill=True))
    with pytest.raises(DataError, match="needs training data"):
        ft.finetune(kd, Context(), ft.FinetuneOptions())
    assert ft.finetune(kd, Context(), ft.FinetuneOptions(epochs=0)) is kd  # nothing to train, no data needed


def test_the_finetune_step_is_a_registered_config():
    from edgeslim.core.config import Config
    from edgeslim.core.registry import run
    from edgeslim.train import Finetune

    cfg = Config.from_dict({"type": "finetune", "epochs": 1, "max_batches": 1})
    assert isinstance(cfg, Finetune) and cfg.options() == ft.FinetuneOptions(epochs=1, lr=0.01, max_batches=1)
    model = TinyConvNet()
    out, details = run(model, cfg, Context(data=toy_loader(n=16, batch_size=16), progress=False))
    assert "fine-tuned 1 epoch(s) of at most 1 batches" in details["notes"] and not _same(out, model)
    with pytest.raises(UsageError, match="epochs must be >= 0"):
        Finetune(epochs=-1)
