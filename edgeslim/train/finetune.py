"""The one fine-tuning trainer every technique calls, and the ``finetune`` recipe step.

    finetune(model, ctx, FinetuneOptions(epochs=1, lr=0.01))                   # cross-entropy
    finetune(model, ctx, FinetuneOptions(epochs=1, distill=True))              # KD from ctx.teacher

The loss is the task's (cross-entropy for a classifier; on detection or segmentation data the
detector's or segmenter's own, see edgeslim.train.task) unless ``options.distill``; only then is
``ctx.teacher`` used (Hinton soft targets mixed with the hard labels, ``alpha * T^2 KL + (1 - alpha)
* CE``), and a missing teacher is an error rather than a silent fall-back. A teacher in the context
is never used by a step that did not ask to distil.

The distillation losses live in edgeslim.train.kd (not in edgeslim.distillation, which builds on them)
so that the trainer does not depend on the distillation package.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, register
from .kd import LossFn, kd_loss, kd_loss_fn, soft_hard_loss, teacher_runner
from .loop import FitConfig, fit

__all__ = ["Finetune", "FinetuneOptions", "finetune", "kd_loss", "kd_loss_fn", "soft_hard_loss", "teacher_runner",
           "training_loss"]


# ---------------------------------------------------------------------------- the trainer
@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    """How one fine-tune trains. ``lr`` None: fit's default for the optimizer (sgd 0.05, adam 1e-3)."""

    epochs: float = 1.0
    lr: float | None = None
    optimizer: str = "sgd"
    max_batches: int | None = None  # cap batches per epoch (quick runs)
    distill: bool = False  # KD from ctx.teacher instead of cross-entropy
    alpha: float = 0.9  # KD: weight of the soft-target term
    temperature: float = 4.0  # KD: softmax temperature
    weight_decay: float = 5e-4


def training_loss(ctx: Context, options: FinetuneOptions, model: nn.Module | None = None) -> LossFn | None:
    """The loss a fine-tune trains with: None (fit's loss for the task) unless ``options.distill``: then
    distillation from ``ctx.teacher`` for the task of ``model`` on ``ctx.data`` (edgeslim.train.kd)."""
    if not options.distill:
        return None
    if ctx.teacher is None:
        raise UsageError("fine-tuning with distillation needs a teacher",
                         hint="pass teacher=... (compress uses its input model), or set distill to false")
    from .task import resolve_task

    task = resolve_task(model, ctx.data) if model is not None else "classification"
    return kd_loss_fn(ctx.teacher, temperature=options.temperature, alpha=options.alpha, task=task, student=model)


def finetune(model: nn.Module, ctx: Context, options: FinetuneOptions, *,
             on_step: Iterable[Callable[[int, nn.Module], None]] = ()) -> nn.Module:
    """Train ``model`` in place on ``ctx.data`` as ``options`` say (``on_step``: after every optimizer
    step, e.g. re-applying pruning masks); returns it in eval mode."""
    if options.epochs <= 0:
        return model.eval()
    if ctx.data is None:
        raise DataError("fine-tuning needs training data", hint="pass data=... (--data D), or train 0 epochs")
    cfg = FitConfig(epochs=options.epochs, lr=options.lr, optimizer=options.optimizer,
                    weight_decay=options.weight_decay, max_batches=options.max_batches,
                    loss_fn=training_loss(ctx, options, model), on_step=tuple(on_step), seed=ctx.seed,
                    progress=ctx.progress)
    return fit(model, ctx.data, cfg).eval()


# ---------------------------------------------------------------------------- the recipe step
@dataclasses.dataclass(frozen=True, kw_only=True)
class Finetune(Config):
    """Plain fine-tuning (cross-entropy) between compression steps; ``kd`` is its distilled twin."""

    kind = "finetune"
    epochs: float = 1.0
    lr: float | None = 0.01
    optimizer: str = "sgd"
    max_batches: int | None = None  # cap batches per epoch

    def validate(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float)) or self.epochs < 0:
            raise UsageError(f"finetune.epochs must be >= 0, got {self.epochs!r}")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise UsageError(f"finetune.max_batches must be a positive integer, got {self.max_batches!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}", hint="use 'sgd' or 'adam'")

    def untrained(self) -> None:
        return None  # it only trains: an architecture is timed without it

    def options(self) -> FinetuneOptions:
        return FinetuneOptions(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, max_batches=self.max_batches)


@register(Finetune)
def _finetune_step(model: nn.Module, cfg: Finetune, ctx: Context) -> nn.Module:
    if ctx.data is None:
        raise DataError("fine-tuning needs training data", hint="pass data=... (--data D)")
    finetune(model, ctx, cfg.options())
    ctx.details.setdefault("notes", []).append(f"fine-tuned {cfg.epochs:g} epoch(s)"
                                               + (f" of at most {cfg.max_batches} batches" if cfg.max_batches else ""))
    return model.eval()
