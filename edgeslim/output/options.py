"""What the writer of an out DIR needs to know besides the models: one frozen options object."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..core.errors import UsageError


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """How ``write_result`` names, measures and checkpoints a result.

    command: the report's command. spec / build: how to rebuild the architecture (no spec: no
    checkpoint). model_name / data_name: what the report calls them (default: the spec, the data's
    name). classes: the checkpoint's classes where the data has no labels. metrics / extra: merged
    into the checkpoint sidecar. threads / runs / warmup: the side-by-side latency measurement;
    max_batches caps the accuracy batches. keep_baseline: keep DIR/baseline.onnx (the CLI commands'
    layout). layer_table: add the per-layer policy table when the details have none (off where the
    result does not derive from the baseline, as a distilled student does not from its teacher).
    metric: what both artifacts are scored with (a registered name, "package.module:function" named by
    the caller, a callable or a Metric; None: the default of the data's task); the FIGURES' ``accuracy``
    holds its value and ``details["metric"]`` names it."""

    command: str
    spec: str | None = None
    build: dict[str, Any] | None = None
    model_name: str | None = None
    data_name: str | None = None
    classes: list[str] | None = None
    metrics: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    threads: int = 2
    runs: int = 50
    warmup: int = 10
    max_batches: int | None = None
    keep_baseline: bool = False
    layer_table: bool = True
    runtime: str = "onnxruntime"  # the runtime that deploys, measures and scores the result
    metric: Any = None  # None: the data's task's default (top1, map, miou)
    agent: Any = None  # an edgeslim.agent.Agent: the side-by-side latency and memory are measured on that device

    def scorer(self, data: Any = None):
        """The resolved Metric: ``metric``, or the default for the task of ``data`` (top1 without data)."""
        from .. import metrics as es_metrics

        if self.metric is not None:
            return es_metrics.resolve(self.metric)
        return es_metrics.get(es_metrics.default_for(getattr(getattr(data, "meta", None), "task", "classification")))

    @property
    def artifact(self) -> str:
        """The deployable file's name in the out DIR: model.onnx, model.xml, model.tflite, model.pte."""
        from ..runtimes import suffix_of

        return "model" + suffix_of(self.runtime)

    def __post_init__(self) -> None:
        if not isinstance(self.command, str) or not self.command:
            raise UsageError(f"command must be a non-empty string, got {self.command!r}")
        for name, lo in (("threads", 1), ("runs", 1), ("warmup", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UsageError(f"{name} must be an integer >= {lo}, got {v!r}")
        mb = self.max_batches
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
            raise UsageError(f"max_batches must be a positive integer or None, got {mb!r}")
        from .. import metrics as es_metrics

        if self.metric is not None:
            es_metrics.resolve(self.metric)  # a bad metric is one UsageError, before any work
        for name in ("build", "metrics", "extra"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, dict):
                raise UsageError(f"{name} must be a dict or None, got {type(v).__name__}")
