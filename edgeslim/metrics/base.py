"""The Metric seam: how well a runner does on a loader, as one number where higher is better."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

# One batch in, the model's output out: the first output (a Runner), or for metrics whose ``outputs``
# is "all" a tuple of every output (detection at batch 1: boxes (n, 4), scores (n,), labels (n,)).
Run = Callable[[np.ndarray], Any]
OUTPUTS = ("first", "all")
TASKS = ("classification", "detection", "segmentation")


@dataclasses.dataclass(frozen=True, eq=False)
class Score:
    """value: higher is better, in the metric's own points (top-1: percent, 0..100; mAP and mIoU: 0..100;
    a user function: its own); None when the data carries no labels.

    per_sample: one value per scored sample in the loader's order, or None when the value is not a mean
    of per-sample values (mAP, mIoU: the SLA then uses a bound that needs no per-sample values). Booleans
    are hits with ``value == 100 * mean(per_sample)`` (top-1, top-5); numbers are in the metric's points
    with ``value == mean(per_sample)`` (a user function's per-sample values).

    count: samples seen. extra: further figures by name, in the same points (mAP: ``map_50``, ``map_75``,
    ``mar_100``; mIoU: ``pixel_accuracy``), empty for most metrics."""

    value: float | None
    per_sample: np.ndarray | None
    count: int
    extra: dict[str, float | None] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", dict(self.extra))  # a copy: the caller's dict cannot change it

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Score):
            return NotImplemented
        same = (self.per_sample is None) == (other.per_sample is None)
        if same and self.per_sample is not None:
            same = np.array_equal(self.per_sample, other.per_sample)
        return same and self.value == other.value and self.count == other.count and self.extra == other.extra

    __hash__ = None  # equal Scores may hold arrays; they are not dict keys


@runtime_checkable
class Metric(Protocol):
    """Scores a runner on labelled batches.

    ``outputs`` says which runner to build for it: "first" (the model's first output for a whole batch:
    logits, class maps) or "all" (every output as a tuple, one image at a time: detection)."""

    name: str  # the registry name, e.g. "top1"
    outputs: str  # "first" | "all"

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


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def batches(loader: Any, max_batches: int | None):
    """The loader's batches, at most ``max_batches`` of them."""
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        yield batch
