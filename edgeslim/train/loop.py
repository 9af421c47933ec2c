"""fit: one plain loop with hooks, so distillation, sparsity penalties, pruning masks and schedules
plug in without their own training code (``evaluate`` is in edgeslim.train.evaluation).

    fit(model, data, epochs=3)
    fit(detector, detection_data, epochs=3)            # the loss comes from the task (train.task)
    fit(student, data, loss_fn=kd_loss)                # replaces cross-entropy
    fit(model, data, hooks=[bn_l1(1e-4)])              # extra loss terms, added
    fit(model, data, on_step=[reapply_masks])          # after every optimizer step
    fit(model, data, deadline=time.monotonic() + 60)   # TrainingStopped between epochs after 60 s

Every fit leaves BatchNorm running statistics valid for the weights it trained (see ``fit``), and
records what it did in a ``FitStats`` (``fit_stats(model)``, or every fit inside ``record_fits()``).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
import random
import sys
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..core.errors import EdgeslimError, UsageError
from .bn import BNTracker, recalibrate_bn
from .stats import FitStats, bn_report, fit_stats, record_bn, record_fits, recorded_fits, remember
from .task import loss_for, resolve_task, to_device

__all__ = ["FitConfig", "FitStats", "TrainingDiverged", "TrainingStopped", "bn_report", "default_warmup", "fit",
           "fit_stats", "on_epoch_end", "optimizer_and_schedule", "pick_device", "recalibrate_bn", "record_bn",
           "record_fits", "recorded_fits", "seed_everything", "seeded_shuffle"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Hook = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
OnStep = Callable[[int, nn.Module], None]

DEFAULT_CLIP_GRAD = 5.0
WARMUP_FRACTION = 0.05  # default warm-up: this share of the steps ...
WARMUP_MAX = 100  # ... but never more steps than this
BN_STALE = 0.02  # BN statistics whose pre-training values still weigh more than this are re-estimated
BN_BATCHES = 100  # training batches a re-estimate averages over (at most one epoch of the fit)
BN_MODES = ("auto", "always", "off")


class TrainingDiverged(EdgeslimError):
    """The loss (or the gradient norm) became NaN or infinite; ``step`` counts from 0."""

    def __init__(self, step: int, value: float, *, what: str = "loss"):
        super().__init__(f"training diverged: {what} became {value} at step {step}",
                         hint="lower the learning rate (--lr); keep warm-up (--warmup-steps) and gradient "
                              "clipping (--clip-grad) on")
        self.step, self.value, self.what = step, value, what


class TrainingStopped(EdgeslimError):
    """``fit`` reached its ``deadline``: ``epochs_completed`` whole epochs (``steps`` steps) ran."""

    def __init__(self, epochs_completed: int, epochs: float, steps: int):
        super().__init__(f"training stopped at its deadline after {epochs_completed} of {epochs:g} epoch(s) "
                         f"({steps} steps)", hint="allow more time, or train fewer epochs")
        self.epochs_completed, self.epochs, self.steps = epochs_completed, epochs, steps


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
    (epoch counts from 1; the model is in train mode and must be left so; BatchNorm statistics are
    re-estimated first when they are stale). The callback may raise to stop the training, e.g.
    Optuna's TrialPruned for a search trial that is clearly out of reach."""
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


@contextlib.contextmanager
def seeded_shuffle(loader: Any, seed: int):
    """Seed the loader's own shuffling generators for the duration of a fit, then put their state
    back: the batch order of a fit depends on ``seed`` alone, not on how often the loader was
    iterated before (a DataBundle's train loader is built with a generator of its own)."""
    gens, seen = [], set()
    sampler = getattr(loader, "sampler", None)
    for g in (getattr(loader, "generator", None), getattr(sampler, "generator", None),
              getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and id(g) not in seen:
            seen.add(id(g))
            gens.append((g, g.get_state()))
    for g, _ in gens:
        g.manual_seed(seed)
    try:
        yield
    finally:
        for g, state in gens:
            g.set_state(state)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitConfig:
    """Every option of ``fit`` (described there), as one object a caller can build, keep and pass on."""

    epochs: float = 1
    lr: float | None = None
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int | None = None
    clip_grad: float | None = DEFAULT_CLIP_GRAD
    max_batches: int | None = None
    loss_fn: LossFn | None = None
    hooks: Iterable[Hook] = ()
    on_step: Iterable[OnStep] = ()
    params: Iterable[torch.nn.Parameter] | None = None
    device: str | torch.device | None = None
    seed: int = 0
    deadline: float | None = None
    bn_recalibration: str = "auto"
    bn_batches: int = BN_BATCHES
    progress: bool = True
    log: Callable[[str], None] | None = None
    task: str | None = None


def _fit_config(config: FitConfig | None, options: dict[str, Any]) -> FitConfig:
    if config is not None and not isinstance(config, FitConfig):
        raise UsageError(f"fit's config must be a FitConfig, got {type(config).__name__}")
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(FitConfig)})
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
    return dataclasses.replace(config, **options) if config is not None else FitConfig(**options)


def fit(model: nn.Module, data: Any, config: FitConfig | None = None, **options: Any) -> nn.Module:
    """Train ``model`` in place on ``data`` (a DataBundle's train split or a DataLoader); returns it,
    in eval mode, on the device it came from. The options are a ``FitConfig`` (``config``) or its
    fields as keywords (``fit(model, data, epochs=3, lr=0.01)``); keywords override ``config``.

    ``epochs`` may be fractional (0.5 = half an epoch); ``max_batches`` caps batches per epoch.

    Task: the loss is ``loss_fn(outputs, targets, inputs)`` when given, else the task's
    (edgeslim.train.task): cross-entropy for classification, the model's ``detection_loss`` for
    detection (batches of images and a list of target dicts, moved to the device with them),
    cross-entropy with 255 ignored for segmentation. ``task`` names it; by default the data's
    (``meta.task``), else the model's ``task`` attribute, else classification.

    Recipe: SGD (Nesterov momentum 0.9, lr 0.05) or AdamW (lr 1e-3); the learning rate rises
    linearly over the first ``warmup_steps`` steps (default: 5% of the steps, at most 100; 0 turns it
    off) times a cosine decay over all steps (``schedule="constant"``: no decay); the gradient norm
    of the trained parameters is clipped to ``clip_grad`` (default 5; 0 or None: no clipping). A NaN
    or infinite loss or gradient norm raises ``TrainingDiverged`` (with the step and the value).

    Reproducibility: ``seed`` seeds Python, NumPy and torch, and the loader's own shuffling
    generator for the duration of the fit (its state is put back afterwards), so the batch order
    depends on ``seed`` alone. On CPU, the same initial weights, data, options, seed and
    ``torch.get_num_threads()`` give bit-identical weights (same machine and torch build); another
    thread count gives slightly different floating-point sums. On CUDA, cuDNN is made to pick
    deterministic kernels, which is not a bit-identity guarantee. The initial weights are the
    caller's: seed before building the model (``edgeslim train`` does, from ``--seed``).

    ``deadline`` (a ``time.monotonic()`` value) is checked before every epoch, the first included:
    once it has passed, ``TrainingStopped`` is raised, carrying ``epochs_completed`` (the epoch
    running when the deadline passes is finished, the next one is not started; the BatchNorm
    statistics are then not re-estimated).

    BatchNorm: after training, the running statistics of every BatchNorm layer that trained (train
    mode, ``track_running_stats``, momentum not 0) are re-estimated when the share its statistics
    from before training still have in the running average, (1 - momentum) ** updates, is above 2%
    -- as happens after a short fine-tune of a model with a low momentum (torchvision's MobileNetV3
    0.01, MNASNet 0.0003) -- and always for ``momentum=None`` (a cumulative average, in which the
    batches of the first, untrained weights count as much as the last). The re-estimate is a
    cumulative average over up to ``bn_batches`` training batches (no more than one epoch of this
    fit), without gradients, with every other layer in eval mode (no dropout). The same is done
    before ``on_epoch_end`` callbacks, which evaluate the model. ``bn_recalibration``: "auto" (the
    rule above), "always", or "off". What was done is in ``fit_stats(model)`` (a FitStats) and in
    the list of an enclosing ``record_fits()``.
    """
    cfg = _fit_config(config, options)
    plan = _plan(epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, clip_grad=cfg.clip_grad, deadline=cfg.deadline,
                 bn_recalibration=cfg.bn_recalibration, bn_batches=cfg.bn_batches, max_batches=cfg.max_batches)
    if cfg.epochs <= 0:
        return model
    home = _device_of(model)
    dev = pick_device(cfg.device)
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if dev.type == "cuda":  # same seed, same result: deterministic cuDNN kernels while training
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        opt_args = dict(lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                        schedule=cfg.schedule)
        stats = _fit(model, data, dev, plan, opt_args, cfg)
    finally:  # trained on the accelerator, handed back where it came from
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if home is not None and home != dev:
            model.to(home)
    remember(model, stats)
    return model


@dataclasses.dataclass(frozen=True)
class _Plan:
    epochs: float
    warmup_steps: int | None
    clip_grad: float | None
    deadline: float | None
    bn_mode: str
    bn_batches: int
    max_batches: int | None


def _plan(*, epochs, warmup_steps, clip_grad, deadline, bn_recalibration, bn_batches, max_batches) -> _Plan:
    """Check fit's options; one line naming the bad value and what is valid."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not is_num(epochs):
        raise UsageError(f"epochs must be a finite number, got {epochs!r}")
    if warmup_steps is not None and not (is_int(warmup_steps) and warmup_steps >= 0):
        raise UsageError(f"warmup_steps must be an integer >= 0 (0: no warm-up) or None (automatic), "
                         f"got {warmup_steps!r}")
    if clip_grad is not None and not (is_num(clip_grad) and clip_grad >= 0):
        raise UsageError(f"clip_grad must be a number >= 0 (0 or None: no clipping), got {clip_grad!r}")
    if deadline is not None and not is_num(deadline):
        raise UsageError(f"deadline must be a time.monotonic() value or None, got {deadline!r}")
    if bn_recalibration not in BN_MODES:
        raise UsageError(f"bn_recalibration must be one of {', '.join(BN_MODES)}, got {bn_recalibration!r}")
    if not (is_int(bn_batches) and bn_batches >= 1):
        raise UsageError(f"bn_batches must be a positive integer, got {bn_batches!r}")
    if max_batches is not None and not (is_int(max_batches) and max_batches >= 1):
        raise UsageError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    return _Plan(epochs, warmup_steps, clip_grad or None, deadline, bn_recalibration, bn_batches, max_batches)


def default_warmup(total_steps: int) -> int:
    """Warm-up steps when fit is not told: 5% of the steps (rounded up), at most 100."""
    return min(WARMUP_MAX, math.ceil(WARMUP_FRACTION * total_steps))


def _device_of(model: nn.Module) -> torch.device | None:
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return None if t is None else t.device


def optimizer_and_schedule(trainable, total_steps: int, warmup: int, *, lr, optimizer, weight_decay, momentum, schedule):
    if optimizer == "sgd":
        opt = torch.optim.SGD(trainable, lr=lr or 0.05, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(trainable, lr=lr or 1e-3, weight_decay=weight_decay)
    else:
        raise UsageError(f"unknown optimizer {optimizer!r}", hint="use 'sgd' or 'adam'")
    if schedule not in ("cosine", "constant"):
        raise UsageError(f"unknown schedule {schedule!r}", hint="use 'cosine' or 'constant'")

    def factor(s: int) -> float:  # s: optimizer steps taken so far
        ramp = min(1.0, (s + 1) / (warmup + 1)) if warmup else 1.0
        decay = 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps)) if schedule == "cosine" else 1.0
        return ramp * decay

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _fit(model, data, dev, plan: _Plan, opt_args: dict, cfg: FitConfig) -> FitStats:
    loss_fn, hooks, on_step, seed, progress, log = (cfg.loss_fn, list(cfg.hooks), list(cfg.on_step), cfg.seed,
                                                    cfg.progress, cfg.log)
    params = cfg.params
    task_loss = loss_for(model, resolve_task(model, data, cfg.task))
    seed_everything(seed)
    loader = _loader(data, "train")
    model.to(dev).train()
    per_epoch = len(loader) if plan.max_batches is None else min(len(loader), plan.max_batches)
    total_steps = max(1, math.ceil(per_epoch * plan.epochs))
    warmup = plan.warmup_steps if plan.warmup_steps is not None else default_warmup(total_steps)
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt, sched = optimizer_and_schedule(trainable, total_steps, warmup, **opt_args)
    stats = FitStats(warmup_steps=warmup, clip_grad=plan.clip_grad)
    bn = BNTracker(model, loader, dev, mode=plan.bn_mode, batches=min(plan.bn_batches, per_epoch), stale=BN_STALE)
    step_fn = _stepper(model, opt, sched, trainable, plan.clip_grad, loss_fn or task_loss, hooks, on_step, stats,
                       task_loss=loss_fn is None)
    n_epochs = math.ceil(plan.epochs)
    with seeded_shuffle(loader, seed):
        for epoch in range(n_epochs):
            if plan.deadline is not None and time.monotonic() >= plan.deadline:
                model.eval()
                raise TrainingStopped(stats.epochs_completed, plan.epochs, stats.steps)
            running, seen = 0.0, 0
            batches = _progress(loader, per_epoch, f"epoch {epoch + 1}/{n_epochs}", progress)
            for i, (x, y) in enumerate(batches):
                if i >= per_epoch or stats.steps >= total_steps:
                    break
                x, y = x.to(dev, non_blocking=True), to_device(y, dev)
                running += step_fn(x, y) * x.shape[0]
                seen += x.shape[0]
            stats.epochs_completed = epoch + 1
            if log is not None and seen:
                log(f"epoch {epoch + 1}: train loss {running / seen:.4f}")
            if epoch + 1 < n_epochs and stats.steps < total_steps and _EPOCH_END.get():
                bn.refresh(stats)  # the callbacks evaluate: let them see valid statistics
                for cb in _EPOCH_END.get():
                    cb(epoch + 1, model)
                    model.train()
        bn.refresh(stats)
    if log is not None and stats.bn_recalibration["layers"]:
        log(f"BatchNorm statistics re-estimated over {stats.bn_recalibration['batches']} training batches "
            f"({stats.bn_recalibration['layers']} layers)")
    model.eval()
    return stats


def _stepper(model, opt, sched, trainable, clip, loss_fn, hooks, on_step, stats: FitStats, *, task_loss: bool):
    """One optimizer step on (x, y); returns the loss value. ``loss_fn`` is the task's loss(outputs,
    targets) when ``task_loss``, else the caller's loss(outputs, targets, inputs)."""
    def step(x: torch.Tensor, y: Any) -> float:
        out = model(x)
        loss = loss_fn(out, y) if task_loss else loss_fn(out, y, x)
        for h in hooks:
            loss = loss + h(model, x, y, out)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(stats.steps, value)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None and trainable:
            norm = float(torch.nn.utils.clip_grad_norm_(trainable, clip))
            if not math.isfinite(norm):
                raise TrainingDiverged(stats.steps, norm, what="gradient norm")
            stats.clipped_steps += norm > clip
        opt.step()
        sched.step()
        stats.steps += 1
        for cb in on_step:
            cb(stats.steps, model)
        return value

    return step


