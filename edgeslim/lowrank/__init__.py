"""Low-rank decomposition: SVD for Linear, Tucker-2 and CP for Conv2d.

    small = edgeslim.factorize(model, Tucker(target_macs=0.5), data=data)

Re-exports only. Where things live:

- ``config.py``: the configs ``SVD``, ``Tucker``, ``CP`` (options shared on ``_LowRank``);
- ``decomposition.py``: the ``Decomposition`` protocol, the one seam between methods and engine;
- ``svd.py``, ``tucker.py``, ``cp.py``: each method's numerical kernel and its ``Decomposition``;
- ``rank.py``: spectra, rank rules (energy, VBMF, cost ratio) and cost models;
- ``engine.py``: the driver every method shares (rank allocation, ONNX Runtime latency check,
  re-ranking rounds, BatchNorm re-estimation, the details) and the ``factorize`` verb.
"""
from __future__ import annotations

from ..train.loop import recalibrate_bn
from .config import CP, SVD, Tucker
from .cp import cp_conv
from .engine import factorize
from .svd import svd_linear
from .tucker import tucker_conv

__all__ = ["CP", "SVD", "Tucker", "cp_conv", "factorize", "recalibrate_bn", "svd_linear", "tucker_conv"]
