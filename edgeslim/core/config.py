"""Configs: frozen, keyword-only dataclasses that validate themselves and round-trip
through a plain dict (and so YAML), so recipes and the search can build them.

    @dataclass(frozen=True, kw_only=True)
    class ChannelPrune(Config):
        kind = "channel_prune"          # the name used in dicts / YAML
        ratio: float = 0.5
        def validate(self): ...         # raise UsageError

    ChannelPrune.from_dict({"ratio": 0.3}) ; cfg.to_dict() -> {"type": "channel_prune", "ratio": 0.3}
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, ClassVar

import yaml

from .errors import UsageError

_CONFIG_TYPES: dict[str, type["Config"]] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What every config declares about itself, so that recipes and the search never need to know
    which technique a config belongs to:

    - ``kind``: its name in dicts / YAML;
    - ``final``: the step produces the deployable format (quantization) and must be a recipe's last;
    - ``untrained()``: the cheap variant that builds the same architecture without training (used
      to time an architecture), or None when the step only trains (it is then skipped);
    - ``split_training()``: (the step without its fine-tuning, the fine-tuning as a step of its own
      or None), so a recipe runs every fine-tune as an explicit step.
    """

    kind: ClassVar[str] = ""
    final: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("kind"):
            _CONFIG_TYPES[cls.kind] = cls

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UsageError on a bad value. Subclasses override."""

    # -- dict / YAML -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        d = dict(d)
        kind = d.pop("type", None)
        target = cls
        if cls is Config or (kind and kind != cls.kind):
            if kind is None:
                raise UsageError("config has no 'type' key", hint=f"one of: {', '.join(sorted(_CONFIG_TYPES))}")
            target = config_type(kind)
        names = {f.name for f in dataclasses.fields(target)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(
                f"unknown key {unknown[0]!r} for {target.kind}",
                hint=f"valid keys: {', '.join(sorted(names)) or '(none)'}",
            )
        hints = typing.get_type_hints(target)
        kwargs = {k: _coerce(v, hints.get(k)) for k, v in d.items()}
        return target(**kwargs)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Config":
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise UsageError("a config in YAML must be a mapping")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    # -- what recipes and the search ask of a step ----------------------------
    def untrained(self) -> "Config | None":
        """The variant that builds this step's architecture without training; None: skip it."""
        return self

    def split_training(self) -> "tuple[Config, Config | None]":
        """(this step without its own fine-tuning, that fine-tuning as a step or None)."""
        return self, None


def config_type(kind: str) -> type[Config]:
    try:
        return _CONFIG_TYPES[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, _CONFIG_TYPES, n=3)
        raise UsageError(
            f"unknown config type {kind!r}",
            hint=f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(_CONFIG_TYPES))}",
        ) from None


def config_types() -> dict[str, type[Config]]:
    return dict(_CONFIG_TYPES)


def _plain(v: Any) -> Any:
    if isinstance(v, Config):
        return v.to_dict()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _coerce(v: Any, hint: Any) -> Any:
    # YAML gives lists where the dataclass holds tuples (tuples keep configs hashable)
    origin = typing.get_origin(hint)
    if isinstance(v, list) and (origin is tuple or hint is tuple or _union_has(hint, tuple)):
        return tuple(v)
    return v


def _union_has(hint: Any, t: type) -> bool:
    return any(typing.get_origin(a) is t or a is t for a in typing.get_args(hint))
