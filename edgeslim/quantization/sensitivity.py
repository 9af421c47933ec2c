"""Per-layer sensitivity: the accuracy lost when only that layer is quantized.

The ranking feeds a mixed-precision map: the most sensitive layers stay at 8 bits or float.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from torch import nn

from ..core.select import select_layers


def sensitivity(model: nn.Module, config, data: Any, *, loader: Any = None, max_batches: int | None = 10,
                progress: bool = False) -> list[dict]:
    """[{"layer", "accuracy", "drop"}] sorted by drop (largest first). ``config`` is a PTQ config;
    each run quantizes one layer (its weights and its input / output activations) with it."""
    from ..train import task_score
    from . import quantize

    loader = loader if loader is not None else (getattr(data, "val", None) or getattr(data, "test", None))
    base = task_score(model, loader, max_batches=max_batches)
    names = [n for n, m in select_layers(model, types=(nn.Conv2d, nn.Linear)) if type(m) in (nn.Conv2d, nn.Linear)]
    rows = []
    for name in names:
        cfg = config.replace(layers=(re.escape(name),), exclude=(), mixed_precision=())
        q = quantize(copy.deepcopy(model), cfg, data=data, progress=progress)
        acc = task_score(q, loader, max_batches=max_batches)
        rows.append({"layer": name, "accuracy": acc,
                     "drop": None if base is None or acc is None else round(base - acc, 4)})
    rows.sort(key=lambda r: -(r["drop"] or 0.0))
    return rows


def suggest_bitmap(rows: list[dict], *, keep: int = 1, low_bits: int = 4, high_bits: int = 8) -> dict[str, int]:
    """The ``keep`` most sensitive layers at ``high_bits``, the rest at ``low_bits``."""
    return {re.escape(r["layer"]): (high_bits if i < keep else low_bits) for i, r in enumerate(rows)}
