"""In a recipe every fine-tune is an explicit step, and only a step that asks to distil uses the teacher.

The bug this guards against: ``run_steps`` always hands the steps a teacher (the input model), and a
pruning step fine-tuned with the KD loss whenever a teacher was there, ``distill: false`` or not.
"""
from __future__ import annotations

import copy

import pytest
import torch

import edgeslim.train.finetune as ft
import edgeslim.train.kd as kd
from edgeslim.core.errors import UsageError
from edgeslim.distillation import KD
from edgeslim.pruning import ChannelPrune
from edgeslim.search.recipe import load_recipe, run_steps
from edgeslim.train import Finetune, fit

SHAPE = (1, 8, 8)


@pytest.fixture
def kd_calls(monkeypatch):
    """Counts the calls of the KD loss (every KD path -- the trainer's and the kd step's -- goes
    through ``edgeslim.train.kd.kd_loss``)."""
    calls = []
    real = kd.kd_loss

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kd, "kd_loss", spy)
    return calls


def _recipe(distill: bool) -> dict:
    return {"steps": [{"type": "channel_prune", "ratio": 0.3, "finetune_epochs": 1, "distill": distill,
                       "max_batches": 2}]}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _ce_reference(toy_model, toy_data):
    """The same pruning, then a plain cross-entropy fit with the same options and seed."""
    ref = run_steps(toy_model, [ChannelPrune(ratio=0.3)], data=toy_data, input_shape=SHAPE, seed=0).model
    fit(ref, toy_data, epochs=1, max_batches=2, seed=0, progress=False)
    return ref.eval()


def test_a_step_that_does_not_distil_fine_tunes_with_cross_entropy(toy_model, toy_data, kd_calls):
    steps, _ = load_recipe(_recipe(distill=False))
    assert [s.kind for s in steps] == ["channel_prune", "finetune"]
    assert steps[0].finetune_epochs == 0 and not steps[0].distill
    assert isinstance(steps[1], Finetune) and steps[1].epochs == 1 and steps[1].max_batches == 2
    res = run_steps(toy_model, steps, data=toy_data, input_shape=SHAPE, teacher=toy_model, seed=0)
    assert kd_calls == []  # a teacher was there, and was not used
    assert "bn_recalibration" in res.details[1]  # the finetune step trained
    ref = _ce_reference(toy_model, toy_data)
    assert _same_weights(res.model, ref)  # exactly the cross-entropy fit
    assert not _same_weights(res.model, run_steps(toy_model, [ChannelPrune(ratio=0.3)], data=toy_data,
                                                  input_shape=SHAPE).model)  # and it did train


def test_run_steps_splits_the_fine_tuning_of_configs_given_directly(toy_model, toy_data, kd_calls):
    cfg = ChannelPrune(ratio=0.3, finetune_epochs=1, max_batches=2)
    res = run_steps(toy_model, [cfg], data=toy_data, input_shape=SHAPE, seed=0)
    assert [s.kind for s in res.steps] == ["channel_prune", "finetune"] and kd_calls == []
    assert _same_weights(res.model, _ce_reference(toy_model, toy_data))


def test_a_step_that_distils_becomes_a_kd_step_that_uses_the_teacher(toy_model, toy_data, kd_calls):
    steps, _ = load_recipe(_recipe(distill=True))
    assert [s.kind for s in steps] == ["channel_prune", "kd"]
    assert isinstance(steps[1], KD) and steps[1].epochs == 1 and steps[1].max_batches == 2
    res = run_steps(toy_model, steps, data=toy_data, input_shape=SHAPE, seed=0)
    assert len(kd_calls) == 2  # one per training batch
    assert not _same_weights(res.model, _ce_reference(toy_model, toy_data))


@pytest.mark.parametrize("distill", [False, True])
def test_iterative_schedules_keep_their_training_and_its_loss(toy_model, toy_data, kd_calls, distill):
    cfg = ChannelPrune(ratio=0.3, schedule="iterative", steps=2, finetune_epochs=1, max_batches=1, distill=distill)
    steps, _ = load_recipe({"steps": [cfg.to_dict()]})
    assert steps == [cfg]  # pruning and training interleave: nothing to split off
    run_steps(toy_model, steps, data=toy_data, input_shape=SHAPE, seed=0)
    assert len(kd_calls) == (2 if distill else 0)  # one batch in each of the two rounds


def test_the_trainer_refuses_to_distil_without_a_teacher(toy_model, toy_data):
    from edgeslim.core.registry import Context

    with pytest.raises(UsageError, match="needs a teacher"):
        ft.finetune(copy.deepcopy(toy_model), Context(data=toy_data),
                    ft.FinetuneOptions(epochs=1, max_batches=1, distill=True))
