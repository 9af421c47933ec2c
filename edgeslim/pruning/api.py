"""The ``edgeslim.prune`` verb."""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..core.config import Config
from ..core.errors import UsageError
from ..core.registry import Context, apply


def prune_with_details(model: nn.Module, config: Config, *, data: Any = None, input_shape=None,
                       inplace: bool = False, teacher: nn.Module | None = None, seed: int = 0,
                       progress: bool = True) -> tuple[nn.Module, dict]:
    """Like :func:`prune`, also returning what was done (per-layer table, notes, sizes)."""
    from . import depth, structured, unstructured  # noqa: F401  (register the handlers)

    if not isinstance(config, Config):
        raise UsageError(f"config must be a ChannelPrune, BlockPrune or SparsePrune, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    work = model if inplace else copy.deepcopy(model)
    ctx = Context(data=data, teacher=teacher, seed=seed, progress=progress,
                  input_shape=tuple(input_shape) if input_shape is not None else None)
    out = apply(work, config, ctx)
    return out, ctx.details


def prune(model: nn.Module, config: Config, *, data: Any = None, input_shape=None, inplace: bool = False,
          teacher: nn.Module | None = None, seed: int = 0, progress: bool = True) -> nn.Module:
    """Prune ``model`` as ``config`` says and return the result (a copy unless ``inplace``).

    ``data`` (an edgeslim DataBundle) feeds data-driven importance and fine-tuning;
    ``input_shape`` (C, H, W) is needed for channel pruning when ``data`` is not given
    and the model has no ``input_shape`` attribute.
    """
    return prune_with_details(model, config, data=data, input_shape=input_shape, inplace=inplace,
                              teacher=teacher, seed=seed, progress=progress)[0]
