"""The Metric seam: how well a runner does on a loader, as one number where higher is better."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]  # one batch in, the first output out (a Runner)


@dataclasses.dataclass(frozen=True, eq=False)
class Score:
    """value: higher is better, in the metric's own points (top-1: percent, 0..100); None when the
    data carries no labels. per_sample: one value per scored sample in the loader's order (top-1: a
    bool per image), None when there are none. count: samples seen."""

    value: float | None
    per_sample: np.ndarray | None
    count: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Score):
            return NotImplemented
        same = (self.per_sample is None) == (other.per_sample is None)
        if same and self.per_sample is not None:
            same = np.array_equal(self.per_sample, other.per_sample)
        return same and self.value == other.value and self.count == other.count


@runtime_checkable
class Metric(Protocol):
    """Scores a runner on labelled batches."""

    name: str  # the registry name, e.g. "top1"

    def evaluate(self, run: Run, loader: Any, *, max_batches: int | None = None) -> Score:
        """Run every (x, y) batch of ``loader`` (the first ``max_batches``) through ``run``; the Score."""
        ...


def to_numpy(a: Any) -> np.ndarray:
    """A batch (torch tensor or array-like) as a numpy array, without a copy where none is needed."""
    if hasattr(a, "detach"):
        a = a.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        return a.numpy()
    return np.asarray(a)
