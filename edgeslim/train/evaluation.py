"""evaluate: how a trained model does on a split, for every task (edgeslim.train.task).

Classification: top-1 (the Top1 metric over the model as a runner) and the mean cross-entropy.
Detection and segmentation: the mean loss the model trains with (computed with BatchNorm and dropout
as in eval), and the task's metric -- mAP (``map``) or mean IoU (``miou``) from edgeslim.metrics,
in points (0..100) -- when that metric is registered.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .loop import _device_of, _loader, pick_device
from .task import loss_for, loss_mode, resolve_task, to_device

METRIC = {"classification": "top1", "detection": "map", "segmentation": "miou"}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, *, max_batches: int | None = None,
             device: str | torch.device | None = None, task: str | None = None) -> dict[str, Any]:
    """Classification: {"top1": percent, "loss": mean cross-entropy, "n"}; both None when the data has no
    labels. Detection / segmentation: {"loss": mean training loss, "map" / "miou": points or None, "n"}.
    ``task``: as ``fit`` decides it (the caller's, else the data's, else the model's)."""
    task = resolve_task(model, loader, task)
    loader = _loader(loader, "test")
    home, dev = _device_of(model), pick_device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        if task == "classification":
            return _evaluate(model, loader, dev, max_batches)
        return _evaluate_dense(model, loader, dev, max_batches, task)
    finally:
        model.train(was_training)
        if home is not None and home != dev:
            model.to(home)


def task_score(model: nn.Module, loader: Any, *, max_batches: int | None = None, task: str | None = None) -> float | None:
    """The figure of the task's default metric (top-1 %, mAP or mIoU points) from ``evaluate``; None
    without labels."""
    task = resolve_task(model, loader, task)
    return evaluate(model, loader, max_batches=max_batches, task=task)[METRIC[task]]


def _evaluate(model, loader, dev, max_batches) -> dict[str, Any]:
    """Top-1 from the Top1 metric over the model as a runner; the loss from the same outputs."""
    from ..metrics import get as get_metric, torch_runner

    run, loss = torch_runner(model, dev), {"sum": 0.0, "y": None}

    def batches():  # the labels of the batch being scored, for the loss of its outputs
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                return
            loss["y"] = y
            yield x, y

    def run_and_loss(x):
        out = run(x)
        y = loss["y"]
        if y is not None and not (y < 0).any():
            loss["sum"] += F.cross_entropy(torch.from_numpy(out), y.cpu(), reduction="sum").item()
        return out

    score = get_metric("top1").evaluate(run_and_loss, batches())
    if score.value is None:
        return {"top1": None, "loss": None, "n": score.count}
    return {"top1": score.value, "loss": loss["sum"] / score.count, "n": score.count}



def _evaluate_dense(model, loader, dev, max_batches, task: str) -> dict[str, Any]:
    loss_fn, total, n = loss_for(model, task), 0.0, 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(dev), to_device(y, dev)
        if task == "detection":
            with loss_mode(model):  # a detector's loss needs its training-mode outputs
                loss = loss_fn(model(x), y)
        else:
            loss = loss_fn(model(x), y)
        total += float(loss) * x.shape[0]
        n += x.shape[0]
    model.eval()
    name = METRIC[task]
    return {"loss": total / n if n else None, name: _metric(model, loader, dev, max_batches, name), "n": n}


def _metric(model, loader, dev, max_batches, name: str) -> float | None:
    """The task's metric over the model as a runner, or None when edgeslim.metrics has none by that name."""
    from .. import metrics

    if name not in metrics.names():
        return None
    metric = metrics.get(name)
    run = metrics.torch_runner(model, dev, outputs=getattr(metric, "outputs", "first"))
    return metric.evaluate(run, loader, max_batches=max_batches).value
