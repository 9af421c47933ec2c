"""Metric functions of the kind a user writes, for tests: ``metric=recall_at_threshold`` in the API,
``--metric edgeslim.testing.metrics:recall_at_threshold`` on the command line.

Each takes ``(predict, loader)``: ``predict`` runs a numpy batch through the model (any runtime's runner
or ``edgeslim.metrics.torch_runner``) and gives its class scores; ``loader`` yields (x, y) batches.
"""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # the fixed score at which recall_at_threshold counts a sample as found
POSITIVE = 0  # the class whose recall it measures
NOT_A_FUNCTION = 0.5  # for the test that --metric names something that cannot be called


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def recall_at_threshold(predict, loader) -> float:
    """Recall of class POSITIVE at a fixed score threshold, in percent: of the samples labelled
    POSITIVE, those whose softmax score for it is at least THRESHOLD (one number, no per-sample values)."""
    found = positives = 0
    for x, y in loader:
        scores = _softmax(np.asarray(predict(_numpy(x)), dtype=np.float64))
        labels = _numpy(y)
        mask = labels == POSITIVE
        positives += int(mask.sum())
        found += int((scores[mask, POSITIVE] >= THRESHOLD).sum())
    return 100.0 * found / positives if positives else 0.0


def true_class_score(predict, loader) -> np.ndarray:
    """Each sample's softmax score for its own label, x 100: per-sample numbers in points (0..100),
    whose mean is the metric's value."""
    out = []
    for x, y in loader:
        scores = _softmax(np.asarray(predict(_numpy(x)), dtype=np.float64))
        labels = _numpy(y).astype(np.int64)
        out.append(100.0 * scores[np.arange(len(labels)), labels])
    return np.concatenate(out)
