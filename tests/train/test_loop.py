import pytest
import torch
import torch.nn.functional as F

from edgeslim.core.errors import EdgeslimError, UsageError
from edgeslim.testing.models import TinyConvNet, toy_loader
from edgeslim.train import TrainingDiverged, TrainingStopped, evaluate, fit, fit_stats


def test_fit_learns_and_is_deterministic():
    loader = toy_loader(n=128)
    torch.manual_seed(0)
    a0 = TinyConvNet()
    b0 = TinyConvNet()
    b0.load_state_dict(a0.state_dict())
    a = fit(a0, loader, epochs=8, lr=0.05, seed=3, progress=False)
    b = fit(b0, loader, epochs=8, lr=0.05, seed=3, progress=False)
    assert evaluate(a, loader)["top1"] > 80.0
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_hooks_loss_fn_and_on_step_are_used():
    loader = toy_loader(n=32)
    calls = {"hook": 0, "loss": 0, "steps": []}

    def hook(model, x, y, out):
        calls["hook"] += 1
        return 0.0 * out.sum()

    def loss_fn(out, y, x):
        calls["loss"] += 1
        return F.cross_entropy(out, y)

    fit(TinyConvNet(), loader, epochs=1, hooks=[hook], loss_fn=loss_fn,
        on_step=[lambda step, m: calls["steps"].append(step)], progress=False)
    assert calls["hook"] == calls["loss"] == len(loader) == 2
    assert calls["steps"] == [1, 2]


def test_fractional_epochs_and_max_batches():
    loader = toy_loader(n=64, batch_size=8)  # 8 batches
    steps = []
    fit(TinyConvNet(), loader, epochs=0.5, on_step=[lambda s, m: steps.append(s)], progress=False)
    assert steps[-1] == 4
    steps.clear()
    fit(TinyConvNet(), loader, epochs=2, max_batches=3, on_step=[lambda s, m: steps.append(s)], progress=False)
    assert steps[-1] == 6


def test_divergence_is_a_clear_error():
    with pytest.raises(EdgeslimError, match="diverged"):
        fit(TinyConvNet(), toy_loader(n=32), epochs=1, loss_fn=lambda o, y, x: o.sum() * float("nan"), progress=False)


def test_evaluate_unlabelled_gives_none():
    x = torch.randn(8, 1, 8, 8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.full((8,), -1)), batch_size=4)
    r = evaluate(TinyConvNet(), loader)
    assert r == {"top1": None, "loss": None, "n": 8}


def test_epoch_end_callbacks_run_between_epochs_and_may_stop_training():
    from edgeslim.train.loop import on_epoch_end

    seen = []
    model = TinyConvNet()
    with on_epoch_end(lambda e, m: seen.append((e, m.training))):
        fit(model, toy_loader(n=32, batch_size=16), epochs=3, progress=False)
    assert seen == [(1, True), (2, True)]  # not after the last epoch; the model is training
    fit(model, toy_loader(n=32, batch_size=16), epochs=2, progress=False)
    assert len(seen) == 2  # outside the block nothing is called

    class Stop(Exception):
        pass

    def stop(e, m):
        raise Stop(e)

    with on_epoch_end(stop), pytest.raises(Stop):
        fit(TinyConvNet(), toy_loader(n=32, batch_size=16), epochs=2, progress=False)


# -- reproducibility -------------------------------------------------------------------------------
def _weights(model):
    return [t.detach().clone() for t in model.state_dict().values()]


def _fit_fresh(loader, seed, init_seed=0, **kw):
    torch.manual_seed(init_seed)
    return fit(TinyConvNet(), loader, epochs=3, lr=0.05, seed=seed, progress=False, **kw)


def test_same_seed_gives_identical_weights_whatever_the_loader_went_through():
    loader = toy_loader(n=96, batch_size=16, shuffle=True, seed=0)
    a = _weights(_fit_fresh(loader, seed=7))
    for _ in loader:  # advance the loader's own shuffling generator: fit must not depend on it
        pass
    b = _weights(_fit_fresh(loader, seed=7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = _weights(_fit_fresh(loader, seed=8))  # another seed: another batch order, other weights
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_fit_puts_the_loader_generator_state_back():
    loader = toy_loader(n=64, batch_size=16, shuffle=True, seed=0)
    before = loader.generator.get_state()
    _fit_fresh(loader, seed=3)
    assert torch.equal(loader.generator.get_state(), before)


# -- warm-up and clipping --------------------------------------------------------------------------
class _Scalar(torch.nn.Module):
    """out = w (for every sample): with loss = scale * out.mean() the gradient of w is exactly scale."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.w.expand(x.shape[0], 1)


def _updates(scale, epochs_override=1, **kw):
    model, seen = _Scalar(), [0.0]
    deltas = []

    def record(step, m):
        deltas.append(seen[0] - m.w.item())
        seen[0] = m.w.item()

    fit(model, toy_loader(n=64, batch_size=8), epochs=epochs_override, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
        loss_fn=lambda out, y, x: scale * out.mean(), on_step=[record], progress=False, **kw)
    return deltas, fit_stats(model)


def test_linear_warmup_then_full_rate():
    deltas, stats = _updates(1.0, warmup_steps=4, clip_grad=0)
    assert deltas == pytest.approx([0.1 * k / 5 for k in (1, 2, 3, 4)] + [0.1] * 4, rel=1e-5)
    assert stats.warmup_steps == 4 and stats.clip_grad is None
    deltas, stats = _updates(1.0, warmup_steps=0, clip_grad=0)
    assert deltas == pytest.approx([0.1] * 8, rel=1e-5)


def test_default_warmup_is_a_short_share_of_the_steps():
    from edgeslim.train.loop import default_warmup

    assert [default_warmup(n) for n in (1, 8, 20, 21, 400, 1266, 2000, 10**6)] == [1, 1, 1, 2, 20, 64, 100, 100]
    _, stats = _updates(1.0)  # 8 steps
    assert stats.warmup_steps == 1
    deltas, stats = _updates(1.0, clip_grad=0, epochs_override=5)  # 40 steps: 2 of warm-up
    assert stats.warmup_steps == 2 and deltas[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1], rel=1e-5)


def test_gradient_norm_is_clipped():
    deltas, stats = _updates(100.0, warmup_steps=0)  # default max-norm 5
    assert deltas == pytest.approx([0.1 * 5] * 8, rel=1e-5)
    assert stats.clipped_steps == 8 and stats.clip_grad == 5.0
    deltas, stats = _updates(100.0, warmup_steps=0, clip_grad=0)
    assert deltas == pytest.approx([0.1 * 100] * 8, rel=1e-5) and stats.clipped_steps == 0
    deltas, _ = _updates(1.0, warmup_steps=0, clip_grad=2.0)  # under the limit: untouched
    assert deltas == pytest.approx([0.1] * 8, rel=1e-5)


@pytest.mark.parametrize("kw,match", [
    ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
    ({"warmup_steps": 2.5}, "warmup_steps must be an integer >= 0"),
    ({"clip_grad": -1.0}, "clip_grad must be a number >= 0"),
    ({"deadline": "soon"}, "deadline must be a time.monotonic"),
    ({"bn_recalibration": "sometimes"}, "bn_recalibration must be one of auto, always, off"),
    ({"bn_batches": 0}, "bn_batches must be a positive integer"),
    ({"max_batches": 0}, "max_batches must be a positive integer"),
])
def test_bad_options_are_usage_errors_naming_the_value(kw, match):
    with pytest.raises(UsageError, match=match):
        fit(TinyConvNet(), toy_loader(n=16), epochs=1, progress=False, **kw)


# -- divergence and deadlines ----------------------------------------------------------------------
def test_divergence_is_its_own_error_with_step_and_value():
    calls = []

    def loss_fn(o, y, x):
        calls.append(1)
        return F.cross_entropy(o, y) * (float("nan") if len(calls) == 3 else 1.0)

    with pytest.raises(TrainingDiverged, match="loss became nan at step 2") as e:
        fit(TinyConvNet(), toy_loader(n=64), epochs=1, loss_fn=loss_fn, progress=False)
    assert isinstance(e.value, EdgeslimError) and e.value.step == 2 and e.value.what == "loss"
    assert "--lr" in e.value.hint


def test_non_finite_gradient_norm_is_divergence_too():
    def loss_fn(o, y, x):  # finite value (0), NaN gradient (d sqrt(|t|)/dt at 0)
        return torch.sqrt((o - o.detach()).abs()).sum()

    with pytest.raises(TrainingDiverged, match="gradient norm became nan at step 0"):
        fit(TinyConvNet(), toy_loader(n=32), epochs=1, loss_fn=loss_fn, progress=False)


class _Clock:
    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        return self.now


def test_deadline_stops_between_epochs(monkeypatch):
    from edgeslim.train import loop

    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)
    steps = []

    def tick(step, m):  # one second per step; 2 steps per epoch
        steps.append(step)
        clock.now += 1.0

    with pytest.raises(TrainingStopped, match="after 2 of 5 epoch") as e:
        fit(TinyConvNet(), toy_loader(n=32, batch_size=16), epochs=5, deadline=103.0, on_step=[tick], progress=False)
    assert e.value.epochs_completed == 2 and e.value.steps == 4 and steps == [1, 2, 3, 4]
    assert isinstance(e.value, EdgeslimError)
    # a deadline already past: no step at all; a deadline never reached: the whole fit
    model = TinyConvNet()
    before = _weights(model)
    with pytest.raises(TrainingStopped) as e:
        fit(model, toy_loader(n=32, batch_size=16), epochs=2, deadline=clock.now, progress=False)
    assert e.value.epochs_completed == 0 and all(torch.equal(a, b) for a, b in zip(before, _weights(model)))
    steps.clear()
    fit(TinyConvNet(), toy_loader(n=32, batch_size=16), epochs=3, deadline=clock.now + 100, on_step=[tick],
        progress=False)
    assert steps == [1, 2, 3, 4, 5, 6]
