"""RepVGG-style structural re-parameterization (Ding et al., 2021).

A block trains with three parallel branches, each ending in BN,

    y = act( BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x) )      (identity branch only when shapes allow)

and deploys as ``act(conv3x3'(x))``: every branch is a linear map in eval mode, so each folds to
a 3x3 kernel plus bias (the 1x1 kernel padded to the centre, the identity as a one-hot centre
kernel) and the sum of linear maps is the sum of their kernels. Exact up to float rounding; we
compute in float64.

The folded block is replaced by ``nn.Sequential(conv, act)`` -- plain torch.nn, so checkpoints of
deployed models load without this file and export to ONNX as one Conv + Relu.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UsageError


class RepVGGBlock(nn.Module):
    """3x3+BN, 1x1+BN and (when in == out and stride 1) identity BN, summed, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise UsageError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.dense = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        ))
        self.one = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, 1, stride, 0, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        ))
        self.identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x) + self.one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias (float64) equal to the block before its activation."""
        k3, b3 = _fuse(self.dense.conv.weight, self.dense.bn)
        k1, b1 = _fuse(self.one.conv.weight, self.one.bn)
        k = k3 + F.pad(k1, [1, 1, 1, 1])
        b = b3 + b1
        if self.identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros(self.in_channels, per_group, 3, 3, dtype=torch.float64, device=k.device)
            for i in range(self.in_channels):
                eye[i, i % per_group, 1, 1] = 1.0
            ki, bi = _fuse(eye, self.identity)
            k, b = k + ki, b + bi
        return k, b

    def to_deploy(self) -> nn.Sequential:
        """The single-branch equivalent: Sequential(conv=3x3 conv with bias, act)."""
        for name, m in self.named_modules():
            if isinstance(m, nn.BatchNorm2d) and m.training:
                raise UsageError(
                    f"cannot fold RepVGG block: BatchNorm {name!r} is in training mode",
                    hint="call model.eval() before folding",
                )
        k, b = self.equivalent_kernel_bias()
        w = self.dense.conv.weight
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, self.stride, 1, groups=self.groups, bias=True)
        conv = conv.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(k.to(w.dtype))
            conv.bias.copy_(b.to(w.dtype))
        return nn.Sequential(OrderedDict(conv=conv, act=copy.deepcopy(self.act)))


def _fuse(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(std)
    t = gamma / std
    return kernel.detach().double() * t.reshape(-1, 1, 1, 1), beta - bn.running_mean.double() * t


def fold_repvgg(model: nn.Module, *, inplace: bool = False, record: list | None = None) -> nn.Module:
    """Replace every RepVGGBlock with its single-branch form; modules that follow the official
    RepVGG/MobileOne convention (a ``switch_to_deploy()`` method) are switched in place.

    Raises UsageError when a block's BN is in training mode (fold only in eval mode).
    """
    blocks = [(n, m) for n, m in model.named_modules() if n and isinstance(m, RepVGGBlock)]
    others = [(n, m) for n, m in model.named_modules()
              if n and not isinstance(m, RepVGGBlock) and callable(getattr(m, "switch_to_deploy", None))]
    for n, m in blocks + others:
        bad = [bn for bn, b in m.named_modules() if isinstance(b, nn.modules.batchnorm._BatchNorm) and b.training]
        if bad:
            raise UsageError(
                f"cannot fold {n!r}: BatchNorm {bad[0]!r} is in training mode",
                hint="call model.eval() before folding",
            )
    if not inplace:
        model = copy.deepcopy(model)
    # deepest first, so a block nested in another block is folded before its parent
    for name, _ in sorted(blocks, key=lambda t: -t[0].count(".")):
        block = model.get_submodule(name)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, block.to_deploy())
        if record is not None:
            branches = 3 if block.identity is not None else 2
            record.append({"fold": "repvgg", "block": name, "branches": branches, "applied": True})
    for name, _ in others:
        model.get_submodule(name).switch_to_deploy()
        if record is not None:
            record.append({"fold": "switch_to_deploy", "block": name, "applied": True})
    return model
