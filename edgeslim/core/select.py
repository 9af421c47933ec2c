"""Which layers a config touches: one selector shared by every technique.

A selection is given by layer names or regexes (``include``), module types
(``types``) and an ``exclude`` list; a ``{pattern: value}`` map gives per-layer
settings (mixed precision, per-layer ratios). Patterns match the full qualified
name (``layer1.0.conv1``) as a regex; a plain name is a regex matching itself.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Mapping

from torch import nn

from .errors import UsageError


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def select_layers(
    model: nn.Module,
    *,
    types: tuple[type, ...] = (nn.Conv2d, nn.Linear),
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> list[tuple[str, nn.Module]]:
    """Named leaf modules of the given types, filtered by include/exclude regexes."""
    include = list(include or [])
    exclude = list(exclude or [])
    named = [(n, m) for n, m in model.named_modules() if n and isinstance(m, types)]
    for p in include + exclude:
        try:
            re.compile(p)
        except re.error as e:
            raise UsageError(f"bad layer pattern {p!r}: {e}") from None
        if not any(re.fullmatch(p, n) for n, _ in model.named_modules() if n):
            close = difflib.get_close_matches(p, [n for n, _ in named], n=3)
            raise UsageError(
                f"layer pattern {p!r} matches no layer",
                hint=f"did you mean {', '.join(close)}?" if close else "list layers with `edgeslim profile MODEL`",
            )
    out = []
    for n, m in named:
        if include and not _matches(n, include):
            continue
        if _matches(n, exclude):
            continue
        out.append((n, m))
    return out


def resolve_layer_map(
    model: nn.Module, mapping: Mapping[str, Any], *, types: tuple[type, ...] = (nn.Conv2d, nn.Linear)
) -> dict[str, Any]:
    """Per-layer values from a {pattern: value} map; the first matching pattern wins."""
    names = [n for n, m in model.named_modules() if n and isinstance(m, types)]
    out: dict[str, Any] = {}
    for p in mapping:
        if not any(re.fullmatch(p, n) for n in names):
            close = difflib.get_close_matches(p, names, n=3)
            raise UsageError(
                f"layer pattern {p!r} matches no layer",
                hint=f"did you mean {', '.join(close)}?" if close else f"layers: {', '.join(names[:8])}…",
            )
    for n in names:
        for p, v in mapping.items():
            if re.fullmatch(p, n):
                out[n] = v
                break
    return out
