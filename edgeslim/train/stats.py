"""What one ``fit`` did (``FitStats``), kept per model and for every ``record_fits()`` block around it."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import weakref
from typing import Iterable, Iterator

from torch import nn


@dataclasses.dataclass
class FitStats:
    """What one ``fit`` did. ``bn_recalibration``: batches averaged and BatchNorm layers re-estimated
    (0 and 0 when the running statistics had converged by themselves); ``bn_stale_weight``: the largest
    share the statistics from before training still had in any layer's running average before that."""

    steps: int = 0
    epochs_completed: int = 0
    warmup_steps: int = 0
    clip_grad: float | None = None
    clipped_steps: int = 0
    bn_recalibration: dict = dataclasses.field(default_factory=lambda: {"batches": 0, "layers": 0, "times": 0})
    bn_stale_weight: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_LAST: "weakref.WeakKeyDictionary[nn.Module, FitStats]" = weakref.WeakKeyDictionary()
_RECORDERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("edgeslim_fit_recorders", default=())


def fit_stats(model: nn.Module) -> FitStats | None:
    """The FitStats of the last ``fit`` that trained ``model`` (this very object), or None."""
    return _LAST.get(model)


@contextlib.contextmanager
def record_fits() -> Iterator[list[FitStats]]:
    """Inside the block, every ``fit`` appends its FitStats to the yielded list (also fits run deep
    inside a technique: a pruning fine-tune, a QAT pass, a search trial)."""
    runs: list[FitStats] = []
    token = _RECORDERS.set(_RECORDERS.get() + (runs,))
    try:
        yield runs
    finally:
        _RECORDERS.reset(token)


def recorded_fits() -> list[FitStats] | None:
    """The list of the innermost ``record_fits()`` block around this call, or None outside one."""
    stack = _RECORDERS.get()
    return stack[-1] if stack else None


def record_bn(details: dict) -> dict:
    """Put ``bn_report`` of the enclosing ``record_fits()`` block into a report's details (the writers
    of every command call this; outside a block, nothing is added)."""
    runs = recorded_fits()
    if runs is not None and "bn_recalibration" not in details:
        details["bn_recalibration"] = bn_report(runs)
    return details


def bn_report(runs: Iterable[FitStats]) -> dict:
    """What a command's report records as ``details["bn_recalibration"]`` for the fits it ran (the
    list of a ``record_fits()`` block): how many fits, how many re-estimated their BatchNorm
    statistics, on how many training batches in all, and the most layers one of them re-estimated."""
    runs = list(runs)
    done = [r.bn_recalibration for r in runs if r.bn_recalibration["layers"]]
    return {"fits": len(runs), "re_estimated": len(done), "batches": sum(d["batches"] for d in done),
            "layers": max((d["layers"] for d in done), default=0)}


def remember(model: nn.Module, stats: FitStats) -> None:
    """Record the stats of a fit that just trained ``model`` (``fit_stats``, every ``record_fits()``)."""
    _LAST[model] = stats
    for runs in _RECORDERS.get():
        runs.append(stats)
