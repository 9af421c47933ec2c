"""The user's own metric: from_callable, resolve, and every bad return a function can give."""
import math
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgeslim import metrics
from edgeslim.core.errors import DataError, EdgeslimError, UsageError
from edgeslim.metrics import Score, UserMetric


def _loader(n=6, batch_size=2):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    return DataLoader(TensorDataset(x, torch.arange(n) % 2), batch_size=batch_size)


def _identity(x):
    return x


def accuracy_like(predict, loader):
    """A per-sample metric: 1 - |prediction - label| for every sample."""
    out = []
    for x, y in loader:
        out += (1.0 - np.abs(predict(x.numpy())[:, 0] - y.numpy())).tolist()
    return out


def test_a_number_is_the_value():
    m = metrics.from_callable(lambda predict, loader: 0.75, name="mine")
    s = m.evaluate(_identity, _loader())
    assert m.name == "mine" and m.outputs == "first" and s == Score(0.75, None, 0)


def test_counts_the_samples_the_function_reads():
    def mean_x(predict, loader):
        return float(np.mean([predict(x.numpy()).mean() for x, _ in loader]))

    s = metrics.from_callable(mean_x).evaluate(_identity, _loader(), max_batches=2)
    assert s.value == pytest.approx(1.5) and s.count == 4  # two batches of two
    assert metrics.from_callable(mean_x).name.endswith(":test_counts_the_samples_the_function_reads.<locals>.mean_x")


def test_per_sample_floats_give_their_mean_and_per_sample_values():
    s = metrics.from_callable(accuracy_like).evaluate(_identity, _loader())
    want = 1.0 - np.abs(np.arange(6) - np.arange(6) % 2)
    assert s.per_sample.dtype == np.float64 and s.per_sample.tolist() == want.tolist()
    assert s.value == pytest.approx(want.mean()) and s.count == 6


def test_per_sample_booleans_are_hits_in_percent():
    def hits(predict, loader):
        return torch.cat([(torch.from_numpy(predict(x.numpy()))[:, 0] % 2 == y) for x, y in loader])

    s = metrics.from_callable(hits).evaluate(_identity, _loader())
    assert s.per_sample.dtype == np.bool_ and s.value == pytest.approx(100.0) and s.count == 6


@pytest.mark.parametrize("result", [np.float32(2.5), np.int64(2), torch.tensor(2.5), np.array(2.5), 3])
def test_numpy_and_torch_scalars_are_numbers(result):
    s = metrics.from_callable(lambda predict, loader: result).evaluate(_identity, _loader())
    assert s.value == pytest.approx(float(result))


@pytest.mark.parametrize("result, message", [
    (float("nan"), "returned nan, not a finite number"),
    (math.inf, "returned inf, not a finite number"),
    ([1.0, float("nan"), 2.0, 1.0, 1.0, 1.0], "returned nan for sample 1, not a finite number"),
    ("93.1", "returned str, expected a number or a sequence of per-sample numbers"),
    (None, "returned NoneType, expected a number"),
    ({"acc": 1.0}, "returned dict, expected a number"),
    (True, "returned a bool (True), not a number"),
    ([], "returned no per-sample values"),
    ([1.0, "x"], "returned a sequence holding str at position 1, expected numbers"),
    ([True, 0.5], "mixing booleans and numbers"),
    (np.zeros((2, 3)), "returned an array of float64 with shape (2, 3), expected one number per sample"),
])
def test_bad_returns_are_one_line_naming_the_function(result, message):
    m = metrics.from_callable(lambda predict, loader: result, name="pkg.mod:score")
    with pytest.raises(EdgeslimError) as e:
        m.evaluate(_identity, [])
    assert e.value.message.startswith("metric pkg.mod:score ") and message in e.value.message
    assert "\n" not in e.value.message and e.value.hint


def test_per_sample_values_must_match_the_samples_read():
    def short(predict, loader):
        list(loader)
        return [1.0, 0.0]

    with pytest.raises(EdgeslimError, match="returned 2 per-sample values for the 6 samples it read"):
        metrics.from_callable(short).evaluate(_identity, _loader())


def test_an_exception_is_one_line_naming_the_function():
    def broken(predict, loader):
        raise ValueError("no such column\nwith a second line")

    with pytest.raises(EdgeslimError) as e:
        metrics.from_callable(broken, name="mine").evaluate(_identity, _loader())
    assert e.value.message == "metric mine raised ValueError: no such column"
    assert type(e.value) is EdgeslimError and e.value.__cause__ is None


def test_edgeslim_errors_from_the_loader_pass_through():
    def reads(predict, loader):
        raise DataError("imagefolder: cannot read image x.png")

    with pytest.raises(DataError, match="cannot read image x.png"):
        metrics.from_callable(reads).evaluate(_identity, _loader())


def test_the_loader_keeps_its_attributes_and_length():
    seen = {}

    def look(predict, loader):
        seen.update(n=len(loader), dataset=len(loader.dataset), batch_size=loader.batch_size)
        return 1.0

    metrics.from_callable(look).evaluate(_identity, _loader(), max_batches=2)
    assert seen == {"n": 2, "dataset": 6, "batch_size": 2}


def test_from_callable_checks_its_arguments():
    with pytest.raises(UsageError, match="a metric function must be callable, got int"):
        metrics.from_callable(3)
    with pytest.raises(UsageError, match="outputs must be one of first, all"):
        metrics.from_callable(accuracy_like, outputs="every")
    assert metrics.from_callable(accuracy_like, outputs="all").outputs == "all"


def test_resolve_names_callables_and_metrics():
    assert metrics.resolve().name == "top1" and metrics.resolve("map").name == "map"
    assert metrics.resolve(" top5 ").name == "top5"
    m = metrics.resolve(accuracy_like)
    assert isinstance(m, UserMetric) and isinstance(m, metrics.Metric) and m.fn is accuracy_like
    top = metrics.get("top1")
    assert metrics.resolve(top) is top
    with pytest.raises(UsageError, match="no metric named 'acc'; the metrics are: map, miou, top1, top5"):
        metrics.resolve("acc")
    with pytest.raises(UsageError, match="metric must be a name, a callable or package.module:function, got int"):
        metrics.resolve(5)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "NOT_A_FUNCTION = 3\n"
        "def half(predict, loader):\n    return 0.5\n"
        "class Holder:\n    @staticmethod\n    def score(predict, loader):\n        return [1.0, 2.0]\n")
    (tmp_path / "broken_metrics.py").write_text("raise RuntimeError('needs a licence server')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("my_metrics", "broken_metrics"):
        sys.modules.pop(name, None)


def test_resolve_imports_a_module_function_the_caller_named(user_module):
    m = metrics.resolve("my_metrics:half")
    assert m.name == "my_metrics:half" and m.evaluate(_identity, []).value == 0.5
    assert metrics.resolve("my_metrics:Holder.score").evaluate(_identity, []).value == pytest.approx(1.5)


@pytest.mark.parametrize("text, message", [
    ("no_such_module_xyz:fn", "metric 'no_such_module_xyz:fn': no module named 'no_such_module_xyz'"),
    ("my_metrics:missing", "metric 'my_metrics:missing': my_metrics has no attribute 'missing'"),
    ("my_metrics:NOT_A_FUNCTION", "my_metrics.NOT_A_FUNCTION is a int, not a function"),
    ("broken_metrics:fn", "importing broken_metrics raised RuntimeError: needs a licence server"),
    ("my metrics:fn", "is not a metric name nor package.module:function"),
    ("my_metrics:", "is not a metric name nor package.module:function"),
])
def test_resolve_bad_imports_are_one_usage_line(user_module, text, message):
    with pytest.raises(UsageError) as e:
        metrics.resolve(text)
    assert message in e.value.message and "\n" not in e.value.message and e.value.exit_code == 2
