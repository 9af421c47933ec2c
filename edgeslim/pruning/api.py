"""The ``edgeslim.prune`` verb: a thin function over ``core.registry.run``."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..core.config import Config
from ..core.registry import Context, run


def prune(model: nn.Module, config: Config, *, data: Any = None, input_shape=None, inplace: bool = False,
          teacher: nn.Module | None = None, seed: int = 0, progress: bool = True) -> nn.Module:
    """Prune ``model`` as ``config`` says and return the result (a copy unless ``inplace``).

    ``data`` (an edgeslim DataBundle) feeds data-driven importance and fine-tuning;
    ``input_shape`` (C, H, W) is needed for channel pruning when ``data`` is not given
    and the model has no ``input_shape`` attribute. What was done (per-layer table, notes,
    sizes): ``core.registry.run(model, config, ctx)`` returns it with the model.
    """
    from .depth import BlockPrune
    from .heads import HeadPrune
    from .tokens import TokenMerge
    from .structured import ChannelPrune
    from .unstructured import SparsePrune

    ctx = Context(data=data, teacher=teacher, input_shape=input_shape, seed=seed, progress=progress)
    return run(model, config, ctx, inplace=inplace, accepts=(ChannelPrune, HeadPrune, TokenMerge, BlockPrune, SparsePrune))[0]
