"""BatchNorm helpers for tests: set a model's BN momentum, and the exact running statistics a set
of weights should be evaluated with (the reference that ``fit``'s re-estimate is judged against)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def set_bn_momentum(model: nn.Module, momentum: float | None) -> nn.Module:
    """Every BatchNorm layer of ``model`` gets ``momentum`` (as torchvision builds MobileNetV3 with 0.01)."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.momentum = momentum
    return model


def bn_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def exact_bn_statistics(model: nn.Module, loader: Any) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are those of the whole of ``loader``'s
    data, computed in one forward pass over all of it at once: each layer normalises with the exact
    statistics of its input, so every later layer sees what it will see in evaluation. Every other
    module is in eval mode (no dropout)."""
    exact = copy.deepcopy(model).eval()
    x = torch.cat([b[0] if isinstance(b, (tuple, list)) else b for b in getattr(loader, "train", None) or loader])
    x = x.to(next(exact.parameters()).device)
    for _, m in bn_layers(exact):
        m.reset_running_stats()
        m.momentum = None
        m.train()
    exact(x)
    return exact.eval()
