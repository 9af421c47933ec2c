"""The one seam of low-rank decomposition: what varies between SVD, Tucker-2 and CP.

The engine (:mod:`edgeslim.lowrank.engine`) allocates ranks, times layers in ONNX Runtime,
re-ranks and reports without knowing which method it runs; everything it needs to know about a
method goes through :class:`Decomposition`. Ranks are opaque to the engine: an int (SVD, CP) or
``(r_out, r_in)`` (Tucker-2); it only compares them, stores them and prints them.

Adding a method = a config in ``config.py`` whose ``decomposition()`` returns an object with
these members, and its numerical kernel in its own file.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Union, runtime_checkable

import numpy as np
from torch import nn

Ranks = Union[int, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What one layer sees on the example input: its shapes (to time it alone) and the sizes its MACs
    depend on."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_hw: tuple[int, int] = (1, 1)  # spatial size of a conv's input; (1, 1) for a Linear
    out_hw: tuple[int, int] = (1, 1)
    apps: int = 1  # times a Linear runs per sample (one per token of a sequence); 1 for a conv


@runtime_checkable
class Decomposition(Protocol):
    """How one method factorizes one kind of layer."""

    layer_type: type[nn.Module]  # what the layer selector looks for (nn.Linear, nn.Conv2d)

    def unsupported(self, layer: nn.Module) -> str | None:
        """Why this method cannot factorize ``layer`` (shown in the details), or None when it can."""

    def fixed_ranks(self, layer: nn.Module, rank: int, name: str) -> Ranks:
        """The ranks for ``rank=`` (checked against the layer: a UsageError naming it when too large)."""

    def spectra(self, layer: nn.Module) -> tuple[np.ndarray, ...]:
        """Singular values, descending, of each matrix the method truncates; computed once per layer
        because the energy allocation bisects over them."""

    def energy_ranks(self, spectra: tuple[np.ndarray, ...], energy: float) -> Ranks:
        """The smallest ranks keeping ``energy`` of the squared ``spectra``."""

    def vbmf_ranks(self, layer: nn.Module) -> Ranks:
        """Ranks estimated by empirical VBMF."""

    def ratio_ranks(self, layer: nn.Module, ratio: float, geo: Geometry, metric: str) -> Ranks:
        """The largest ranks whose cost (``metric``: "macs" or "params") stays under ``ratio`` of the layer's."""

    def cost(self, layer: nn.Module, ranks: Ranks, geo: Geometry) -> tuple[int, int]:
        """(params, MACs per sample) of ``layer`` factorized at ``ranks``."""

    def build(self, layer: nn.Module, ranks: Ranks, *, name: str, seed: int) -> nn.Module:
        """The factorized module that replaces ``layer``."""
