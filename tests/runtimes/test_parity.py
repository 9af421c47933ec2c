"""Output comparison for export checks: plain outputs element-wise, detections as sets."""
import numpy as np
import pytest

from edgeslim.runtimes.parity import is_detection, max_diff


def _det(boxes, scores, labels):
    return [np.asarray(boxes, np.float32)[None], np.asarray(scores, np.float32)[None], np.asarray(labels)[None]]


def test_plain_outputs_compare_element_by_element():
    a = [np.array([[1.0, 2.0]]), np.array([3.0])]
    assert max_diff(a, [np.array([[1.0, 2.5]]), np.array([3.0])]) == 0.5
    assert max_diff(a, a[:1]) == float("inf") and max_diff(a, [a[0], np.zeros(2)]) == float("inf")


def test_detections_tied_in_score_compare_equal_in_either_order():
    ref = _det([[0, 0, 4, 4], [8, 8, 9, 9], [1, 1, 2, 2]], [0.7, 0.7, 0.0], [1, 3, 0])
    got = _det([[8, 8, 9, 9], [0, 0, 4, 4], [5, 5, 6, 6]], [0.7, 0.7, 0.0], [3, 1, 0])  # fill entry differs too
    assert is_detection(ref) and max_diff(ref, got) == 0.0
    moved = _det([[8, 8, 9.25, 9], [0, 0, 4, 4], [5, 5, 6, 6]], [0.7, 0.7, 0.0], [3, 1, 0])
    assert max_diff(ref, moved) == 0.25
    weaker = _det([[8, 8, 9, 9], [0, 0, 4, 4], [5, 5, 6, 6]], [0.7, 0.0, 0.0], [3, 1, 0])
    assert max_diff(ref, weaker) == pytest.approx(0.7)  # the label-1 detection's score fell from 0.7 to 0
    other_label = _det([[8, 8, 9, 9], [0, 0, 4, 4], [5, 5, 6, 6]], [0.7, 0.7, 0.0], [3, 2, 0])
    assert max_diff(ref, other_label) == float("inf")
    assert not is_detection([np.zeros((1, 10)), np.zeros(3), np.zeros(3)])


def test_a_detection_at_the_top_k_cut_needs_no_match():
    """Both runs keep their 3 best; the third is a near-tie that each broke another way."""
    ref = _det([[0, 0, 4, 4], [8, 8, 9, 9], [1, 1, 2, 2]], [0.9, 0.5, 0.3], [1, 3, 5])
    got = _det([[0, 0, 4, 4], [8, 8, 9, 9], [20, 20, 30, 30]], [0.9, 0.5, 0.305], [1, 3, 6])
    assert max_diff(ref, got) == pytest.approx(0.0, abs=1e-6)
    wrong = _det([[0, 0, 4, 4], [1, 1, 2, 2], [8, 8, 9, 9]], [0.9, 0.3, 0.2], [1, 5, 3])
    assert max_diff(ref, wrong) == pytest.approx(0.3)  # well above the cut: the 0.5 detection fell to 0.2
