"""The low-rank configs: ``SVD`` (Linear), ``Tucker`` (Tucker-2) and ``CP`` (Conv2d).

They share every option of the engine (``_LowRank``); each adds only what its decomposition needs
and names that decomposition in ``decomposition()``, the one place a method is tied to its code.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError
from .cp import CPConv
from .decomposition import Decomposition
from .svd import SVDLinear
from .tucker import TuckerConv


@dataclasses.dataclass(frozen=True, kw_only=True)
class _LowRank(Config):
    """Options every low-rank method shares: how ranks are chosen, which layers, what is checked."""

    rank: int | None = None  # fixed rank for every selected layer (Tucker: both channel modes)
    energy: float | None = None  # keep this fraction of the squared singular values, 0 < e <= 1
    target_macs: float | None = None  # whole-model MACs ratio result/original, e.g. 0.5 = 2x fewer
    target_params: float | None = None  # whole-model params ratio result/original
    vbmf: bool = False  # estimate ranks by empirical variational Bayesian matrix factorization
    include: tuple[str, ...] = ()  # layer-name regexes (default: every supported layer)
    exclude: tuple[str, ...] = ()
    min_channels: int = 8  # skip layers with fewer input channels (the stem conv: nothing to gain)
    min_layer_ratio: float = 0.1  # with a target ratio, no layer keeps less than this fraction of its cost
    allocation: str = "energy"  # with a target ratio: "energy" (one kept-energy fraction for all layers) or "uniform"
    check_latency: bool = True  # keep a factorized layer only if it is faster in the runtime
    min_speedup: float = 1.0  # ... by at least this factor
    threads: int = 2
    runtime: str = "onnxruntime"  # where each layer is timed (the runtime that deploys the result)
    latency_runs: int = 20
    bn_batches: int = 50  # with data: re-estimate BatchNorm statistics on this many batches after factorizing
    finetune_epochs: float = 0
    lr: float | None = None
    finetune_distill: bool = False  # fine-tune with KD from the original model

    def validate(self) -> None:
        chosen = [k for k in ("rank", "energy", "target_macs", "target_params") if getattr(self, k) is not None]
        chosen += ["vbmf"] if self.vbmf else []
        if len(chosen) > 1:
            raise UsageError(f"give one way to choose ranks, not {' and '.join(chosen)}",
                             hint="rank=, energy=, target_macs=, target_params= or vbmf=True")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise UsageError(f"rank must be a positive integer, got {self.rank!r}",
                             hint="a rank of 0 would remove the layer; use 1 or more")
        if self.energy is not None and not (0 < self.energy <= 1):
            raise UsageError(f"energy must be in (0, 1], got {self.energy!r}")
        for k in ("target_macs", "target_params"):
            v = getattr(self, k)
            if v is not None and not (0 < v < 1):
                raise UsageError(f"{k} must be a ratio in (0, 1) (0.5 = half the original), got {v!r}")
        if self.allocation not in ("energy", "uniform"):
            raise UsageError(f"allocation must be 'energy' or 'uniform', got {self.allocation!r}",
                             hint="energy: layers with a concentrated spectrum give up more rank; "
                                  "uniform: every layer keeps the same fraction of its cost")
        if not 0 < self.min_layer_ratio <= 1:
            raise UsageError(f"min_layer_ratio must be in (0, 1], got {self.min_layer_ratio!r}")
        if self.min_speedup <= 0 or self.threads < 1 or self.latency_runs < 1:
            raise UsageError("min_speedup must be > 0, threads and latency_runs >= 1")
        from ..runtimes import suffix_of

        suffix_of(self.runtime)  # a UsageError naming the runtimes for an unknown one
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) or self.bn_batches < 0:
            raise UsageError(f"bn_batches must be an integer >= 0, got {self.bn_batches!r}")
        if self.finetune_epochs < 0:
            raise UsageError("finetune_epochs must be >= 0")

    def untrained(self) -> "_LowRank":
        return self.replace(bn_batches=0, finetune_epochs=0)

    def split_training(self):
        """In a recipe the fine-tuning runs as a ``finetune`` (or, with finetune_distill, ``kd``) step."""
        if not self.finetune_epochs:
            return self, None
        from ..distillation import training_step

        step = training_step(self.finetune_epochs, lr=self.lr or 0.01, distill=self.finetune_distill)
        return self.replace(finetune_epochs=0, lr=None, finetune_distill=False), step

    @property
    def rank_rule(self) -> tuple[str, Any]:
        for k in ("rank", "energy", "target_macs", "target_params"):
            if getattr(self, k) is not None:
                return k, getattr(self, k)
        if self.vbmf:
            return "vbmf", True
        return "target_macs", 0.5

    def decomposition(self) -> Decomposition:
        raise TypeError(f"{type(self).__name__} is a low-rank config without a decomposition: subclasses name theirs")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SVD(_LowRank):
    """Truncated SVD: each Linear becomes two Linears."""

    kind = "svd"

    def decomposition(self) -> Decomposition:
        return SVDLinear()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tucker(_LowRank):
    """Tucker-2: each Conv2d becomes 1x1 -> kxk core -> 1x1."""

    kind = "tucker"
    n_iter_max: int = 2  # HOOI iterations after the HOSVD start

    def decomposition(self) -> Decomposition:
        return TuckerConv(n_iter_max=self.n_iter_max)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CP(_LowRank):
    """CP: each Conv2d becomes four thin convolutions."""

    kind = "cp"
    n_iter_max: int = 25  # ALS iterations

    def decomposition(self) -> Decomposition:
        return CPConv(n_iter_max=self.n_iter_max)
