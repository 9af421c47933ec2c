"""Top-k accuracy: the share of samples whose label is among their k highest outputs, in percent."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import DataError, ModelError
from .base import Run, Score, batches, to_numpy


class TopK:
    """value: percent correct (0..100); per_sample: a bool per image, True where correct.

    Unlabelled data (any label < 0, e.g. ``synthetic:``) is not run and gives value and per_sample
    None; count is every sample seen either way."""

    name = "topk"
    outputs = "first"
    task = "classification"
    k = 1

    def evaluate(self, run: Run, loader: Any, *, max_batches: int | None = None) -> Score:
        hits: list[np.ndarray] = []
        total, labelled = 0, True
        for x, y in batches(loader, max_batches):
            y = _labels(y, self.name)
            total += len(y)
            if not labelled or (y < 0).any():
                labelled = False
                continue
            hits.append(self._hits(np.asarray(run(to_numpy(x))), y))
        if not labelled:
            return Score(None, None, total)
        correct = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
        return Score(100.0 * int(correct.sum()) / total if total else None, correct, total)

    def _hits(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        if out.ndim != 2 or len(out) != len(y):
            raise ModelError(f"{self.name} needs one row of class scores per sample: got outputs of shape "
                             f"{tuple(out.shape)} for {len(y)} samples")
        if self.k == 1:
            return out.argmax(1) == y
        if out.shape[1] <= self.k:
            raise ModelError(f"{self.name} needs more than {self.k} classes (with {out.shape[1]} every sample "
                             f"scores 100%)", hint="use top1")
        best = np.argpartition(-out, self.k - 1, axis=1)[:, : self.k]
        return (best == y[:, None]).any(1)


class Top1(TopK):
    name = "top1"
    k = 1


class Top5(TopK):
    """Top-5: correct when the label is among the 5 highest outputs; needs more than 5 classes."""

    name = "top5"
    k = 5


def _labels(y: Any, name: str) -> np.ndarray:
    if isinstance(y, (list, tuple)) and y and isinstance(y[0], dict):
        raise DataError(f"{name} scores classification data (one label per image), but the batches hold "
                        "detection targets", hint="use map for detection data")
    y = to_numpy(y)
    if y.ndim != 1:
        raise DataError(f"{name} scores classification data (one label per image), but the labels have shape "
                        f"{tuple(y.shape)}", hint="use miou for segmentation masks, map for detection")
    return y
