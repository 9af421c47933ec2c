"""``synthetic:C,H,W[:N]``: random images for latency and calibration runs, no labels (y == -1).

Pixels are uniform uint8 noise drawn from ``seed``; normalised with mean 0.5 and
the uniform distribution's std (1/sqrt(12)) they come out roughly zero-mean,
unit-variance. Train holds the first N samples drawn (default 256), test the
next N, and validation (when val_fraction > 0) round(N * val_fraction), at
least 1, drawn after those: no sample is shared, and train and test do not
depend on val_fraction.
"""
from __future__ import annotations

import math

import torch

from ..core.errors import UsageError
from .bundle import DataMeta, Normalizer, TensorSplit

DEFAULT_N = 256
FORM = "synthetic:C,H,W[:N]  e.g. synthetic:3,32,32 or synthetic:1,28,28:64"
_MAX_BYTES = 2**31  # all splits together (at most 3 N samples), as uint8


def parse(spec: str) -> tuple[tuple[int, int, int], int]:
    """'C,H,W[:N]' (the part after 'synthetic:') -> ((C, H, W), N)."""
    shape_text, _, n_text = spec.partition(":")
    try:
        shape = tuple(int(v) for v in shape_text.split(","))
        n = int(n_text) if n_text else DEFAULT_N
    except ValueError:
        shape, n = (), 0
    if len(shape) != 3 or min(shape) < 1 or n < 1:
        raise UsageError(
            f"bad synthetic spec 'synthetic:{spec}': need three positive integers C,H,W and an optional positive N",
            hint=f"write {FORM}",
        )
    size = 3 * n * math.prod(shape)
    if size > _MAX_BYTES:
        raise UsageError(
            f"synthetic:{spec} would hold {size / 2**30:.1f} GiB of inputs (limit {_MAX_BYTES / 2**30:.0f} GiB)",
            hint="use a smaller N or shape",
        )
    return shape, n


def build(spec: str, *, val_fraction: float, seed: int):
    """(train, val, test, meta) for load(); val is None when val_fraction is 0."""
    shape, n = parse(spec)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    total = 2 * n + n_val
    g = torch.Generator().manual_seed(seed)
    # two draws, so train and test are the same whatever val_fraction is
    images = torch.cat([torch.randint(0, 256, (k, *shape), dtype=torch.uint8, generator=g) for k in (2 * n, n_val)])
    labels = torch.full((total,), -1, dtype=torch.int64)
    c = shape[0]
    mean, std = (0.5,) * c, (1 / math.sqrt(12),) * c
    normalize = Normalizer(mean, std)
    train = TensorSplit(images, labels, normalize, torch.arange(n))
    test = TensorSplit(images, labels, normalize, torch.arange(n, 2 * n))
    val = TensorSplit(images, labels, normalize, torch.arange(2 * n, total)) if n_val else None
    meta = DataMeta(
        name=f"synthetic:{','.join(map(str, shape))}:{n}",
        classes=[],
        num_classes=0,
        input_shape=shape,
        mean=mean,
        std=std,
        labelled=False,
    )
    return train, val, test, meta
