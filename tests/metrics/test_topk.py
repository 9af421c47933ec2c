"""top5, the Score's extra figures, and the runner options every metric relies on."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgeslim import metrics
from edgeslim.core.errors import DataError, ModelError, UsageError
from edgeslim.metrics import Score, torch_runner


def _loader(logits, labels, batch_size=2):
    return DataLoader(TensorDataset(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)),
                      batch_size=batch_size)


def _identity(x):
    return x


def test_top5_counts_a_label_among_the_five_highest():
    logits = np.array([[9, 8, 7, 6, 5, 4, 3], [9, 8, 7, 6, 5, 4, 3], [1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 1]],
                      dtype=np.float32)
    labels = [4, 5, 2, 6]  # rank 5 (in), rank 6 (out), rank 5 (in), rank 1 (in)
    s = metrics.get("top5").evaluate(_identity, _loader(logits, labels))
    assert s.per_sample.tolist() == [True, False, True, True] and s.value == pytest.approx(75.0) and s.count == 4
    assert metrics.get("top1").evaluate(_identity, _loader(logits, labels)).value == pytest.approx(25.0)
    assert s.extra == {}


def test_top5_needs_more_than_five_classes_and_skips_unlabelled_data():
    with pytest.raises(ModelError, match="top5 needs more than 5 classes"):
        metrics.get("top5").evaluate(_identity, _loader(np.eye(5), [0, 1, 2, 3, 4]))
    s = metrics.get("top5").evaluate(_identity, _loader(np.eye(6), [-1] * 6))
    assert s.value is None and s.per_sample is None and s.count == 6


def test_topk_refuses_outputs_that_are_not_one_row_per_sample():
    with pytest.raises(ModelError, match=r"got outputs of shape \(2, 3, 1\) for 2 samples"):
        metrics.get("top1").evaluate(lambda x: x[:, :, None], _loader(np.eye(3)[:2], [0, 1]))


def test_topk_on_detection_or_segmentation_batches_says_which_metric_fits():
    boxes = [(torch.zeros(1, 1, 4, 4), [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])]
    with pytest.raises(DataError, match="top1 scores classification data.*detection targets") as e:
        metrics.get("top1").evaluate(_identity, boxes)
    assert "map" in e.value.hint
    masks = [(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64))]
    with pytest.raises(DataError, match=r"the labels have shape \(1, 4, 4\)") as e:
        metrics.get("top5").evaluate(_identity, masks)
    assert "miou" in e.value.hint


def test_score_extra_takes_part_in_equality_and_is_a_copy():
    figures = {"map_50": 80.0}
    a = Score(50.0, None, 3, extra=figures)
    figures["map_50"] = 1.0
    assert a.extra == {"map_50": 80.0}
    assert a == Score(50.0, None, 3, extra={"map_50": 80.0})
    assert a != Score(50.0, None, 3) and Score(50.0, None, 3) == Score(50.0, None, 3, extra={})
    assert Score(1.0, np.array([True]), 1) == Score(1.0, np.array([True]), 1)
    with pytest.raises(TypeError):
        hash(a)


class _ThreeOutputs(nn.Module):
    def forward(self, x):
        return x.sum((1, 2, 3)), x.mean((1, 2, 3)), torch.ones(len(x), dtype=torch.int64)


def test_torch_runner_gives_the_first_or_every_output():
    x = np.ones((2, 1, 2, 2), dtype=np.float32)
    first = torch_runner(_ThreeOutputs())(x)
    assert isinstance(first, np.ndarray) and first.tolist() == [4.0, 4.0]
    every = torch_runner(_ThreeOutputs(), outputs="all")(x)
    assert isinstance(every, tuple) and len(every) == 3 and every[2].dtype == np.int64
    single = torch_runner(nn.Identity(), outputs="all")(x)
    assert isinstance(single, tuple) and len(single) == 1 and single[0].shape == x.shape
    with pytest.raises(UsageError, match="outputs must be one of first, all, got 'some'"):
        torch_runner(nn.Identity(), outputs="some")


def test_each_metric_says_which_runner_and_task_it_needs():
    assert [metrics.outputs_of(metrics.get(n)) for n in ("top1", "top5", "map", "miou")] == \
        ["first", "first", "all", "first"]
    assert metrics.outputs_of(object()) == "first"
    assert [metrics.default_for(t) for t in metrics.TASKS] == ["top1", "map", "miou"]
    metrics.check_task(metrics.get("map"), "detection")
    with pytest.raises(UsageError, match="metric map scores detection, but fashion-mnist is classification data") as e:
        metrics.check_task(metrics.get("map"), "classification", "fashion-mnist")
    assert "--metric top1" in e.value.hint
    metrics.check_task(metrics.from_callable(lambda run, loader: 1.0), "segmentation")  # a user function fits all
    with pytest.raises(UsageError, match="unknown task 'ocr'"):
        metrics.default_for("ocr")
