"""Quantization-aware training: start from PTQ, then train through the fake quantizers.

    q = edgeslim.quantize(model, QAT(bits=4, epochs=2), data=data)

Ranges are either learned (LSQ: every scale is a parameter with the LSQ gradient scale) or frozen
at their calibrated values (weights then re-fit their grid to the moving weights after every
step). Training runs in the one fine-tuning trainer (edgeslim.train.finetune): cross-entropy, or
with ``distill`` soft-target KD (alpha 0.7, T 4) from the context's teacher -- the float model
before quantization when none is given. ``qat(..., loss_fn=...)`` trains with the caller's loss.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, register, register_export
from .deploy import record_config
from . import graph as qgraph
from .ptq import PTQ, _bitmap, export_int8, layer_table, ptq


@dataclasses.dataclass(frozen=True, kw_only=True)
class QAT(Config):
    kind = "qat"
    final = True  # the deployable format: a recipe's last step
    bits: int = 8
    weight_bits: int | None = None
    act_bits: int | None = None
    calibration: str = "minmax"
    per_channel: bool = True
    calib_batches: int = 8
    learn_ranges: bool = True  # LSQ; False keeps the calibrated activation ranges
    epochs: float = 1.0
    lr: float | None = None  # default 5e-4 (adam)
    optimizer: str = "adam"
    max_batches: int | None = None
    distill: bool = False  # soft-target KD loss (temperature 4) from the teacher (default: the float model)
    layers: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    mixed_precision: tuple = ()
    first_last_bits: int | None = 8  # LSQ convention: first and last layers stay at 8 bits

    def __post_init__(self):
        object.__setattr__(self, "mixed_precision", _bitmap(self.mixed_precision))
        super().__post_init__()

    def validate(self) -> None:
        self.ptq_config()  # validates the shared fields
        if self.epochs < 0:
            raise UsageError(f"epochs must be >= 0, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"optimizer must be sgd or adam, got {self.optimizer!r}")

    def untrained(self) -> PTQ:
        return self.ptq_config().untrained()  # the same int8 graph, calibrated once, not trained

    def ptq_config(self) -> PTQ:
        return PTQ(bits=self.bits, weight_bits=self.weight_bits, act_bits=self.act_bits,
                   calibration=self.calibration, per_channel=self.per_channel, calib_batches=self.calib_batches,
                   layers=self.layers, exclude=self.exclude, mixed_precision=self.mixed_precision,
                   first_last_bits=self.first_last_bits)


def _check_labelled(data: Any) -> None:
    meta = getattr(data, "meta", None)
    if meta is not None and not getattr(meta, "labelled", True):
        raise DataError("quantization-aware training with cross-entropy needs labelled data",
                        hint="use labelled data, a teacher (distill=True), or --method ptq")


def qat(model: nn.Module, cfg: QAT, *, data: Any, loss_fn: Callable | None = None, teacher: nn.Module | None = None,
        details: dict | None = None, progress: bool = True, seed: int = 0) -> nn.Module:
    """PTQ, then training through the fake quantizers; ``model`` is quantized in place (callers copy)."""
    details = details if details is not None else {}
    if data is None:
        raise DataError("quantization-aware training needs training data", hint="pass data=... / --data")
    if loss_fn is None and not cfg.distill:
        _check_labelled(data)
    if cfg.distill and teacher is None and loss_fn is None:
        teacher = copy.deepcopy(model).eval()  # distil from the float model
    q = ptq(model, cfg.ptq_config(), data=data, details=details)
    on_step = _range_updates(q, cfg)
    lr = cfg.lr or (5e-4 if cfg.optimizer == "adam" else 1e-2)
    if loss_fn is not None:  # the caller's own loss
        from ..train import fit

        fit(q, data, epochs=cfg.epochs, lr=lr, optimizer=cfg.optimizer, weight_decay=0.0, max_batches=cfg.max_batches,
            loss_fn=loss_fn, on_step=on_step, progress=progress, seed=seed)
    else:
        from ..train.finetune import FinetuneOptions, finetune

        opts = FinetuneOptions(epochs=cfg.epochs, lr=lr, optimizer=cfg.optimizer, weight_decay=0.0,
                               max_batches=cfg.max_batches, distill=cfg.distill, alpha=0.7)
        finetune(q, Context(data=data, teacher=teacher, seed=seed, progress=progress), opts, on_step=on_step)
    q.eval()
    details["qat"] = {"epochs": cfg.epochs, "learned_ranges": cfg.learn_ranges, "optimizer": cfg.optimizer,
                      "distilled": loss_fn is not None or cfg.distill}
    details["layers"] = layer_table(q)
    return q


def _range_updates(q: nn.Module, cfg: QAT) -> tuple:
    """LSQ: make every activation scale a parameter (nothing to do per step); frozen ranges: the
    weight grids follow the weights after every step."""
    layers = qgraph.quant_layers(q)
    if cfg.learn_ranges:
        for _, fq in qgraph.fake_quants(q):
            if fq.mode == "quant":
                fq.learn_scale()
        return ()

    def refit(step, m):
        for _, layer in layers:
            layer.requant_weight()

    return (refit,)


@register(QAT)
def _apply(model: nn.Module, config: QAT, ctx: Context) -> nn.Module:
    q = qat(model, config, data=ctx.data, teacher=ctx.teacher, details=ctx.details, progress=ctx.progress,
            seed=ctx.seed)
    return record_config(q, config)  # its config chooses the exporter (deploy.export)


register_export(QAT)(export_int8)
