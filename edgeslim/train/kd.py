"""Distillation losses for every task, used by the one fine-tuning trainer and by edgeslim.distillation.

    loss_fn = kd_loss_fn(teacher, task="detection", student=model)   # loss_fn(outputs, targets, inputs)

- classification: Hinton et al. (2015) soft targets mixed with the hard labels,
  ``alpha * T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE``; unlabelled samples (label -1)
  take the teacher's argmax (``pseudo_labels``) or count in the soft term only.
  A classifier with its own ``distill_loss(student_outputs, teacher_logits)`` (DeiT: its distillation
  head learns the teacher's hard decisions) mixes it with its ``classification_loss``:
  ``alpha * distill + (1 - alpha) * classification_loss``.
- segmentation: the same per pixel (every pixel's K logits are one soft target), mixed with the
  task's loss (cross-entropy with 255 ignored, or the model's ``segmentation_loss``).
- detection: the student's own ``distill_loss(student_outputs, teacher_outputs)`` on both models'
  training-mode outputs (tinydet: its head maps; the teacher's are computed with BatchNorm and dropout
  as in eval), mixed with its ``detection_loss``: ``alpha * distill + (1 - alpha) * detection``. A
  detector without ``distill_loss`` is one UsageError.

The teacher runs as an eval-mode copy without gradients; the caller's teacher is not touched.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UsageError
from .task import loss_for, loss_mode

LossFn = Callable[[Any, Any, torch.Tensor], torch.Tensor]


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


def teacher_runner(teacher: nn.Module, *, training_outputs: bool = False) -> Callable[[torch.Tensor], Any]:
    """``run(x)``: the teacher's outputs for ``x`` without gradients, computed on ``x``'s device by a
    copy of the teacher (made once per device; the caller's keeps its mode, flags and device). Eval-mode
    outputs, or with ``training_outputs`` the training-mode ones (what a loss takes: a detector's head
    maps) with BatchNorm and dropout as in eval."""
    copies: dict[torch.device, nn.Module] = {}

    def run(x: torch.Tensor):
        if x.device not in copies:
            t = copy.deepcopy(teacher).eval().to(x.device)
            for p in t.parameters():
                p.requires_grad_(False)
            copies[x.device] = t
        t = copies[x.device]
        with torch.no_grad():
            if not training_outputs:
                return t(x)
            with loss_mode(t):
                return t(x)

    return run


def kd_loss_fn(teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9, pseudo_labels: bool = True,
               task: str = "classification", student: nn.Module | None = None) -> LossFn:
    """A ``loss_fn(outputs, targets, inputs)`` for ``fit``: distillation from ``teacher`` for ``task``
    (see the module docstring; detection and segmentation need the ``student`` for its own losses)."""
    loss = TaskKD(task, student, temperature=temperature, alpha=alpha, pseudo_labels=pseudo_labels)
    run = teacher_runner(teacher, training_outputs=loss.training_outputs)
    return lambda outputs, targets, inputs: loss(outputs, run(inputs), targets)


class TaskKD:
    """``loss(student_outputs, teacher_outputs, targets)`` for ``task`` (the module docstring says which).
    ``training_outputs``: whether the teacher's outputs are its training-mode ones (detection)."""

    def __init__(self, task: str, student: nn.Module | None, *, temperature: float = 4.0, alpha: float = 0.9,
                 pseudo_labels: bool = True):
        self.task, self.temperature, self.alpha, self.pseudo_labels = task, temperature, alpha, pseudo_labels
        self.training_outputs = task == "detection"
        self.distill = getattr(student, "distill_loss", None) if student is not None else None
        if task == "classification" and not callable(self.distill):
            return
        if student is None:
            raise UsageError(f"distillation for {task} needs the student model (kd_loss_fn(..., student=model))")
        self.task_loss = loss_for(student, task)
        if task == "detection" and not callable(self.distill):
            raise UsageError(f"{type(student).__name__} has no distill_loss(student_outputs, teacher_outputs), so "
                             "edgeslim cannot distil it as a detector", hint="fine-tune it without distillation "
                             "(kd off), or use a detector edgeslim distils (tinydet)")

    def __call__(self, outputs, teacher_outputs, targets) -> torch.Tensor:
        if self.task == "classification" and not callable(self.distill):
            return soft_hard_loss(outputs, teacher_outputs, targets, temperature=self.temperature, alpha=self.alpha,
                                  pseudo_labels=self.pseudo_labels)
        soft = (pixel_kd_loss(outputs, teacher_outputs, self.temperature) if self.task == "segmentation" else
                self.distill(outputs, teacher_outputs))
        return soft if self.alpha >= 1.0 else self.alpha * soft + (1 - self.alpha) * self.task_loss(outputs, targets)


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Soft-target KD of (N, K, H, W) logits, every pixel one sample."""
    if student_logits.shape != teacher_logits.shape:
        raise UsageError(f"teacher and student give logits of {tuple(teacher_logits.shape)} and "
                         f"{tuple(student_logits.shape)}: per-pixel distillation needs the same shape")
    k = student_logits.shape[1]
    flat = [t.permute(0, 2, 3, 1).reshape(-1, k) for t in (student_logits, teacher_logits)]
    return kd_loss(*flat, temperature)
