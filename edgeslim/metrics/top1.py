"""Top-1 accuracy: the share of samples whose highest output is their label, in percent."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Run, Score, to_numpy


class Top1:
    """value: percent correct (0..100); per_sample: a bool per image, True where correct.

    Unlabelled data (any label < 0, e.g. ``synthetic:``) is not run and gives value and per_sample
    None; count is every sample seen either way."""

    name = "top1"

    def evaluate(self, run: Run, loader: Any, *, max_batches: int | None = None) -> Score:
        hits: list[np.ndarray] = []
        total, labelled = 0, True
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            y = to_numpy(y)
            total += len(y)
            if not labelled or (y < 0).any():
                labelled = False
                continue
            out = np.asarray(run(to_numpy(x)))
            hits.append(out.argmax(1) == y)
        if not labelled:
            return Score(None, None, total)
        correct = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
        return Score(100.0 * int(correct.sum()) / total if total else None, correct, total)
