"""Training-time helpers for pruning, as edgeslim.train.fit hooks."""
from __future__ import annotations

import torch
from torch import nn


def bn_l1_penalty(strength: float = 1e-4, *, exclude: tuple[str, ...] = ()):
    """Network slimming (Liu et al. 2017): ``strength * sum |gamma|`` over BatchNorm layers.

    Pass it to ``fit(model, data, hooks=[bn_l1_penalty(1e-4)])`` before pruning with
    ``importance="bn"``: the penalty drives unimportant channels' scales towards zero.
    """
    import re

    if strength < 0:
        raise ValueError("strength must be >= 0")

    def hook(model: nn.Module, inputs, targets, outputs) -> torch.Tensor:
        terms = [m.weight.abs().sum() for n, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
                 and not any(re.fullmatch(p, n) for p in exclude)]
        if not terms:
            return outputs.new_zeros(())
        return strength * torch.stack(terms).sum()

    return hook
