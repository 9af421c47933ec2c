import pytest
import torch
import torch.nn.functional as F

from edgeslim.core.errors import EdgeslimError
from edgeslim.testing.models import TinyConvNet, toy_loader
from edgeslim.train import evaluate, fit


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
