"""Handlers registered per config type: one mechanism behind every verb.

    @register(ChannelPrune)
    def _apply(model, config, ctx) -> nn.Module: ...

``apply(model, config, ctx)`` finds the handler for ``type(config)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from .config import Config
from .errors import UsageError

Handler = Callable[[nn.Module, Config, "Context"], nn.Module]
_HANDLERS: dict[type, Handler] = {}


@dataclasses.dataclass
class Context:
    """What a handler may need besides the model and its config."""

    data: Any = None  # edgeslim.data.DataBundle or None
    teacher: nn.Module | None = None
    input_shape: tuple[int, ...] | None = None  # (C, H, W) when there is no data to read it from
    seed: int = 0
    progress: bool = True
    details: dict = dataclasses.field(default_factory=dict)  # handlers record what they did here


def register(config_type: type[Config]) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn

    return deco


def handler_for(config: Config) -> Handler:
    for cls in type(config).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise UsageError(f"no handler registered for {type(config).__name__}")


def apply(model: nn.Module, config: Config, ctx: Context | None = None) -> nn.Module:
    return handler_for(config)(model, config, ctx or Context())


def registered() -> dict[type, Handler]:
    return dict(_HANDLERS)
