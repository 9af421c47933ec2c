"""A user's trained zoo model as the largest subnet of a space (elastic depth and width), so that
architecture search starts from the model the user has: mobilenetv2_tiny (any width multiplier) and
the CIFAR ResNets (resnet8, resnet20, any width).

    space_of(model)  the space whose largest subnet is ``model``: each stage keeps 1..its depth blocks
                     and 0.5 / 0.75 / 1.0 of its width; expansion may shrink to 1/2 and 2/3 of its ratio;
                     the kernel stays the model's
    rename(model)    the model's weights under nasnet's names (stem, blocks.N, head, classifier)
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UsageError
from ..models.zoo import CifarResNet, InvertedResidual, MobileNetV2Tiny
from .space import Space, from_dict

WIDTHS = (0.5, 0.75, 1.0)
DIVISOR = 4


def convertible(model: nn.Module) -> bool:
    return isinstance(model, (MobileNetV2Tiny, CifarResNet))


def _need(model: nn.Module) -> None:
    if not convertible(model):
        raise UsageError(f"a {type(model).__name__} cannot become a supernet: NAS converts the zoo's mobilenetv2_tiny "
                         "and CIFAR ResNets (resnet8, resnet20)", hint="or search a space from scratch: --space mobilenet")


def _group(blocks: list[nn.Module], out_of, stride_of) -> list[list[nn.Module]]:
    stages: list[list[nn.Module]] = []
    for b in blocks:
        if not stages or stride_of(b) != 1 or out_of(b) != out_of(stages[-1][-1]):
            stages.append([])
        stages[-1].append(b)
    return stages


def _mb_parts(b: InvertedResidual) -> tuple[int, int, int, int, int]:
    convs = [m for m in b.conv if isinstance(m, nn.Conv2d)]
    dw = convs[-2]
    cin = convs[0].in_channels
    return cin, convs[-1].out_channels, dw.stride[0], dw.out_channels // cin, dw.kernel_size[0]


def space_of(model: nn.Module) -> Space:
    _need(model)
    if isinstance(model, MobileNetV2Tiny):
        feats = list(model.features)
        stages = _group(feats[1:-1], lambda b: _mb_parts(b)[1], lambda b: _mb_parts(b)[2])
        rows = []
        for i, st in enumerate(stages):
            cin, cout, stride, t, k = _mb_parts(st[0])
            fixed = i == 0 and stride == 1 and cin == cout  # its identity residual ties it to the stem
            rows.append({"channels": cout, "stride": stride, "depth": list(range(1, len(st) + 1)),
                         "width": [1.0] if fixed else list(WIDTHS),
                         "expand": sorted({max(2, t // 2), max(2, 2 * t // 3), t}) if t > 1 else [1], "kernel": [k]})
        stem, head = feats[0][0], feats[-1][0]
        return from_dict({"type": "mobilenet", "name": "mobilenetv2_tiny", "divisor": DIVISOR,
                          "stem": {"out": stem.out_channels, "kernel": stem.kernel_size[0], "stride": stem.stride[0],
                                   "act": "relu6"},
                          "head": {"out": head.out_channels}, "stages": rows})
    layers = [model.layer1, model.layer2, model.layer3]
    rows = [{"channels": layer[0].conv1.out_channels, "stride": layer[0].conv1.stride[0],
             "depth": list(range(1, len(layer) + 1)), "width": list(WIDTHS)} for layer in layers]
    return from_dict({"type": "resnet", "name": type(model).__name__.lower(), "divisor": DIVISOR,
                      "stem": {"kernel": model.conv1.kernel_size[0], "stride": model.conv1.stride[0], "act": "relu"},
                      "head": None, "stages": rows})


def rename(model: nn.Module) -> dict[str, torch.Tensor]:
    _need(model)
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}

    def put(prefix_from: str, prefix_to: str) -> None:
        for k, v in sd.items():
            if k.startswith(prefix_from + "."):
                out[prefix_to + k[len(prefix_from):]] = v

    if isinstance(model, MobileNetV2Tiny):
        n = len(model.features)
        put("features.0", "stem")
        for i in range(1, n - 1):
            put(f"features.{i}", f"blocks.{i - 1}")
        put(f"features.{n - 1}", "head")
        put("classifier", "classifier")
    else:
        put("conv1", "stem.0")
        put("bn1", "stem.1")
        k = 0
        for s, layer in enumerate((model.layer1, model.layer2, model.layer3), start=1):
            for j in range(len(layer)):
                put(f"layer{s}.{j}", f"blocks.{k}")
                k += 1
        put("fc", "classifier")
    return out
