"""Training and evaluation loops shared by every technique that fine-tunes.

``fit`` is the loop (options: a ``FitConfig``); ``evaluate`` scores a model on a split; both serve
classification, detection and segmentation (``edgeslim.train.task`` says which loss trains what).
``edgeslim.train.finetune.finetune(model, ctx, FinetuneOptions(...))`` is the one fine-tuning trainer
the technique handlers call (cross-entropy, or KD from ``ctx.teacher`` when ``distill``); ``Finetune``
is its recipe step. (The function is not re-exported here: ``edgeslim.train.finetune`` stays the module.)
"""
from .evaluation import evaluate, task_score
from .finetune import Finetune, FinetuneOptions, kd_loss, kd_loss_fn, soft_hard_loss, teacher_runner
from .loop import (FitConfig, FitStats, TrainingDiverged, TrainingStopped, bn_report, fit, fit_stats, pick_device,
                   recalibrate_bn, record_bn, record_fits, recorded_fits, seed_everything)
from .task import loss_for, resolve_task

__all__ = ["Finetune", "FinetuneOptions", "FitConfig", "FitStats", "TrainingDiverged", "TrainingStopped", "bn_report",
           "evaluate", "fit", "fit_stats", "kd_loss", "kd_loss_fn", "loss_for", "pick_device", "recalibrate_bn",
           "record_bn", "record_fits", "recorded_fits", "resolve_task", "seed_everything", "soft_hard_loss", "task_score",
           "teacher_runner"]
