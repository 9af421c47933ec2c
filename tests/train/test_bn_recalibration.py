"""Issue 23: after any fit, BatchNorm running statistics are valid for the trained weights.

The reference is ``exact_bn_statistics``: the same weights with statistics computed over the whole
training split in one pass. A model built with BN momentum 0.01 (torchvision's MobileNetV3) and
trained a handful of steps must evaluate like that reference -- directly, through a pruning
fine-tune, and through the recipe steps an auto trial runs -- while the stale statistics it would
otherwise keep are measurably wrong (the control in each test).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeslim.testing.bn import bn_layers, exact_bn_statistics, set_bn_momentum
from edgeslim.testing.models import TinyConvNet, TinyResNet, toy_loader
from edgeslim.train import bn_report, evaluate, fit, fit_stats, record_fits
from edgeslim.train.loop import on_epoch_end

TOL = 5e-3  # max |logit difference| to the exact statistics; the controls must be off by 10 x more


def _train_data():
    return toy_loader(n=256, batch_size=32, shuffle=True)


def _inputs():
    return torch.cat([x for x, _ in toy_loader(n=256, batch_size=256)])


def _gap(model, loader) -> float:
    """Max |logit difference| between ``model`` and its weights with exact statistics."""
    exact = exact_bn_statistics(model, loader)
    with torch.no_grad():
        return (model.eval()(_inputs()) - exact(_inputs())).abs().max().item()


def _low_momentum(cls=TinyConvNet):
    torch.manual_seed(0)
    return set_bn_momentum(cls(), 0.01)


def test_short_fit_of_a_low_momentum_model_leaves_exact_statistics():
    loader = _train_data()
    model = fit(_low_momentum(), loader, epochs=1, lr=0.05, progress=False)  # 8 steps
    stats = fit_stats(model)
    assert stats.bn_recalibration == {"batches": 8, "layers": 2, "times": 1}
    assert stats.bn_stale_weight == pytest.approx(0.99 ** 8, rel=1e-4)
    assert _gap(model, loader) < TOL
    exact = exact_bn_statistics(model, loader)
    assert abs(evaluate(model, loader)["top1"] - evaluate(exact, loader)["top1"]) <= 1.0
    assert all(m.momentum == 0.01 for _, m in bn_layers(model))  # the re-estimate puts the momentum back

    stale = fit(_low_momentum(), loader, epochs=1, lr=0.05, progress=False, bn_recalibration="off")
    assert fit_stats(stale).bn_recalibration["layers"] == 0
    assert _gap(stale, loader) > 10 * TOL  # the control: without the re-estimate the statistics are wrong


def test_converged_statistics_are_left_alone_unless_asked():
    loader = toy_loader(n=64, batch_size=8)
    torch.manual_seed(0)
    model = fit(TinyConvNet(), loader, epochs=7, progress=False)  # momentum 0.1, 56 updates: 0.9**56 < 0.02
    stats = fit_stats(model)
    assert stats.bn_recalibration["layers"] == 0 and stats.bn_stale_weight == pytest.approx(0.9 ** 56, rel=1e-4)
    model = fit(TinyConvNet(), loader, epochs=7, progress=False, bn_recalibration="always", bn_batches=3)
    assert fit_stats(model).bn_recalibration == {"batches": 3, "layers": 2, "times": 1}
    model = fit(TinyConvNet(), loader, epochs=1, max_batches=2, progress=False)  # never more than one epoch of it
    assert fit_stats(model).bn_recalibration["batches"] == 2


def test_cumulative_momentum_is_always_re_estimated_and_momentum_zero_never():
    loader = _train_data()
    model = set_bn_momentum(TinyConvNet(), None)
    fit(model, loader, epochs=3, progress=False)
    assert fit_stats(model).bn_recalibration["layers"] == 2
    frozen = TinyConvNet()
    frozen.bn1.momentum = 0.0  # frozen on purpose: the statistics it has are the ones it keeps
    mean = frozen.bn1.running_mean.clone()
    fit(frozen, loader, epochs=1, progress=False, bn_recalibration="always")
    assert torch.equal(frozen.bn1.running_mean, mean) and fit_stats(frozen).bn_recalibration["layers"] == 1


def test_re_estimate_runs_other_layers_in_eval_mode():
    """Dropout in front of a BatchNorm: the statistics must be those of the deployed forward (no dropout)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(8, momentum=0.01), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    loader = _train_data()
    fit(model, loader, epochs=1, progress=False)
    exact = exact_bn_statistics(model, loader)
    torch.testing.assert_close(model[2].running_var, exact[2].running_var, rtol=0.05, atol=1e-3)
    assert all(not m.training for m in model.modules())  # and the model is handed back in eval mode


def test_a_layer_the_data_never_reaches_keeps_its_statistics():
    model = _low_momentum()
    model.unused = nn.BatchNorm2d(3, momentum=0.01)
    model.unused.running_mean.fill_(0.5)
    fit(model, _train_data(), epochs=1, progress=False)
    assert torch.all(model.unused.running_mean == 0.5) and int(model.unused.num_batches_tracked) == 0


def test_epoch_end_callbacks_see_valid_statistics():
    loader = _train_data()
    gaps = []
    with on_epoch_end(lambda epoch, m: gaps.append(_gap(copy.deepcopy(m), loader))):
        model = fit(_low_momentum(), loader, epochs=3, progress=False)
    assert len(gaps) == 2 and max(gaps) < TOL
    assert fit_stats(model).bn_recalibration["times"] == 3


def _never_stale(monkeypatch):
    from edgeslim.train import loop

    monkeypatch.setattr(loop, "BN_STALE", 1.5)  # the control: fit's decision switched off


@pytest.mark.parametrize("control", [False, True])
def test_through_a_pruning_fine_tune(control, monkeypatch):
    import edgeslim
    from edgeslim.pruning import ChannelPrune

    if control:
        _never_stale(monkeypatch)
    loader = _train_data()
    with record_fits() as runs:
        small = edgeslim.prune(_low_momentum(TinyResNet), ChannelPrune(ratio=0.5, finetune_epochs=1), data=loader,
                               input_shape=(1, 8, 8), progress=False)
    assert len(runs) == 1 and runs[0].bn_recalibration["layers"] == (0 if control else 5)
    assert bn_report(runs) == {"fits": 1, "re_estimated": 0 if control else 1, "batches": 0 if control else 8,
                               "layers": 0 if control else 5}
    assert (_gap(small, loader) > 10 * TOL) if control else (_gap(small, loader) < TOL)


@pytest.mark.parametrize("control", [False, True])
def test_through_the_steps_an_auto_trial_runs(control, monkeypatch):
    from edgeslim.pruning import ChannelPrune
    from edgeslim.search import Finetune, run_steps

    if control:
        _never_stale(monkeypatch)
    loader = _train_data()
    with record_fits() as runs:
        res = run_steps(_low_momentum(TinyResNet), [ChannelPrune(ratio=0.3), Finetune(epochs=1, lr=0.05)], data=loader,
                        input_shape=(1, 8, 8))
    assert [r.bn_recalibration["layers"] for r in runs] == [0 if control else 5]
    assert (_gap(res.model, loader) > 10 * TOL) if control else (_gap(res.model, loader) < TOL)
