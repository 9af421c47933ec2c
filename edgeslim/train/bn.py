"""BatchNorm running statistics after training: how stale they are and their re-estimate (see ``fit``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .stats import FitStats


class BNTracker:
    """The BatchNorm layers one fit trains, how stale their running statistics are, and their
    re-estimate when they are too stale (see ``fit``)."""

    def __init__(self, model: nn.Module, loader: Any, dev: torch.device, *, mode: str, batches: int, stale: float):
        self.model, self.loader, self.dev, self.mode, self.batches = model, loader, dev, mode, batches
        self.stale = stale  # a share of the old statistics above this is stale
        self.layers = [m for m in model.modules()
                       if isinstance(m, _BatchNorm) and m.training and m.track_running_stats and m.momentum != 0]
        self.times = 0
        self._mark()

    def _mark(self) -> None:
        self.start = [int(m.num_batches_tracked) for m in self.layers]

    def stale_weight(self) -> float:
        """The largest share the statistics from before this fit (or its last re-estimate) still have."""
        worst = 0.0
        for m, n0 in zip(self.layers, self.start):
            updates = int(m.num_batches_tracked) - n0
            # momentum None is a cumulative average since the last reset: batches of the old weights count fully
            share = 1.0 if m.momentum is None else (1.0 - m.momentum) ** updates
            worst = max(worst, share)
        return worst

    def refresh(self, stats: FitStats) -> None:
        if not self.layers:
            return
        weight = self.stale_weight()
        stats.bn_stale_weight = round(weight, 6)
        if self.mode == "off" or (self.mode == "auto" and weight <= self.stale):
            return
        seen = reestimate(self.model, self.loader, self.layers, self.batches, self.dev)
        if seen:
            self.times += 1
            stats.bn_recalibration = {"batches": seen, "layers": len(self.layers), "times": self.times}
            self._mark()

def reestimate(model: nn.Module, loader: Any, layers: list[_BatchNorm], batches: int, dev: torch.device) -> int:
    """Cumulative-average running statistics of ``layers`` over up to ``batches`` batches of ``loader``;
    every other module in eval mode, no gradients. Returns the batches seen. A layer the batches never
    reach (and every layer, when there is no batch) keeps its old statistics."""
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # dropout, stochastic depth and the like off: the statistics of the deployed forward
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(dev))
                seen += 1
    finally:
        for m, (mom, mean, var, nbt) in zip(layers, saved):
            m.momentum = mom
            if not seen or int(m.num_batches_tracked) == 0:
                m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(nbt)
        for m, training in modes:
            m.training = training
    return seen

def recalibrate_bn(model: nn.Module, data: Any, batches: int = 50) -> int:
    """Re-estimate every BatchNorm's running mean/variance (cumulative average over ``batches``
    training batches, no gradients, weights untouched, every other layer in eval mode); returns how
    many BN layers it reset.

    After channel pruning or factorizing, a layer's inputs are no longer what the statistics were
    measured on, and the errors compound from layer to layer: without this, resnet20 pruned or
    factorized to 0.5x MACs scores near chance before any fine-tuning. (``fit`` decides by itself
    whether the statistics it leaves need this; see there.)"""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns or batches <= 0:
        return 0
    loader = getattr(data, "train", None) or data
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return len(bns) if reestimate(model, loader, bns, batches, dev) else 0
