"""Input shapes: one rule for (C, H, W) versus (N, C, H, W), used everywhere a shape is given.

A 3-tuple is one image, (C, H, W); any other rank is already batched ((N, C, H, W), or (N, F) for
a model that takes flat vectors). ``batched`` adds the batch, ``unbatched`` takes it off.
"""
from __future__ import annotations

from typing import Iterable

from .errors import UsageError


def _ints(shape: Iterable) -> tuple[int, ...]:
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise UsageError(f"a shape must be a sequence of integers, got {shape!r}") from None
    if not s or min(s) < 1:
        raise UsageError(f"a shape needs positive sizes, got {list(s)}", hint="e.g. (1, 28, 28) or (1, 1, 28, 28)")
    return s


def batched(shape: Iterable, batch: int = 1) -> tuple[int, ...]:
    """(C, H, W) -> (batch, C, H, W); a shape that already has its batch is returned as it is."""
    s = _ints(shape)
    return (batch, *s) if len(s) in (1, 3) else s


def unbatched(shape: Iterable) -> tuple[int, ...]:
    """(N, C, H, W) -> (C, H, W); a (C, H, W) shape is returned as it is."""
    s = _ints(shape)
    return s[1:] if len(s) in (2, 4) else s
