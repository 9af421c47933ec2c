"""The task seam of the trainer: which loss trains a model, and how its batches travel.

    task = resolve_task(model, data)          # "classification" | "detection" | "segmentation"
    loss = loss_for(model, task)              # loss(outputs, targets) -> scalar tensor

- classification: ``F.cross_entropy(logits, labels)`` (what ``fit`` always did), or the model's
  ``classification_loss`` (DeiT: its class and distillation heads);
- detection: the model's own ``detection_loss(outputs, targets)`` on the outputs of its
  training-mode forward (edgeslim's ``tinydet`` and the torchvision detector wrappers have one),
  targets a list of {"boxes", "labels"} dicts, one per image;
- segmentation: the model's ``segmentation_loss`` if it has one, else cross-entropy over the
  per-pixel logits (N, K, H, W) against int64 masks (N, H, W) with 255 = ignore.

The task comes from, in order: the caller, the data (``meta.task``), the model (its ``task``
attribute), else classification; a model that declares another task than the data's is an error.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.errors import DataError, UsageError
from ..models.zoo import TASKS

IGNORE_INDEX = 255  # segmentation masks: pixels with this value count in no loss and no metric
TaskLoss = Callable[[Any, Any], Tensor]


def declared_task(model: nn.Module) -> str | None:
    """The task a model says it serves (its ``task`` attribute, when that names one of TASKS), or None."""
    task = getattr(model, "task", None)
    return task if task in TASKS else None


def resolve_task(model: nn.Module, data: Any = None, task: str | None = None) -> str:
    """The task ``model`` trains for on ``data`` (see the module docstring); one UsageError when the
    caller, the data and the model disagree."""
    data_task = getattr(getattr(data, "meta", None), "task", None)
    model_task = declared_task(model)
    for who, value in (("task", task), ("the data's task", data_task)):
        if value is not None and value not in TASKS:
            raise UsageError(f"{who} is {value!r}, not one of {', '.join(TASKS)}")
    chosen = task or data_task or model_task or "classification"
    if data_task is not None and chosen != data_task:
        raise UsageError(f"asked to train for {chosen}, but the data is for {data_task}")
    if model_task is not None and model_task != chosen:
        raise UsageError(f"{type(model).__name__} is a {model_task} model; the data is for {chosen}",
                         hint=f"choose a {chosen} model ({_examples(chosen)}) or {model_task} data")
    return chosen


def _examples(task: str) -> str:
    return {"classification": "resnet20, lenet5", "detection": "tinydet, torchvision:ssdlite320_mobilenet_v3_large",
            "segmentation": "tinyseg, torchvision:lraspp_mobilenet_v3_large"}[task]


def loss_for(model: nn.Module, task: str) -> TaskLoss:
    """``loss(outputs, targets)`` for ``task`` (see the module docstring)."""
    if task == "classification":  # a model with several heads (DeiT) says how they learn from labels
        fn = getattr(model, "classification_loss", None)
        return fn if callable(fn) else F.cross_entropy
    if task == "detection":
        fn = getattr(model, "detection_loss", None)
        if not callable(fn):
            raise UsageError(f"{type(model).__name__} has no detection_loss(outputs, targets), so edgeslim cannot "
                             "train it as a detector",
                             hint=f"use a detector edgeslim knows ({_examples('detection')}), or give the model that "
                                  "method")
        return fn
    if task == "segmentation":
        fn = getattr(model, "segmentation_loss", None)
        return fn if callable(fn) else segmentation_loss
    raise UsageError(f"unknown task {task!r}", hint=f"one of: {', '.join(TASKS)}")


def segmentation_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """Per-pixel cross-entropy of (N, K, H, W) logits against (N, H, W) class masks, 255 ignored."""
    check_masks(logits, masks)
    return F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)


def check_masks(logits: Any, masks: Any) -> None:
    """Masks that fit the logits: int64 (N, H, W) of classes 0..K-1 or 255; else one DataError."""
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        raise DataError(f"a segmentation model must output (N, K, H, W) logits, got "
                        f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
    n, k, h, w = logits.shape
    if not isinstance(masks, Tensor) or tuple(masks.shape) != (n, h, w) or masks.is_floating_point():
        got = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, Tensor) else type(masks).__name__
        raise DataError(f"segmentation masks must be integers of shape ({n}, {h}, {w}) to fit the model's "
                        f"output, got {got}", hint="masks hold a class per pixel (0..K-1, 255 = ignore) at the "
                                                   "input resolution")
    bad = (masks != IGNORE_INDEX) & ((masks < 0) | (masks >= k))
    if bool(bad.any()):
        raise DataError(f"a segmentation mask holds class {int(masks[bad][0])}, outside 0..{k - 1} "
                        f"(the model has {k} classes; {IGNORE_INDEX} = ignore)",
                        hint="build the model with --num-classes for the data's classes")


def to_device(y: Any, dev: torch.device) -> Any:
    """Targets on ``dev``: a tensor, or lists / tuples / dicts of them (detection targets)."""
    if isinstance(y, Tensor):
        return y.to(dev, non_blocking=True)
    if isinstance(y, dict):
        return {k: to_device(v, dev) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return type(y)(to_device(v, dev) for v in y)
    return y


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in training mode (its forward gives what its loss takes: detectors compute losses only
    then) with BatchNorm and dropout as in eval: a validation loss without touching the statistics."""
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    for m in model.modules():
        if isinstance(m, (_BatchNorm, nn.modules.dropout._DropoutNd)):
            m.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
