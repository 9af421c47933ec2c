"""Fused q/k/v attention (timm's, DeiT's and edgeslim's layout: a module with a ``qkv`` Linear of
3 x heads x head_dim outputs, a ``proj`` Linear reading heads x head_dim, and int ``num_heads`` and
``head_dim`` attributes its forward reshapes with).

The tracer cannot number the projection's inputs through the attention product, so for these the
channel group rooted at ``qkv`` is built and cut here: its channels are q, k and v of every head
(``3 * num_heads`` channel groups, so the same dims go from each), the projection reads v's, and a
surgery slices both and updates ``head_dim`` (and ``attn_dim``) -- or, for whole heads, ``num_heads``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..core.errors import UsageError


def attention_of(model: nn.Module, name: str, layer: nn.Module):
    """The fused-qkv attention module whose ``qkv`` is ``layer`` (named ``name``), else None."""
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    if getattr(parent, "qkv", None) is layer and isinstance(getattr(parent, "proj", None), nn.Linear) \
            and isinstance(getattr(parent, "num_heads", None), int) and isinstance(getattr(parent, "head_dim", None), int) \
            and layer.out_features == 3 * parent.num_heads * parent.head_dim == 3 * parent.proj.in_features:
        return parent
    return None


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Every fused-qkv attention module of ``model``."""
    names = {m: n for n, m in model.named_modules()}
    return [m for m in model.modules() if isinstance(getattr(m, "qkv", None), nn.Linear)
            and attention_of(model, names.get(m.qkv, ""), m.qkv) is m]


def members(attn: nn.Module, qkv_name: str, traced: list, member_type) -> tuple[list, str | None]:
    """The group's members (qkv's outputs, the projection's v inputs, what else the trace found
    besides the projection) and why it must stay whole, if it must."""
    width = attn.proj.in_features
    proj_name = qkv_name.rsplit(".", 1)[0] + ".proj" if "." in qkv_name else "proj"
    others = [m for m in traced if m.module is not attn.qkv and m.module is not attn.proj]
    out = [member_type(qkv_name, attn.qkv, "out", list(range(3 * width)), list(range(3 * width))),
           member_type(proj_name, attn.proj, "in", list(range(width)), list(range(2 * width, 3 * width)))]
    frozen = None
    if others:
        frozen = f"its q/k/v channels also reach {others[0].name!r}, which edgeslim cannot slice per head"
    return out, frozen


def check_symmetric(attn: nn.Module, idxs: Sequence[int]) -> None:
    width = attn.proj.in_features
    parts = [{i - s * width for i in idxs if s * width <= i < (s + 1) * width} for s in range(3)]
    if not parts[0] == parts[1] == parts[2]:
        raise UsageError("the channels removed from a fused qkv projection must be the same in q, k and v")


def _slice_linear(layer: nn.Linear, keep: list[int], dim: int) -> None:
    idx = torch.as_tensor(keep, dtype=torch.long, device=layer.weight.device)
    layer.weight = nn.Parameter(layer.weight.data.index_select(dim, idx).clone())
    if dim == 0:
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data.index_select(0, idx).clone())
        layer.out_features = len(keep)
    else:
        layer.in_features = len(keep)


def remove(attn: nn.Module, idxs: Sequence[int], *, whole_heads: int = 0) -> None:
    """Cut channels ``idxs`` (q/k/v numbering, the same in each) from ``attn``'s qkv and projection;
    ``whole_heads``: how many whole heads these are (``num_heads`` falls by it)."""
    check_symmetric(attn, idxs)
    width = attn.proj.in_features
    drop = set(int(i) for i in idxs)
    _slice_linear(attn.qkv, [i for i in range(3 * width) if i not in drop], 0)
    _slice_linear(attn.proj, [i for i in range(width) if i not in {j % width for j in drop}], 1)
    attn.num_heads -= whole_heads
    attn.head_dim = attn.proj.in_features // attn.num_heads
    if isinstance(getattr(attn, "attn_dim", None), int):
        attn.attn_dim = attn.proj.in_features


def head_channels(attn: nn.Module, heads: Sequence[int]) -> list[int]:
    """The q/k/v channels of whole ``heads``."""
    width, d = attn.proj.in_features, attn.head_dim
    return sorted(s * width + h * d + j for s in range(3) for h in heads for j in range(d))


def scores_of_heads(channel_scores: Any, attn: nn.Module) -> torch.Tensor:
    """Per-head importance: a channel score vector (q/k/v numbering) summed over each head's channels."""
    s = torch.as_tensor(channel_scores, dtype=torch.float64).reshape(3, attn.num_heads, attn.head_dim)
    return s.sum((0, 2))
