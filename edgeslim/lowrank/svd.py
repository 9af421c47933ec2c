"""Truncated SVD for Linear layers: ``W (out x in) ~ U_r S_r V_r^T`` becomes two Linears,
``in -> r`` (weight ``sqrt(S_r) V_r^T``, no bias) then ``r -> out`` (weight ``U_r sqrt(S_r)``, the
original bias). Splitting sqrt(S) evenly keeps both factors on the same scale for fine-tuning.
At full rank ``r = min(in, out)`` the pair equals the layer up to float rounding.

:class:`SVDLinear` is this method's :class:`~edgeslim.lowrank.decomposition.Decomposition`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UsageError
from . import rank as _rank
from .decomposition import Geometry


def max_rank(layer: nn.Linear) -> int:
    return min(layer.in_features, layer.out_features)


def check_rank(rank: int, limit: int, name: str, what: str) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise UsageError(f"rank for {name or 'the layer'} must be a positive integer, got {rank!r}",
                         hint="a rank of 0 would remove the layer; use 1 or more")
    if rank > limit:
        raise UsageError(f"rank {rank} is larger than {name or 'the layer'} allows (at most {limit} = {what})",
                         hint=f"use a rank between 1 and {limit}")


def singular_values(layer: nn.Linear) -> torch.Tensor:
    return torch.linalg.svdvals(layer.weight.detach().double())


def svd_linear(layer: nn.Linear, rank: int, *, name: str = "") -> nn.Sequential:
    """Two Linears whose product is the best rank-``rank`` approximation of ``layer``."""
    if not isinstance(layer, nn.Linear):
        raise UsageError(f"SVD factorizes nn.Linear layers; {name or 'this layer'} is {type(layer).__name__}")
    check_rank(rank, max_rank(layer), name, "min(in_features, out_features)")
    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    first, second = first.to(w.device, w.dtype), second.to(w.device, w.dtype)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).to(w.dtype))
        second.weight.copy_((u[:, :rank] * root[None, :]).to(w.dtype))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


class SVDLinear:
    """The Decomposition behind ``SVD``: one spectrum (the weight's), one rank per layer."""

    layer_type = nn.Linear

    def unsupported(self, layer: nn.Module) -> str | None:
        # exact type: a subclass (a quantized or LoRA Linear) may not be a plain matrix product
        return None if type(layer) is nn.Linear else "not a Linear"

    def fixed_ranks(self, layer: nn.Linear, rank: int, name: str) -> int:
        check_rank(rank, max_rank(layer), name, "min(in_features, out_features)")
        return rank

    def spectra(self, layer: nn.Linear) -> tuple:
        return (singular_values(layer).numpy(),)

    def energy_ranks(self, spectra: tuple, energy: float) -> int:
        return _rank.energy_rank(spectra[0], energy)

    def vbmf_ranks(self, layer: nn.Linear) -> int:
        return _rank.vbmf_rank(layer.weight.detach().double().numpy())

    def ratio_ranks(self, layer: nn.Linear, ratio: float, geo: Geometry, metric: str) -> int:
        return _rank.svd_rank_for_ratio(layer, ratio, metric)

    def cost(self, layer: nn.Linear, ranks: int, geo: Geometry) -> tuple[int, int]:
        p, m = _rank.svd_cost(layer, ranks)
        return p, m * geo.apps  # a Linear over a sequence runs once per token

    def build(self, layer: nn.Linear, ranks: int, *, name: str, seed: int) -> nn.Module:
        return svd_linear(layer, ranks, name=name)  # deterministic: no seed to use
