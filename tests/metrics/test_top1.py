"""The Top1 metric: exact values from known logits, unlabelled data, and one Score whichever runner."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgeslim import metrics, runtimes
from edgeslim.core.errors import UsageError
from edgeslim.metrics import Score, torch_runner
from edgeslim.testing.models import TinyMLP, toy_loader


def _logits_loader(logits, labels, batch_size=2):
    """Batches whose x *is* the logits, so an identity runner outputs them."""
    return DataLoader(TensorDataset(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)),
                      batch_size=batch_size)


def _identity(x):
    return x


def test_known_logits_give_the_exact_value_and_per_sample_array():
    logits = [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.0, 0.0, 1.0]]
    labels = [0, 1, 0, 1, 2]  # right, right, wrong, wrong, right
    s = metrics.get("top1").evaluate(_identity, _logits_loader(logits, labels))
    assert s.value == pytest.approx(60.0) and s.count == 5
    assert s.per_sample.dtype == np.bool_ and s.per_sample.tolist() == [True, True, False, False, True]


def test_max_batches_limits_what_is_scored():
    logits = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    s = metrics.get().evaluate(_identity, _logits_loader(logits, [0, 0, 0, 0]), max_batches=1)
    assert s == Score(100.0, np.array([True, True]), 2)


def test_unlabelled_samples_are_not_scored():
    calls = []

    def run(x):
        calls.append(len(x))
        return x

    logits = [[1.0, 0.0]] * 4
    s = metrics.get().evaluate(run, _logits_loader(logits, [-1, -1, -1, -1]))
    assert s.value is None and s.per_sample is None and s.count == 4
    assert calls == []  # nothing is run for samples without labels
    mixed = metrics.get().evaluate(_identity, _logits_loader(logits, [0, 0, -1, -1]))
    assert mixed.value is None and mixed.per_sample is None and mixed.count == 4  # today's rule: no top-1


def test_an_unknown_metric_names_the_valid_ones():
    with pytest.raises(UsageError, match="no metric named 'nope'; the metrics are: map, miou, top1, top5") as e:
        metrics.get("nope")
    assert "package.module:function" in e.value.hint
    assert isinstance(metrics.get(), metrics.Metric) and metrics.get().name == "top1"


def test_torch_and_onnxruntime_runners_give_the_same_score(tmp_path):
    torch.manual_seed(0)
    model = TinyMLP().train()
    loader = toy_loader(n=48, batch_size=16)
    via_torch = metrics.get().evaluate(torch_runner(model), loader)
    assert not model.training  # the runner puts the model in eval mode
    rt = runtimes.get()
    rt.export(model, tmp_path / "m.onnx", torch.randn(1, 1, 8, 8))
    via_ort = metrics.get().evaluate(rt.load(tmp_path / "m.onnx", threads=1), loader)
    assert via_torch.value is not None and via_torch.count == 48
    assert via_torch == via_ort
    assert via_torch.value == pytest.approx(100.0 * via_torch.per_sample.mean())
