"""Lightweight architectures for the zoo, each with a width multiplier.

- ``shufflenetv2_tiny``: ShuffleNetV2 units (Ma et al., 2018) -- channel split, a depthwise
  separable branch, concat, channel shuffle; stride-2 units run both halves through a branch.
- ``repvgg_a0``: RepVGG-A0 layout (Ding et al., 2021; depths 1-2-4-14-1, widths 48-48-96-192-1280
  at width 1.0) built from ``RepVGGBlock``; it trains multi-branch, and
  ``edgeslim.reparam`` folds it to a plain stack of 3x3 conv + ReLU for deployment.

Defaults fit the zoo convention: 1 input channel, 28x28 input, 10 classes; the first stage keeps
the resolution (stride 1) so small inputs keep some spatial extent through the network. Both pool
adaptively, so they take any input size (``input_size`` is accepted and checked, not needed).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..core.errors import UsageError
from ..reparameterization.repvgg import RepVGGBlock
from .zoo import Size, image_size, register_model


def _div(c: float, d: int = 8) -> int:
    """Round a channel count to a multiple of d (at least d), as MobileNet/ShuffleNet do."""
    return max(d, int(c + d / 2) // d * d)


def _check_width(width_mult: float) -> None:
    if not (isinstance(width_mult, (int, float)) and 0 < width_mult <= 8):
        raise UsageError(f"width_mult must be in (0, 8], got {width_mult!r}")


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 1:
            if cin != cout:
                raise UsageError("a stride-1 ShuffleNet unit needs cin == cout")
            self.shortcut = nn.Identity()
            bin_ = half
        else:
            # the stride-2 unit also runs the other half through a depthwise separable path
            self.shortcut = nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin, relu=False), _conv_bn(cin, half, 1))
            bin_ = cin
        self.branch = nn.Sequential(
            _conv_bn(bin_, half, 1),
            _conv_bn(half, half, 3, stride, groups=half, relu=False),
            _conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch(b)], dim=1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                 stages: tuple[int, ...] = (2, 3, 2)):
        super().__init__()
        _check_width(width_mult)
        widths = [_div(24 * width_mult), *(_div(c * width_mult, 16) for c in (48, 96, 192))]
        last = _div(256 * max(1.0, width_mult))
        self.stem = _conv_bn(in_channels, widths[0], 3, 1)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for cout, n in zip(widths[1:], stages):
            blocks.append(ShuffleUnit(cin, cout, 2))
            blocks += [ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.head(self.features(self.stem(x))))))


class RepVGG(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                 depths: tuple[int, ...] = (1, 2, 4, 14, 1), a: float = 0.75, b: float = 2.5,
                 stem_stride: int = 1):
        super().__init__()
        _check_width(width_mult)
        base = (min(64, 64 * a), 64 * a, 128 * a, 256 * a, 512 * b)
        widths = [_div(c * width_mult) for c in base]
        stages = []
        cin = in_channels
        for i, (cout, depth) in enumerate(zip(widths, depths)):
            stride = stem_stride if i == 0 else 2
            blocks = [RepVGGBlock(cin, cout, stride)] + [RepVGGBlock(cout, cout, 1) for _ in range(depth - 1)]
            stages.append((f"stage{i}", nn.Sequential(*blocks)))
            cin = cout
        self.features = nn.Sequential(OrderedDict(stages))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


@register_model("shufflenetv2_tiny", description="ShuffleNetV2-style units (split, depthwise branch, shuffle), width multiplier")
def shufflenetv2_tiny(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
                      input_size: Size | None = None) -> nn.Module:
    image_size("shufflenetv2_tiny", input_size)  # pools adaptively: any size
    return ShuffleNetV2Tiny(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)


@register_model("repvgg_a0", description="RepVGG-A0 layout: trains multi-branch, folds to 3x3 conv + ReLU (edgeslim reparam)")
def repvgg_a0(num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0,
              input_size: Size | None = None) -> nn.Module:
    image_size("repvgg_a0", input_size)  # pools adaptively: any size
    return RepVGG(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
