"""Pruning: channel (structured, physically smaller), attention heads / MLP / embedding width (vision transformers),
token merging, residual blocks (depth), fine / vector / kernel / N:M (masks).

    small = edgeslim.prune(model, ChannelPrune(ratio=0.5, importance="l1"), data=data)
    sparse = edgeslim.prune(model, SparsePrune(granularity="fine", ratio=0.9), data=data)
    small, details = core.registry.run(model, ChannelPrune(ratio=0.5), Context(data=data))
"""
from __future__ import annotations

from .api import prune
from .depth import BlockPrune
from .heads import HeadPrune
from .hooks import bn_l1_penalty
from .importance import IMPORTANCE_NAMES, Importance, get_importance
from .schedule import agp_sparsity
from .structured import ChannelPrune
from .tokens import TokenMerge
from .unstructured import SparsePrune, sparse_size

__all__ = ["BlockPrune", "ChannelPrune", "HeadPrune", "IMPORTANCE_NAMES", "Importance", "SparsePrune", "TokenMerge",
           "agp_sparsity", "bn_l1_penalty", "get_importance", "prune", "sparse_size"]
