"""fit / evaluate: one plain loop with hooks, so distillation, sparsity penalties, pruning masks
and schedules plug in without their own training code.

    fit(model, data, epochs=3)
    fit(student, data, loss_fn=kd_loss)                # replaces cross-entropy
    fit(model, data, hooks=[bn_l1(1e-4)])              # extra loss terms, added
    fit(model, data, on_step=[reapply_masks])          # after every optimizer step
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import random
import sys
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import EdgeslimError, UsageError

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Hook = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
OnStep = Callable[[int, nn.Module], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_EPOCH_END: contextvars.ContextVar[tuple] = contextvars.ContextVar("edgeslim_epoch_end", default=())


@contextlib.contextmanager
def on_epoch_end(callback: Callable[[int, nn.Module], None]):
    """Inside the block, every ``fit`` calls ``callback(epoch, model)`` after each epoch but its last
    (epoch counts from 1; the model is in train mode and must be left so). The callback may raise
    to stop the training, e.g. Optuna's TrialPruned for a search trial that is clearly out of reach."""
    token = _EPOCH_END.set(_EPOCH_END.get() + (callback,))
    try:
        yield
    finally:
        _EPOCH_END.reset(token)


def _loader(data: Any, split: str):
    loader = getattr(data, split, data) if not isinstance(data, torch.utils.data.DataLoader) else data
    if loader is None:
        raise UsageError(f"the data has no {split} split")
    return loader


def _progress(iterable: Iterable, total: int | None, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: float = 1,
    lr: float | None = None,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    schedule: str = "cosine",
    max_batches: int | None = None,
    loss_fn: LossFn | None = None,
    hooks: Iterable[Hook] = (),
    on_step: Iterable[OnStep] = (),
    params: Iterable[torch.nn.Parameter] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``data`` (a DataBundle's train split or a DataLoader); returns it.

    ``epochs`` may be fractional (0.5 = half an epoch); ``max_batches`` caps batches per epoch.
    """
    if epochs <= 0:
        return model
    home = _device_of(model)
    dev = pick_device(device)
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if dev.type == "cuda":  # same seed, same result: deterministic cuDNN kernels while training
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        return _fit(model, data, dev, epochs=epochs, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                    momentum=momentum, schedule=schedule, max_batches=max_batches, loss_fn=loss_fn, hooks=hooks,
                    on_step=on_step, params=params, seed=seed, progress=progress, log=log)
    finally:  # trained on the accelerator, handed back where it came from
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if home is not None and home != dev:
            model.to(home)


def _device_of(model: nn.Module) -> torch.device | None:
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return None if t is None else t.device


def _fit(model, data, dev, *, epochs, lr, optimizer, weight_decay, momentum, schedule, max_batches, loss_fn, hooks,
         on_step, params, seed, progress, log) -> nn.Module:
    seed_everything(seed)
    loader = _loader(data, "train")
    model.to(dev).train()
    hooks, on_step = list(hooks), list(on_step)
    per_epoch = len(loader) if max_batches is None else min(len(loader), max_batches)
    total_steps = max(1, math.ceil(per_epoch * epochs))
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(trainable, lr=lr or 0.05, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(trainable, lr=lr or 1e-3, weight_decay=weight_decay)
    else:
        raise UsageError(f"unknown optimizer {optimizer!r}", hint="use 'sgd' or 'adam'")
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    elif schedule == "constant":
        sched = None
    else:
        raise UsageError(f"unknown schedule {schedule!r}", hint="use 'cosine' or 'constant'")

    step = 0
    for epoch in range(math.ceil(epochs)):
        running, seen = 0.0, 0
        batches = _progress(loader, per_epoch, f"epoch {epoch + 1}/{math.ceil(epochs)}", progress)
        for i, (x, y) in enumerate(batches):
            if i >= per_epoch or step >= total_steps:
                break
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            out = model(x)
            loss = loss_fn(out, y, x) if loss_fn is not None else F.cross_entropy(out, y)
            for h in hooks:
                loss = loss + h(model, x, y, out)
            if not torch.isfinite(loss):
                raise EdgeslimError(f"training diverged: loss became {loss.item()} at step {step}", hint="lower the learning rate (--lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            for cb in on_step:
                cb(step, model)
            running += loss.item() * x.shape[0]
            seen += x.shape[0]
        if log is not None and seen:
            log(f"epoch {epoch + 1}: train loss {running / seen:.4f}")
        if epoch + 1 < math.ceil(epochs) and step < total_steps:
            for cb in _EPOCH_END.get():
                cb(epoch + 1, model)
                model.train()
    model.eval()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, *, max_batches: int | None = None,
             device: str | torch.device | None = None) -> dict[str, Any]:
    """Top-1 accuracy (percent) and mean cross-entropy; both None when the data has no labels."""
    loader = _loader(loader, "test")
    home, dev = _device_of(model), pick_device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        return _evaluate(model, loader, dev, max_batches)
    finally:
        model.train(was_training)
        if home is not None and home != dev:
            model.to(home)


def _evaluate(model, loader, dev, max_batches) -> dict[str, Any]:
    correct, total, loss_sum, labelled = 0, 0, 0.0, True
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(dev), y.to(dev)
        out = model(x)
        total += x.shape[0]
        if (y < 0).any():
            labelled = False
            continue
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    if not labelled or total == 0:
        return {"top1": None, "loss": None, "n": total}
    return {"top1": 100.0 * correct / total, "loss": loss_sum / total, "n": total}


def recalibrate_bn(model: nn.Module, data: Any, batches: int = 50) -> int:
    """Re-estimate every BatchNorm's running mean/variance (cumulative average over ``batches``
    training batches, no gradients, weights untouched); returns how many BN layers it reset.

    After channel pruning or factorizing, a layer's inputs are no longer what the statistics were
    measured on, and the errors compound from layer to layer: without this, resnet20 pruned or
    factorized to 0.5x MACs scores near chance before any fine-tuning."""
    from torch.nn.modules.batchnorm import _BatchNorm

    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns or batches <= 0:
        return 0
    loader = getattr(data, "train", None) or data
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    seen = 0
    model.train()
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(dev))
                seen += 1
    finally:
        for m, (mom, mean, var, nbt) in zip(bns, saved):
            m.momentum = mom
            if not seen:  # no data: put the old statistics back
                m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(nbt)
        model.train(was_training)
    return len(bns) if seen else 0
