"""Knowledge distillation: train a student to match a teacher.

    student = edgeslim.distill(student, teacher, data, KD(temperature=4, alpha=0.9, epochs=10,
                               features=("layer3:layer3",)))

The losses live in :mod:`edgeslim.distillation.losses` (the logit ones are shared with the one
fine-tuning trainer, ``edgeslim.train.finetune``). ``training_step`` is the fine-tuning step a
technique config splits off for a recipe: ``kd`` when it distils, ``finetune`` otherwise.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, register, run
from .losses import (Distiller, attention_loss, attention_map, kd_loss, kd_loss_fn, parse_pairs,
                     soft_hard_loss)

__all__ = ["KD", "Distiller", "attention_loss", "attention_map", "distill", "kd_loss", "kd_loss_fn", "soft_hard_loss",
           "training_step"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class KD(Config):
    """Soft-target KD (+ optional FitNets hints and attention transfer) from a teacher."""

    kind = "kd"
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft-target term; 1 - alpha goes to the hard labels
    epochs: float = 1
    lr: float | None = None
    optimizer: str = "sgd"
    features: tuple[str, ...] = ()  # "teacher_layer:student_layer" hint pairs (FitNets)
    feature_weight: float = 1.0
    attention: tuple[str, ...] = ()  # "teacher_layer:student_layer" attention-transfer pairs
    attention_weight: float = 1000.0  # beta of Zagoruyko & Komodakis
    pseudo_labels: bool = True  # unlabelled samples take the teacher's argmax as hard label
    max_batches: int | None = None  # cap batches per epoch (quick runs)

    def validate(self) -> None:
        if not self.temperature > 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.alpha <= 1:
            raise UsageError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if self.epochs < 0:
            raise UsageError(f"epochs must be >= 0, got {self.epochs!r}")
        if self.feature_weight < 0 or self.attention_weight < 0:
            raise UsageError("feature_weight and attention_weight must be >= 0")
        parse_pairs(self.features, "features")
        parse_pairs(self.attention, "attention")

    def untrained(self) -> None:
        return None  # it only trains: an architecture is timed without it


def training_step(epochs: float, *, lr: float | None = None, max_batches: int | None = None,
                  distill: bool = False) -> Config:
    """The fine-tuning a technique config splits off into a recipe step of its own: ``kd`` (soft
    targets from the recipe's teacher, KD's defaults) when ``distill``, plain ``finetune`` otherwise."""
    from ..train.finetune import Finetune

    if distill:
        return KD(epochs=epochs, lr=lr, max_batches=max_batches)
    return Finetune(epochs=epochs, lr=lr, max_batches=max_batches)


@register(KD)
def _apply(model: nn.Module, config: KD, ctx: Context) -> nn.Module:
    from ..train import fit, resolve_task

    if ctx.teacher is None:
        raise UsageError("distillation needs a teacher", hint="pass teacher= (or --teacher)")
    if ctx.data is None:
        raise UsageError("distillation needs data", hint="pass data= (or --data); unlabelled data works too")
    example = _example(ctx.data)
    teacher = copy.deepcopy(ctx.teacher)  # the Distiller freezes its teacher: the context's stays as it was
    distiller = Distiller(model, teacher, example, temperature=config.temperature, alpha=config.alpha,
                          features=config.features, feature_weight=config.feature_weight,
                          attention=config.attention, attention_weight=config.attention_weight,
                          pseudo_labels=config.pseudo_labels, task=resolve_task(model, ctx.data))
    try:
        fit(distiller, ctx.data, epochs=config.epochs, lr=config.lr, optimizer=config.optimizer,
            loss_fn=distiller.loss_fn, max_batches=config.max_batches, seed=ctx.seed, progress=ctx.progress)
    finally:
        distiller.close()
    labelled = getattr(getattr(ctx.data, "meta", None), "labelled", True)
    ctx.details.update(
        temperature=config.temperature, alpha=config.alpha, epochs=config.epochs,
        features=[list(p) for p in parse_pairs(config.features)],
        attention=[list(p) for p in parse_pairs(config.attention)],
        adapters={k: type(v).__name__ for k, v in distiller.adapters.items()},
    )
    ctx.details.setdefault("notes", []).append(
        f"distilled {config.epochs} epoch(s), T={config.temperature}, alpha={config.alpha}"
        + ("" if labelled else "; data unlabelled: hard labels are the teacher's predictions"
           if config.pseudo_labels else "; data unlabelled: soft targets only")
    )
    return model.eval()


def _example(data: Any) -> torch.Tensor:
    loader = getattr(data, "train", None) or data
    try:
        x, _ = next(iter(loader))
    except StopIteration:
        raise DataError("the training data is empty") from None
    return x[:2]


def distill(student: nn.Module, teacher: nn.Module, data: Any, config: KD | None = None, *,
            inplace: bool = False, seed: int = 0, progress: bool = True) -> nn.Module:
    """Train (a copy of, unless ``inplace``) ``student`` from ``teacher`` on ``data`` (a DataBundle
    or a DataLoader; unlabelled batches, label -1, are distilled from the teacher alone)."""
    if not isinstance(teacher, nn.Module):
        raise UsageError(f"the teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    ctx = Context(data=data, teacher=teacher, seed=seed, progress=progress)
    return run(student, config or KD(), ctx, inplace=inplace, accepts=(KD,))[0]
