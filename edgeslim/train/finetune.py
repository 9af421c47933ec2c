"""The one fine-tuning trainer every technique calls, and the ``finetune`` recipe step.

    finetune(model, ctx, FinetuneOptions(epochs=1, lr=0.01))                   # cross-entropy
    finetune(model, ctx, FinetuneOptions(epochs=1, distill=True))              # KD from ctx.teacher

The loss is the task's (cross-entropy for a classifier; on detection or segmentation data the
detector's or segmenter's own, see edgeslim.train.task) unless ``options.distill``; only then is
``ctx.teacher`` used (Hinton soft targets mixed with the hard labels, ``alpha * T^2 KL + (1 - alpha)
* CE``), and a missing teacher is an error rather than a silent fall-back. A teacher in the context
is never used by a step that did not ask to distil.

The logit losses live here (not in edgeslim.distillation, which builds on them) so that the
trainer does not depend on the distillation package.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, register
from .loop import FitConfig, fit

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- logit losses
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(p_teacher^T || p_student^T), averaged over the batch."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def soft_hard_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None, *,
                   temperature: float = 4.0, alpha: float = 0.9, pseudo_labels: bool = True) -> torch.Tensor:
    """``alpha * kd_loss + (1 - alpha) * CE``; labels of -1 mean unlabelled: they take the teacher's
    argmax (``pseudo_labels``) or count in the soft term only."""
    soft = kd_loss(student_logits, teacher_logits, temperature)
    if alpha >= 1.0:
        return soft
    if targets is None:
        targets = torch.full(student_logits.shape[:1], -1, dtype=torch.long, device=student_logits.device)
    labels = targets.clone()
    unlabelled = labels < 0
    if pseudo_labels:
        labels[unlabelled] = teacher_logits.argmax(-1)[unlabelled]
        use = torch.ones_like(unlabelled)
    else:
        use = ~unlabelled
    if not use.any():
        return soft
    hard = F.cross_entropy(student_logits[use], labels[use])
    return alpha * soft + (1.0 - alpha) * hard


def teacher_runner(teacher: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``run(x)``: the teacher's outputs for ``x`` without gradients, in eval mode, computed on ``x``'s
    device. It runs a copy of the teacher (made once per device): the caller's teacher keeps its
    mode, its ``requires_grad`` flags and its device."""
    copies: dict[torch.device, nn.Module] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.device not in copies:
            t = copy.deepcopy(teacher).eval().to(x.device)
            for p in t.parameters():
                p.requires_grad_(False)
            copies[x.device] = t
        with torch.no_grad():
            return copies[x.device](x)

    return run


def kd_loss_fn(teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9,
               pseudo_labels: bool = True) -> LossFn:
    """A ``loss_fn(outputs, targets, inputs)`` for ``fit``: logit KD from ``teacher`` (an eval-mode
    copy, no gradients; the caller's teacher is not touched)."""
    run_teacher = teacher_runner(teacher)

    def loss_fn(outputs, targets, inputs):
        return soft_hard_loss(outputs, run_teacher(inputs), targets, temperature=temperature, alpha=alpha,
                              pseudo_labels=pseudo_labels)

    return loss_fn


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


def training_loss(ctx: Context, options: FinetuneOptions) -> LossFn | None:
    """The loss a fine-tune trains with: None (fit's loss for the task) unless ``options.distill``."""
    if not options.distill:
        return None
    if ctx.teacher is None:
        raise UsageError("fine-tuning with distillation needs a teacher",
                         hint="pass teacher=... (compress uses its input model), or set distill to false")
    return kd_loss_fn(ctx.teacher, temperature=options.temperature, alpha=options.alpha)


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
                    loss_fn=training_loss(ctx, options), on_step=tuple(on_step), seed=ctx.seed,
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
