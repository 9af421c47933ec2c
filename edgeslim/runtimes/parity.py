"""How far one runtime's outputs are from another's (or from PyTorch's), for export checks.

Plain outputs are compared element by element. A detector's outputs at batch 1 (boxes (k, 4), scores
(k,), labels (k,), in this order, best first) are compared as sets of detections, so that two runtimes
which rank near-equal scores differently (ties, rounding) still compare equal: every detection of either
run with a score of at least MATCH_SCORE is matched with the detection of the same label in the other run
that is closest to it (the largest of its box coordinates' and its score's absolute differences), and the
difference is the worst such match (infinite when the other run has no detection of that label). A
detection that scores less than the other run's lowest kept score plus CUT_MARGIN needs no match there:
a fixed-k head keeps only its k best, so a near-equal score at the cut may fall on either side of it.
Outputs after the third are compared element by element.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MATCH_SCORE = 0.05  # detections below it are not matched themselves (they may be matched to)
CUT_MARGIN = 0.02  # a score this close to the other run's lowest kept one may have been cut off there


def is_detection(outs: Sequence[np.ndarray]) -> bool:
    """Whether ``outs`` read as one image's (or a batch of one's) boxes, scores and labels."""
    if len(outs) < 3:
        return False
    boxes, scores, labels = (_unbatch(np.asarray(o), d) for o, d in zip(outs[:3], (2, 1, 1)))
    return boxes.ndim == 2 and boxes.shape[1:] == (4,) and scores.ndim == 1 and labels.shape == scores.shape \
        and len(boxes) == len(scores)


def max_diff(refs: Sequence[np.ndarray], gots: Sequence[np.ndarray]) -> float:
    """The largest absolute difference between two runs' outputs (detections as sets, see the module)."""
    refs, gots = [np.asarray(r) for r in refs], [np.asarray(g) for g in gots]
    if len(refs) != len(gots):
        return float("inf")
    if is_detection(refs) and is_detection(gots):
        rest = [_diff(r, g) for r, g in zip(refs[3:], gots[3:])]
        return max([_detection_diff(_triple(refs), _triple(gots)), *rest])
    return max([_diff(r, g) for r, g in zip(refs, gots)], default=0.0)


def _diff(r: np.ndarray, g: np.ndarray) -> float:
    if r.shape != g.shape:
        return float("inf")
    return float(np.abs(r.astype(np.float64) - g.astype(np.float64)).max(initial=0.0))


def _unbatch(a: np.ndarray, ndim: int) -> np.ndarray:
    return a[0] if a.ndim == ndim + 1 and a.shape[0] == 1 else a


def _triple(outs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels = (_unbatch(o, d) for o, d in zip(outs[:3], (2, 1, 1)))
    return boxes.astype(np.float64), scores.astype(np.float64), labels.astype(np.int64)


def _detection_diff(a: tuple, b: tuple) -> float:
    worst = 0.0
    for (boxes, scores, labels), (o_boxes, o_scores, o_labels) in ((a, b), (b, a)):
        need = max(MATCH_SCORE, float(o_scores.min()) + CUT_MARGIN) if len(o_scores) else MATCH_SCORE
        for i in np.flatnonzero(scores >= need):
            same = o_labels == labels[i]
            if not same.any():
                return float("inf")
            cost = np.maximum(np.abs(o_boxes[same] - boxes[i]).max(1), np.abs(o_scores[same] - scores[i]))
            worst = max(worst, float(cost.min()))
    return worst
