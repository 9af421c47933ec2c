"""The options of ``edgeslim.auto`` as one frozen config (round-trips through a dict and YAML)."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError
from .confidence import DEFAULT_CONFIDENCE, rule_text
from .scoring import check_metric, metric_name

OBJECTIVES = ("size", "latency")
DEFAULT_DROP = 0.5  # points, when neither max_drop nor min_accuracy is given


def parse_budget(budget: Any) -> float:
    """'30m', '90s', '1h30m', '45' (minutes) or a number of seconds -> seconds."""
    if budget is None:
        return math.inf
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        if budget <= 0:
            raise UsageError(f"budget must be positive, got {budget!r}")
        return float(budget)
    text = str(budget).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|min|s|sec)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|m|min|s|sec)", "", text).strip():
        raise UsageError(f"cannot read budget {budget!r}", hint="use e.g. 30m, 90s, 1h30m")
    secs = sum(float(v) * {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1}[u] for v, u in parts)
    if secs <= 0:
        raise UsageError(f"budget must be positive, got {budget!r}")
    return secs


_UNITS = {"b": 1, "kb": 1e3, "k": 1e3, "mb": 1e6, "m": 1e6, "gb": 1e9, "g": 1e9, "kib": 1024, "mib": 1024 ** 2,
          "gib": 1024 ** 3}


def memory_spec(spec: Any) -> int:
    """Bytes of a memory limit: '8MB', '512kB', '1.5GiB', or a number of bytes."""
    text = str(spec).strip().lower().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", text)
    if not m or m[2] not in _UNITS and m[2] != "" or float(m[1]) <= 0:
        raise UsageError(f"cannot read the memory limit {spec!r}", hint="give bytes with a unit: 8MB, 512kB, 1GiB")
    return int(float(m[1]) * (_UNITS.get(m[2], 1)))


def latency_spec(spec: Any) -> tuple[float | None, float | None]:
    """(milliseconds, None) for '0.2' / '0.2ms', (None, N) for 'Nx' (a speed-up over the baseline)."""
    text = str(spec).strip().lower()
    try:
        v = float(text[:-1] if text.endswith("x") else text[:-2] if text.endswith("ms") else text)
        if not v > 0 or not math.isfinite(v):
            raise ValueError
    except ValueError:
        raise UsageError(f"cannot read the latency limit {spec!r}",
                         hint="give milliseconds (0.12, 0.12ms) or a speed-up over the fp32 baseline (3x)") from None
    return (None, v) if text.endswith("x") else (v, None)


class AgentOptions:
    """The device-agent options ``auto`` and ``nas`` share (each config declares the fields ``agent``
    and ``agent_token_file``): checked once, and the client built from them."""

    def _validate_agent(self) -> None:
        if self.agent is None:
            if self.agent_token_file is not None:
                raise UsageError("agent_token_file is given without agent", hint="give agent='http://HOST:PORT'")
            return
        from ..agent import parse_url

        object.__setattr__(self, "agent", parse_url(self.agent)[0])
        if not self.agent_token_file:
            raise UsageError("agent needs agent_token_file, the file holding the agent's token")
        object.__setattr__(self, "agent_token_file", str(self.agent_token_file))

    def agent_client(self):
        """The ``edgeslim.agent.Agent`` candidates are timed on (its token read now), or None."""
        if self.agent is None:
            return None
        from ..agent import Agent

        return Agent.from_token_file(self.agent, self.agent_token_file)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoConfig(AgentOptions, Config):
    """What ``auto`` searches for and how long. SLA: ``max_drop`` points below the baseline's
    validation score (0.5 when neither is given) or an absolute ``min_accuracy``; ``max_latency``
    adds a latency limit in ms ('0.2ms') or as a speed-up over the baseline ('3x')."""

    kind = "auto"
    max_drop: float | None = None
    min_accuracy: float | None = None
    objective: str = "size"
    pareto: bool = False
    max_latency: Any = None
    max_memory: Any = None  # peak memory of running the artifact: '8MB' (measured in a fresh process)
    confidence: float = DEFAULT_CONFIDENCE
    budget: Any = "30m"
    trials: int | None = None
    storage: str | None = None
    resume: bool = False
    worker: bool = False
    out: str = "runs/auto"
    space: Any = None  # a SearchSpace, its dict, or a YAML path
    greedy: bool = True
    seed: int = 0
    spec: str | None = None  # how the input model is rebuilt (for DIR/checkpoint)
    build: dict | None = None
    model_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    threads: int = 2
    val_batches: int | None = None
    latency_runs: int = 30
    final_runs: int = 50
    # a registered name (top1, top5, map, miou), "package.module:function", a callable (predict, loader) ->
    # float | per-sample values, or a Metric; None: the data's task's default (top1 for classifiers). The SLA
    # (max_drop, min_accuracy) and the prune margins are in its points
    metric: Any = None
    runtime: str = "onnxruntime"
    agent: str | None = None  # an `edgeslim agent` (http://HOST:PORT) every candidate and the reference are timed on
    agent_token_file: str | None = None  # the file holding its token (the token itself is never stored)
    prune_margin: float = 3.0  # points under the SLA at which a trial's float model stops it before export
    epoch_prune_margin: float = 6.0  # ... and between its fine-tuning epochs

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UsageError(f"unknown objective {self.objective!r}", hint="use size or latency")
        if self.max_drop is not None and self.min_accuracy is not None:
            raise UsageError("give max_drop or min_accuracy, not both")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError(f"max_drop must be >= 0 points, got {self.max_drop}")
        if self.trials is not None and self.trials < 1:
            raise UsageError(f"trials must be >= 1, got {self.trials}")
        for name in ("threads", "latency_runs", "final_runs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{name} must be a positive integer, got {v!r}")
        if self.val_batches is not None and (not isinstance(self.val_batches, int) or self.val_batches < 1):
            raise UsageError(f"val_batches must be a positive integer, got {self.val_batches!r}")
        if not 0 <= self.prune_margin <= self.epoch_prune_margin:
            raise UsageError(f"prune margins must satisfy 0 <= prune_margin <= epoch_prune_margin, got "
                             f"{self.prune_margin} and {self.epoch_prune_margin}")
        parse_budget(self.budget)
        rule_text(self.confidence, True)  # validates it
        if self.max_latency is not None:
            latency_spec(self.max_latency)
        if self.max_memory is not None:
            memory_spec(self.max_memory)
        self._validate_agent()
        check_metric(self.metric)
        if isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if self.space is not None and not isinstance(self.space, (str, dict, Config)):
            raise UsageError(f"space must be a SearchSpace, a mapping or a YAML path, got {type(self.space).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values; a callable or Metric ``metric`` as its name (a function cannot
        be written to YAML: an API caller passes it again, e.g. on resume)."""
        return {**super().to_dict(), "metric": self.metric_name}

    @property
    def metric_name(self) -> str | None:
        """The metric's name as the study records it (None: the data's default, decided by auto)."""
        return metric_name(self.metric)

    @property
    def drop(self) -> float | None:
        """The drop SLA in points (None with an absolute ``min_accuracy``)."""
        if self.min_accuracy is not None:
            return None
        return DEFAULT_DROP if self.max_drop is None else float(self.max_drop)

    @property
    def budget_s(self) -> float:
        return parse_budget(self.budget)

    @property
    def limit_text(self) -> str | None:
        return None if self.max_latency is None else str(self.max_latency).strip().lower()

    @property
    def storage_url(self) -> str:
        from pathlib import Path

        return self.storage or f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"

    @property
    def shared(self) -> bool:
        """Other processes may work on the same study (a worker, or a server database)."""
        return self.worker or not self.storage_url.startswith("sqlite")


def auto_config(config: AutoConfig | None, options: dict) -> AutoConfig:
    """``config`` with keyword ``options`` on top; an unknown option is one UsageError naming the valid ones."""
    names = {f.name for f in dataclasses.fields(AutoConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise UsageError(f"unknown auto option {unknown[0]!r}", hint=f"valid options: {', '.join(sorted(names))}")
    if "out" in options:  # None: the default DIR
        options = {k: v for k, v in options.items() if k != "out"} if options["out"] is None \
            else {**options, "out": str(options["out"])}
    if "space" in options and isinstance(options["space"], Config):
        options = {**options, "space": options["space"].to_dict()}
    base = config or AutoConfig()
    return dataclasses.replace(base, **options) if options else base
