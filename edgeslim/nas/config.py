"""Every option of ``edgeslim.nas`` as one frozen config (round-trips through a dict and YAML)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError
from ..search.config import AgentOptions, latency_spec, memory_spec, parse_budget

STRATEGY_NAMES = ("evolution", "nsga2", "rl", "darts", "random")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NasConfig(AgentOptions, Config):
    """What ``nas`` searches and how long.

    space: a built-in space (mobilenet, resnet), a YAML file, a dict, or None (the given model's own
    space when it is a zoo mobilenetv2_tiny / CIFAR ResNet, else mobilenet); ``space_overrides``:
    ``key=value`` texts. Limits: ``max_latency`` (ms, '0.08ms', or 'Nx' faster than the given
    model's fp32 file), ``max_size`` (bytes of the fp32 artifact: '200kB'), ``min_accuracy`` or
    ``max_drop`` (points of the metric on the validation split; a drop is from the given model).
    Time: ``budget`` is the whole run; the supernet trains for ``supernet_epochs`` (``supernet_rule``
    spos | sandwich), the search stops in time for ``finetune_epochs`` of fine-tuning (with
    distillation from the largest subnet when ``distill``) and the final measurement; ``evaluations``
    caps the subnets scored. ``finalists`` best subnets are exported and timed whole."""

    kind = "nas"
    space: Any = None
    space_overrides: tuple = ()
    strategy: str = "evolution"
    budget: Any = "45m"
    evaluations: int | None = None
    max_latency: Any = None
    max_size: Any = None
    min_accuracy: float | None = None
    max_drop: float | None = None
    metric: Any = None  # a registered name (top1, top5) or "package.module:function"; None: top1
    runtime: str = "onnxruntime"
    threads: int = 1
    agent: str | None = None  # an `edgeslim agent` (http://HOST:PORT): the table, the finalists and the result timed there
    agent_token_file: str | None = None
    supernet_epochs: float = 6
    supernet_rule: str = "sandwich"
    supernet_batches: int | None = None  # per epoch (smoke runs)
    finetune_epochs: float = 2
    finetune_lr: float = 0.01
    finetune_batches: int | None = None
    distill: bool = True
    finalists: int = 5
    calib_batches: int = 8  # BatchNorm recalibration of each subnet before it is scored
    val_batches: int | None = 10  # validation batches that score a subnet in the search (None: all)
    latency_runs: int = 30
    final_runs: int = 100
    seed: int = 0
    out: Any = "runs/nas"

    def validate(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise UsageError(f"unknown strategy {self.strategy!r}", hint=f"one of: {', '.join(STRATEGY_NAMES)}")
        parse_budget(self.budget)
        self._validate_agent()
        if self.max_latency is not None:
            latency_spec(self.max_latency)
        if self.max_size is not None:
            memory_spec(self.max_size)
        if self.min_accuracy is not None and self.max_drop is not None:
            raise UsageError("give --min-accuracy or --max-drop, not both")
        for name in ("min_accuracy", "max_drop"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v < 0):
                raise UsageError(f"{name} must be a number >= 0, got {v!r}")
        for name, lo in (("threads", 1), ("finalists", 1), ("calib_batches", 1), ("latency_runs", 1),
                         ("final_runs", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UsageError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("evaluations", "val_batches", "supernet_batches", "finetune_batches"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise UsageError(f"{name} must be a positive integer or None, got {v!r}")
        for name in ("supernet_epochs", "finetune_epochs", "finetune_lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UsageError(f"{name} must be a number >= 0, got {v!r}")
        if not self.supernet_epochs > 0:
            raise UsageError(f"supernet_epochs must be > 0, got {self.supernet_epochs!r}")

    @property
    def budget_s(self) -> float:
        return parse_budget(self.budget)


def nas_config(config: NasConfig | None, options: dict) -> NasConfig:
    if config is not None and not isinstance(config, NasConfig):
        raise UsageError(f"nas's config must be a NasConfig, got {type(config).__name__}")
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(NasConfig)})
    if unknown:
        raise UsageError(f"nas got an unknown option {unknown[0]!r}")
    if isinstance(options.get("space_overrides"), list):
        options = {**options, "space_overrides": tuple(options["space_overrides"])}
    return dataclasses.replace(config, **options) if config is not None else NasConfig(**options)
