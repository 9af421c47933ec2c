"""Handlers registered per config type: one mechanism behind every verb.

    @register(ChannelPrune)
    def _apply(model, config, ctx) -> nn.Module: ...

``apply(model, config, ctx)`` finds the handler for ``type(config)`` and is the one way a config is
applied; ``run(model, config, ctx)`` is what every verb calls (checks, a copy unless ``inplace``,
returns the model and what the handler recorded). Exporters of final formats are registered the
same way: ``@register_export(PTQ) def _export(model, path, example, config, *, loader=None)``.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

from torch import nn

from .config import Config
from .errors import UsageError

Handler = Callable[[nn.Module, Config, "Context"], nn.Module]
Exporter = Callable[..., dict]  # (model, path, example, config, *, loader=None) -> {"path", "size_bytes", ...}
_HANDLERS: dict[type, Handler] = {}
_EXPORTERS: dict[type, Exporter] = {}  # ONNX Runtime's: config type -> exporter
_RUNTIME_EXPORTERS: dict[str, dict[type, Exporter]] = {"onnxruntime": _EXPORTERS}  # runtime -> its table


@dataclasses.dataclass
class Context:
    """What a handler may need besides the model and its config: one context type for all."""

    data: Any = None  # edgeslim.data.DataBundle, a DataLoader, or None
    teacher: nn.Module | None = None  # distillation's teacher; used only by steps that distil
    input_shape: tuple[int, ...] | None = None  # (C, H, W) when there is no data to read it from
    seed: int = 0
    progress: bool = True
    details: dict = dataclasses.field(default_factory=dict)  # handlers record what they did here

    def __post_init__(self) -> None:
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)


def register(config_type: type[Config]) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn

    return deco


def _lookup(table: dict[type, Any], config: Config) -> Any:
    for cls in type(config).__mro__:
        if cls in table:
            return table[cls]
    return None


def handler_for(config: Config) -> Handler:
    fn = _lookup(_HANDLERS, config)
    if fn is None:
        raise UsageError(f"no handler registered for {type(config).__name__}",
                         hint="import the package that defines it (edgeslim.search.recipe.register_all() imports all)")
    return fn


def apply(model: nn.Module, config: Config, ctx: Context | None = None) -> nn.Module:
    return handler_for(config)(model, config, ctx or Context())


def registered() -> dict[type, Handler]:
    return dict(_HANDLERS)


def _names(types: tuple[type, ...]) -> str:
    names = [t.__name__ for t in types]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def run(model: nn.Module, config: Config, ctx: Context | None = None, *, inplace: bool = False,
        accepts: tuple[type, ...] = ()) -> tuple[nn.Module, dict]:
    """Apply ``config`` to ``model`` (a deep copy unless ``inplace``) -> (model, ctx.details).

    ``accepts``: the config types the calling verb takes (named in the error for any other).
    """
    if not isinstance(config, Config) or (accepts and not isinstance(config, accepts)):
        expected = _names(accepts) if accepts else "an edgeslim config"
        raise UsageError(f"expected a {expected} config, got {type(config).__name__}",
                         hint="build one with its class, e.g. ChannelPrune(ratio=0.5), or Config.from_dict({...})")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    handler = handler_for(config)  # before the copy: an unknown config costs nothing
    ctx = ctx if ctx is not None else Context()
    work = model if inplace else copy.deepcopy(model)
    return handler(work, config, ctx), ctx.details


# -- exporters of final formats -----------------------------------------------------------------
def register_export(config_type: type[Config], runtime: str = "onnxruntime") -> Callable[[Exporter], Exporter]:
    """Register the function that writes ``runtime``'s deployable file of models made by ``config_type``
    (``fn(model, path, example, config, *, loader=None) -> dict``)."""
    def deco(fn: Exporter) -> Exporter:
        _RUNTIME_EXPORTERS.setdefault(runtime, {})[config_type] = fn
        return fn

    return deco


def export_for(config: Config, runtime: str = "onnxruntime") -> Exporter:
    table = _RUNTIME_EXPORTERS.get(runtime, {})
    fn = _lookup(table, config)
    if fn is None:
        known = ", ".join(sorted(t.kind or t.__name__ for t in table)) or "none registered"
        raise UsageError(f"no {runtime} exporter registered for {type(config).__name__}",
                         hint=f"{runtime} exporters exist for: {known}")
    return fn
