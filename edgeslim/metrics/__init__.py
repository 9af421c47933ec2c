"""Metrics: how good a model is, through the same runner whichever runtime runs it (the Metric seam).

    score = edgeslim.metrics.get("top1").evaluate(runner, loader)     # Score(value, per_sample, count)
    score = edgeslim.metrics.get().evaluate(torch_runner(model), loader)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..core.errors import UsageError
from .base import Metric, Run, Score, to_numpy
from .top1 import Top1

_FACTORIES: dict[str, Callable[[], Metric]] = {}


def register(name: str, factory: Callable[[], Metric]) -> None:
    """Make ``get(name)`` return ``factory()``."""
    _FACTORIES[name] = factory


def names() -> list[str]:
    """The registered metric names, sorted."""
    return sorted(_FACTORIES)


def get(name: str = "top1") -> Metric:
    """The metric registered as ``name``; a UsageError naming the valid names otherwise."""
    if name not in _FACTORIES:
        raise UsageError(f"no metric named {name!r}; the metrics are: {', '.join(names())}")
    return _FACTORIES[name]()


def torch_runner(model: Any, device: Any = "cpu") -> Run:
    """A PyTorch model as a runner: numpy batch in, its (first) output as numpy out, computed on
    ``device`` without gradients. The model is moved to ``device`` and put in eval mode."""
    import torch

    dev = torch.device(device)
    model.to(dev).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(np.asarray(x)).to(dev))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return to_numpy(out)
    return run


register("top1", Top1)

__all__ = ["Metric", "Run", "Score", "Top1", "get", "names", "register", "to_numpy", "torch_runner"]
