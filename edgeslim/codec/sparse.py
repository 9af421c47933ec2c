"""Relative indexing of sparse weights (Deep Compression, section 2 / figure 2).

The positions of the kept weights of a layer (in the flattened weight, row-major) are
stored as gaps from the previous kept weight, each in ``index_bits`` bits. With
``b = index_bits`` there are 2**b gap symbols:

    symbol s in 0 .. 2**b - 2   the next kept weight is s + 1 positions further on
    symbol 2**b - 1 (FILLER)     a filler zero: advance 2**b - 1 positions, no weight there

A gap larger than 2**b - 1 is written as filler zeros followed by the remainder, as in
the paper. The filler's value is always zero, so unlike the paper's figure it spends no
codebook index: the value stream holds exactly one index per kept weight.
The first gap is counted from position -1, so a kept weight at position 0 is symbol 0.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import CheckpointError, UsageError


def _check_bits(index_bits: int) -> int:
    if not isinstance(index_bits, (int, np.integer)) or isinstance(index_bits, bool) or not 1 <= index_bits <= 8:
        raise UsageError(f"index bits must be an integer in 1..8, got {index_bits!r}")
    return int(index_bits)


def encode_positions(positions, index_bits: int) -> np.ndarray:
    """Gap symbols (int64 array, values < 2**index_bits) for strictly increasing positions."""
    b = _check_bits(index_bits)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if len(pos) == 0:
        return np.zeros(0, dtype=np.int64)
    gaps = np.diff(np.concatenate([[-1], pos]))
    if (gaps < 1).any():
        raise UsageError("positions must be >= 0 and strictly increasing")
    m = (1 << b) - 1  # largest gap one symbol holds, and the filler's stride
    fillers = (gaps - 1) // m
    last = gaps - fillers * m  # in 1..m
    out = np.full(int(fillers.sum()) + len(pos), m, dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = last - 1
    return out


def decode_positions(symbols, index_bits: int, numel: int | None = None) -> np.ndarray:
    """Positions of the kept weights from gap symbols (inverse of encode_positions)."""
    b = _check_bits(index_bits)
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    m = (1 << b) - 1
    if len(s) and (s.min() < 0 or s.max() > m):
        raise CheckpointError(f"index symbol outside 0..{m}")
    real = s != m
    step = np.where(real, s + 1, m)
    pos = np.cumsum(step) - 1
    out = pos[real]
    if numel is not None and len(out) and out[-1] >= numel:
        raise CheckpointError(f"sparse index points past the end of the layer ({int(out[-1])} >= {numel})")
    return out


def index_stats(positions, index_bits: int) -> dict:
    """Entries needed (kept + fillers) for ``positions`` at ``index_bits``."""
    syms = encode_positions(positions, index_bits)
    return {"entries": int(len(syms)), "fillers": int(len(syms) - len(np.asarray(positions).reshape(-1)))}
