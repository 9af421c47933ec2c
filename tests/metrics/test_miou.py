"""miou: one confusion matrix over every labelled pixel, on hand-made masks."""
import numpy as np
import pytest
import torch

from edgeslim import metrics
from edgeslim.core.errors import DataError, ModelError

TRUTH = np.array([[[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 255, 255]]])
GUESS = np.array([[[0, 1, 1, 1],
                   [0, 0, 1, 0],
                   [2, 1, 0, 2]]])  # the last two pixels are ignored whatever is guessed there


def _loader(truth=TRUTH):
    x = torch.zeros(len(truth), 1, *truth.shape[1:])
    return [(x, torch.from_numpy(truth))]


def _logits(classes, k):
    return np.eye(k, dtype=np.float32)[classes].transpose(0, 3, 1, 2)  # (N, K, H, W)


def test_hand_made_masks_give_the_exact_mean_iou():
    # class 0: tp 3, fp 1, fn 1 -> 3/5; class 1: tp 3, fp 2, fn 1 -> 3/6; class 2: tp 1, fp 0, fn 1 -> 1/2
    want = 100 * (3 / 5 + 3 / 6 + 1 / 2) / 3
    s = metrics.get("miou").evaluate(lambda x: _logits(GUESS, 3), _loader())
    assert s.value == pytest.approx(want) and s.per_sample is None and s.count == 1
    assert s.extra == pytest.approx({"pixel_accuracy": 100 * 7 / 10})
    as_indices = metrics.get("miou").evaluate(lambda x: GUESS, _loader())
    assert as_indices == s  # class maps (N, H, W) score like scores (N, K, H, W)


def test_perfect_prediction_is_100_and_absent_classes_do_not_count():
    truth = np.array([[[0, 0], [3, 3]]])  # classes 1 and 2 appear nowhere
    s = metrics.get("miou").evaluate(lambda x: _logits(truth, 5), _loader(truth))
    assert s.value == pytest.approx(100.0)
    wrong = metrics.get("miou").evaluate(lambda x: _logits(np.array([[[0, 0], [4, 3]]]), 5), _loader(truth))
    # class 0: 1; class 3: 1/2; class 4 (predicted, never labelled): 0
    assert wrong.value == pytest.approx(100 * (1 + 0.5 + 0) / 3)


def test_confusion_accumulates_over_batches():
    truth = np.concatenate([TRUTH, TRUTH[:, ::-1]])
    guess = np.concatenate([GUESS, GUESS[:, ::-1]])
    loader = [(torch.zeros(1, 1, 3, 4), torch.from_numpy(truth[i:i + 1].copy())) for i in range(2)]
    answers = iter([_logits(guess[:1], 3), guess[1:]])
    s = metrics.get("miou").evaluate(lambda x: next(answers), loader)
    assert s.value == pytest.approx(100 * (3 / 5 + 3 / 6 + 1 / 2) / 3) and s.count == 2


def test_all_ignored_gives_no_value():
    s = metrics.get("miou").evaluate(lambda x: GUESS, _loader(np.full_like(TRUTH, 255)))
    assert s.value is None and s.count == 1


@pytest.mark.parametrize("out, message", [
    (np.zeros((1, 3, 2, 2)), "matching masks of shape (1, 3, 4); the model gave (1, 3, 2, 2)"),
    (np.full((1, 3, 4), 0.5), "must hold class indices, got fractions"),
    (np.full((1, 3, 4), -1), "predicted the class index -1"),
])
def test_bad_outputs_are_one_line(out, message):
    with pytest.raises(ModelError) as e:
        metrics.get("miou").evaluate(lambda x: out, _loader())
    assert message in e.value.message


def test_non_segmentation_batches_are_refused():
    with pytest.raises(DataError, match=r"integer class masks \(N, H, W\); got int64 of shape \(2,\)"):
        metrics.get("miou").evaluate(lambda x: x, [(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))])
    with pytest.raises(DataError, match="detection targets"):
        metrics.get("miou").evaluate(lambda x: x, [(torch.zeros(1, 1, 2, 2), [{"boxes": None}])])
    with pytest.raises(DataError, match="holds the class index -3"):
        metrics.get("miou").evaluate(lambda x: x, _loader(np.full_like(TRUTH, -3)))
