"""map: COCO mAP through torchmetrics on hand-made predictions, checked against pycocotools itself."""
import contextlib
import io

import numpy as np
import pytest
import torch

from edgeslim import metrics
from edgeslim.core.errors import DataError, ModelError

pytest.importorskip("torchmetrics")
pycocotools = pytest.importorskip("pycocotools")

TARGETS = [
    {"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 62]]), "labels": torch.tensor([0, 1])},
    {"boxes": torch.tensor([[5.0, 5, 20, 25]]), "labels": torch.tensor([2])},
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image with no objects
]


def _loader(targets=TARGETS, batch_size=2):
    """Batches whose x[:, 0, 0, 0] is the image's index, so a runner can look its answer up."""
    x = torch.zeros(len(targets), 1, 4, 4)
    x[:, 0, 0, 0] = torch.arange(len(targets), dtype=torch.float32)
    return [(x[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, len(targets), batch_size)]


def _runner(answers):
    """A detection runner answering (boxes, scores, labels) per image from a table, batch 1."""
    def run(x):
        assert x.shape[0] == 1  # the metric runs one image at a time
        return answers[int(x[0, 0, 0, 0])]
    return run


def _answers(shift=0.0, extra=None):
    out = []
    for t in TARGETS:
        boxes = t["boxes"].numpy() + shift
        out.append((boxes, np.linspace(0.9, 0.5, len(boxes)).astype(np.float32), t["labels"].numpy()))
    if extra is not None:
        out[0] = tuple(np.concatenate([a, b]) for a, b in zip(out[0], extra))
    return out


def test_perfect_predictions_score_100():
    s = metrics.get("map").evaluate(_runner(_answers()), _loader())
    assert s.value == pytest.approx(100.0) and s.per_sample is None and s.count == 3
    assert s.extra == pytest.approx({"map_50": 100.0, "map_75": 100.0, "mar_100": 100.0})


def test_shifted_boxes_score_lower_and_mAP50_is_reported():
    perfect = metrics.get("map").evaluate(_runner(_answers()), _loader())
    shifted = metrics.get("map").evaluate(_runner(_answers(shift=3.0)), _loader())
    assert 0 < shifted.value < perfect.value
    assert shifted.extra["map_50"] == pytest.approx(100.0)  # still IoU > 0.5 for every box
    assert shifted.extra["map_75"] < 100.0


def _pycocotools_map(answers, targets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i, "width": 100, "height": 100} for i in range(len(targets))]
    cats = [{"id": c} for c in range(3)]
    gts, dts = [], []
    for i, (t, (boxes, scores, labels)) in enumerate(zip(targets, answers)):
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": c, "iscrowd": 0,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            dts.append({"image_id": i, "category_id": int(c), "score": s,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts, "categories": cats}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dts), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100 * ev.stats[0], 100 * ev.stats[1]


def test_agrees_with_pycocotools_on_a_small_case():
    false_positive = (np.array([[50.0, 5, 70, 20], [12, 11, 31, 29]], dtype=np.float32),
                      np.array([0.95, 0.4], dtype=np.float32), np.array([0, 2]))
    answers = _answers(shift=1.5, extra=false_positive)
    s = metrics.get("map").evaluate(_runner(answers), _loader())
    want, want_50 = _pycocotools_map(answers, TARGETS)
    assert 0 < s.value < 100
    assert s.value == pytest.approx(want, abs=1e-3) and s.extra["map_50"] == pytest.approx(want_50, abs=1e-3)


def test_no_ground_truth_gives_no_value():
    empty = [TARGETS[2]] * 2
    s = metrics.get("map").evaluate(_runner([(np.zeros((0, 4)), np.zeros(0), np.zeros(0))] * 2), _loader(empty))
    assert s.value is None and s.count == 2


def test_a_batch_axis_of_one_and_float_labels_are_accepted():
    answers = [tuple(a[None] for a in (b, s, c.astype(np.float32))) for b, s, c in _answers()]
    assert metrics.get("map").evaluate(_runner(answers), _loader()).value == pytest.approx(100.0)


@pytest.mark.parametrize("answer, message", [
    (np.zeros((1, 5)), "the runner gave one ndarray of shape (1, 5)"),
    ((np.zeros((2, 4)), np.zeros(2)), "the runner gave 2 outputs"),
    ((np.zeros((2, 5)), np.zeros(2), np.zeros(2)), "got shapes (2, 5), (2,), (2,)"),
    ((np.zeros((2, 4)), np.zeros(3), np.zeros(3)), "got shapes (2, 4), (3,), (3,)"),
    ((np.full((1, 4), np.nan), np.ones(1), np.zeros(1)), "NaN or infinite box or score"),
    ((np.zeros((1, 4)), np.ones(1), np.array([0.5])), "labels must be class indices, got 0.5"),
])
def test_bad_detection_outputs_are_one_line(answer, message):
    with pytest.raises(ModelError) as e:
        metrics.get("map").evaluate(lambda x: answer, _loader())
    assert message in e.value.message and "\n" not in e.value.message
    if "runner gave" in message:
        assert "outputs='all'" in e.value.hint


def test_classification_batches_are_refused():
    loader = [(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))]
    with pytest.raises(DataError, match="map scores detection data, but the batches' labels are a Tensor"):
        metrics.get("map").evaluate(lambda x: x, loader)


def test_a_torch_detector_through_torch_runner_outputs_all():
    class Oracle(torch.nn.Module):  # answers from the image itself: a bright square is a class-1 object
        def forward(self, x):
            ys, xs = torch.nonzero(x[0, 0] > 0.5, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            return box, torch.ones(1), torch.ones(1, dtype=torch.int64)

    x = torch.zeros(3, 1, 16, 16)
    targets = []
    for i in range(3):
        x[i, 0, 2 + i:8 + 2 * i, 3:9] = 1.0
        targets.append({"boxes": torch.tensor([[3.0, 2 + i, 9, 8 + 2 * i]]), "labels": torch.tensor([1])})
    m = metrics.get("map")
    s = m.evaluate(metrics.torch_runner(Oracle(), outputs=m.outputs), [(x, targets)])
    assert s.value == pytest.approx(100.0)
