"""Conv+BN folding: a convolution followed by batch norm becomes one convolution.

In eval mode BN is an affine map per channel, ``y = gamma * (x - mean) / sqrt(var + eps) + beta``,
so it folds into the conv's weight and bias exactly:

    w' = w * s[:, None, None, None],  b' = (b - mean) * s + beta,  s = gamma / sqrt(var + eps)

Pairs are found by tracing with torch.fx (the conv's only user is the BN); where a module does
not trace (data-dependent control flow) we recurse into its children and, inside
``nn.Sequential``, also accept a conv immediately followed by a BN. The folded conv replaces
the conv and the BN becomes ``nn.Identity``, so module names stay put and the result is plain
``torch.nn`` (saves, loads and exports like the original).
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Iterator

import torch
from torch import nn

from ..core.errors import UsageError

_CONV_BN = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)


def _is_pair(conv: nn.Module, bn: nn.Module) -> bool:
    return any(type(conv) is c and type(bn) is b for c, b in _CONV_BN)


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Qualified names (conv, bn) of every foldable pair, in model order."""
    pairs: list[tuple[str, str]] = []
    _collect(model, "", pairs)
    seen, out = set(), []
    for c, b in pairs:
        if c not in seen and b not in seen:
            seen.update((c, b))
            out.append((c, b))
    return out


def _collect(module: nn.Module, prefix: str, out: list[tuple[str, str]]) -> None:
    traced = _trace_pairs(module)
    if traced is not None:
        out.extend((prefix + c, prefix + b) for c, b in traced)
        return
    # fx failed somewhere inside: the order inside a Sequential is still the data flow
    if isinstance(module, nn.Sequential):
        kids = list(module.named_children())
        for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
            if _is_pair(m1, m2):
                out.append((prefix + n1, prefix + n2))
    for name, child in module.named_children():
        if next(child.children(), None) is not None:
            _collect(child, f"{prefix}{name}.", out)


def _trace_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    try:
        import torch.fx

        graph = torch.fx.Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any trace failure means "fall back"
        return None
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    mods = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op != "call_module" or len(user.args) != 1 or user.args[0] is not node or user.kwargs:
            continue
        conv, bn = mods.get(node.target), mods.get(user.target)
        if conv is None or bn is None or not _is_pair(conv, bn):
            continue
        # a module called twice (weight sharing) cannot be folded for one call site only
        if calls[node.target] != 1 or calls[user.target] != 1:
            continue
        pairs.append((node.target, user.target))
    return pairs


def fuse_conv_bn_weights(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new conv (or Linear) equal to ``bn(conv(x))`` in eval mode. Computed in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise UsageError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    dtype = conv.weight.dtype
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)
    fused = copy.deepcopy(conv)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=dtype, device=w.device))
    with torch.no_grad():
        fused.weight.copy_((w * s.reshape(-1, *([1] * (w.dim() - 1)))).to(dtype))
        fused.bias.copy_(((b - mean) * s + beta).to(dtype))
    return fused


def _check_eval(name: str, bn: nn.Module) -> None:
    if bn.training:
        raise UsageError(
            f"cannot fold {name!r}: its BatchNorm is in training mode (it normalises with batch statistics)",
            hint="call model.eval() before folding",
        )


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def fold_bn(model: nn.Module, *, inplace: bool = False, record: list | None = None) -> nn.Module:
    """Fold every Conv/Linear followed by BatchNorm into the conv; return the model.

    The model must be in eval mode (UsageError otherwise). The caller's model is copied unless
    ``inplace=True``. ``record``, if given, receives one dict per fold (conv, bn names).
    """
    pairs = find_conv_bn_pairs(model)
    mods = dict(model.named_modules())
    for c, b in pairs:
        _check_eval(b, mods[b])
    if not inplace:
        model = copy.deepcopy(model)
        mods = dict(model.named_modules())
    for c, b in pairs:
        bn = mods[b]
        if bn.running_mean is None:
            if record is not None:
                record.append({"fold": "conv_bn", "conv": c, "bn": b, "applied": False,
                               "why": "BatchNorm has no running statistics"})
            continue
        _set(model, c, fuse_conv_bn_weights(mods[c], bn))
        _set(model, b, nn.Identity())
        if record is not None:
            record.append({"fold": "conv_bn", "conv": c, "bn": b, "applied": True})
    return model


def iter_batchnorms(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for n, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            yield n, m
