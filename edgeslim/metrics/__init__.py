"""Metrics: how good a model is, through the same runner whichever runtime runs it (the Metric seam).

    score = edgeslim.metrics.get("top1").evaluate(runner, loader)     # Score(value, per_sample, count, extra)
    score = edgeslim.metrics.get().evaluate(torch_runner(model), loader)
    m = edgeslim.metrics.resolve("map")                # a name, a callable, or "package.module:function"
    score = m.evaluate(torch_runner(model, outputs=m.outputs), data.test)

Registered: top1 (default for classifiers), top5, map (COCO mAP@[.5:.95], detection), miou (mean IoU,
segmentation). A user function ``(predict, loader) -> float | per-sample values`` is one too.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..core.errors import UsageError
from .base import OUTPUTS, TASKS, Metric, Run, Score, to_numpy
from .detection import MeanAP
from .segmentation import MeanIoU
from .top1 import Top1, Top5, TopK
from .user import FORM, UserMetric, import_function

_FACTORIES: dict[str, Callable[[], Metric]] = {}
DEFAULTS = {"classification": "top1", "detection": "map", "segmentation": "miou"}


def register(name: str, factory: Callable[[], Metric]) -> None:
    """Make ``get(name)`` return ``factory()``."""
    _FACTORIES[name] = factory


def names() -> list[str]:
    """The registered metric names, sorted."""
    return sorted(_FACTORIES)


def get(name: str = "top1") -> Metric:
    """The metric registered as ``name``; a UsageError naming the valid names otherwise."""
    if name not in _FACTORIES:
        raise UsageError(f"no metric named {name!r}; the metrics are: {', '.join(names())}",
                         hint=f"or a function of your own: {FORM}")
    return _FACTORIES[name]()


def from_callable(fn: Callable, name: str | None = None, *, outputs: str = "first") -> UserMetric:
    """A Metric around the user's ``fn(predict, loader)`` returning a number or per-sample numbers."""
    return UserMetric(fn, name, outputs=outputs)


def resolve(metric: Any = None) -> Metric:
    """A Metric from what the caller gave: None (top1), a registered name, a Metric, a callable
    ``(predict, loader) -> ...``, or a ``package.module:function`` text, imported here and only here
    because the caller named it (a CLI argument or an API call, never a file)."""
    if metric is None:
        return get()
    if isinstance(metric, str):
        text = metric.strip()
        if text in _FACTORIES:
            return get(text)
        if ":" in text:
            return UserMetric(import_function(text), text)
        return get(text)  # the UsageError listing the names
    if hasattr(metric, "evaluate") and hasattr(metric, "name"):
        return metric
    if callable(metric):
        return UserMetric(metric)
    raise UsageError(f"metric must be a name, a callable or {FORM}, got {type(metric).__name__}",
                     hint=f"the metrics are: {', '.join(names())}")


def default_for(task: str) -> str:
    """The metric a task is scored with unless the user names one: top1, map or miou."""
    if task not in DEFAULTS:
        raise UsageError(f"unknown task {task!r}; the tasks are: {', '.join(TASKS)}")
    return DEFAULTS[task]


def check_task(metric: Metric, task: str, data: str = "the data") -> None:
    """A UsageError when ``metric`` scores another task than ``task`` (a user function fits any)."""
    fits = getattr(metric, "task", None)
    if fits is not None and fits != task:
        raise UsageError(f"metric {metric.name} scores {fits}, but {data} is {task} data",
                         hint=f"use --metric {default_for(task)} (metric={default_for(task)!r})")


def outputs_of(metric: Any) -> str:
    """Which runner a metric needs: "first" (the default) or "all" (every output, as a tuple)."""
    return getattr(metric, "outputs", "first")


def torch_runner(model: Any, device: Any = "cpu", *, outputs: str = "first") -> Run:
    """A PyTorch model as a runner: numpy batch in, numpy out, computed on ``device`` without gradients.

    ``outputs="first"``: the first output as one array; ``"all"``: every output as a tuple of arrays (a
    tensor is a 1-tuple, a dict gives its values in order). The model is moved to ``device`` and put in
    eval mode."""
    import torch

    if outputs not in OUTPUTS:
        raise UsageError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
    dev = torch.device(device)
    model.to(dev).eval()

    def run(x: np.ndarray):
        with torch.no_grad():
            out = model(torch.from_numpy(np.asarray(x)).to(dev))
        if outputs == "all":
            parts = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else (out,)
            return tuple(to_numpy(o) for o in parts)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return to_numpy(out)
    return run


register("top1", Top1)
register("top5", Top5)
register("map", MeanAP)
register("miou", MeanIoU)

__all__ = ["DEFAULTS", "FORM", "MeanAP", "MeanIoU", "Metric", "OUTPUTS", "Run", "Score", "TASKS", "Top1", "Top5",
           "TopK", "UserMetric", "check_task", "default_for", "from_callable", "get", "names", "outputs_of",
           "register", "resolve", "to_numpy", "torch_runner"]
