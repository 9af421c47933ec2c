"""One typed measurement of a candidate artifact, used for the baseline, every trial and the
latency pre-check: the metric on the validation split (through the Metric seam, with per-sample
values for the confidence bound), bytes on disk, latency and MACs (through the Runtime seam)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from torch import nn

from .confidence import margin as accuracy_margin


@dataclasses.dataclass(frozen=True)
class Measurement:
    score: float | None  # the metric on the validation split, in its points (top-1: percent), None when not measured
    margin: float  # the confidence bound's margin: the candidate counts as score - margin
    size_bytes: int
    latency_ms: float
    macs: int | None = None
    params: int | None = None
    reference_latency_ms: float | None = None  # the baseline, timed alongside (a speed-up limit)
    peak_memory_bytes: int | None = None  # running the artifact (measured when a memory limit asks)
    timed_on: str | None = None  # the device agent's URL when latency and memory were measured there

    @property
    def bound(self) -> float | None:
        return None if self.score is None else self.score - self.margin

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Measurement":
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class Evaluator:
    """Measures artifacts the same way every time. ``paired``: the baseline's per-sample results,
    for a drop SLA's paired confidence bound; ``reference``: an artifact timed alongside each
    candidate (the baseline, when a latency limit is a speed-up)."""

    data: Any
    input_shape: tuple[int, ...]  # (C, H, W)
    threads: int = 2
    val_batches: int | None = None
    latency_runs: int = 30
    confidence: float = 0.0
    runtime: str = "onnxruntime"
    metric: Any = "top1"  # a Metric (auto gives the resolved one) or a registered name
    paired: Any = None
    reference: Path | None = None
    memory: bool = False  # also measure the peak memory of running each artifact (a fresh process each)
    agent: Any = None  # an edgeslim.agent.Agent: latency (and memory) measured on that device, not here

    @property
    def timed_on(self) -> str | None:
        return None if self.agent is None else self.agent.url

    @property
    def scorer(self):
        """The Metric every artifact is scored with."""
        from .. import metrics

        return metrics.resolve(self.metric)

    @property
    def xshape(self) -> tuple[int, ...]:
        return (1, *self.input_shape)

    def artifact(self, folder: Path, stem: str) -> Path:
        """Where an artifact named ``stem`` goes: the runtime's suffix (trial-3.onnx, trial-3.xml, ...)."""
        from ..runtimes import suffix_of

        return folder / f"{stem}{suffix_of(self.runtime)}"

    def export(self, model: nn.Module, path: Path) -> Path:
        """The deployable artifact of ``model`` (a quantization simulation through the runtime's int8 path)."""
        import torch

        from .. import runtimes

        example = torch.randn(*self.xshape, generator=torch.Generator().manual_seed(0))
        runtimes.get(self.runtime).export(model, path, example)
        return path

    def score(self, path: Path) -> tuple[float | None, Any]:
        """(metric value, per-sample values or None) of the artifact on the validation split, run in
        the evaluator's runtime."""
        from ..measure.profile import artifact_score

        s = artifact_score(path, self.data.val, metric=self.scorer, runtime=self.runtime, threads=self.threads,
                           max_batches=self.val_batches)
        return s.value, s.per_sample

    def time(self, path: Path) -> tuple[float, float | None]:
        """(median latency in ms, the reference's median when one is timed alongside)."""
        from ..measure import bench, latency

        if self.reference is None:
            return latency(path, self.xshape, threads=self.threads, warmup=5, runs=self.latency_runs,
                           agent=self.agent)["median_ms"], None
        b, c = bench([self.reference, path], self.xshape, threads=self.threads, warmup=5, runs=self.latency_runs,
                     rounds=3, agent=self.agent)
        return c["median_ms"], b["median_ms"]

    def size(self, path: Path) -> int:
        from .. import runtimes

        return runtimes.get(self.runtime).size(path)

    def measure(self, path: Path, float_model: nn.Module | None = None) -> Measurement:
        """Everything of a trained candidate: score and its margin, size, latency, MACs."""
        from ..measure import count_macs

        value, per_sample = self.score(path)
        margin = accuracy_margin(per_sample, self.paired, confidence=self.confidence) if per_sample is not None else 0.0
        lat, ref = self.time(path)
        macs = params = None
        if float_model is not None:
            macs = count_macs(float_model, self.xshape)[0]
            params = sum(p.numel() for p in float_model.parameters())
        return Measurement(value, round(margin, 4), self.size(path), lat, macs, params, ref, self.peak(path),
                           self.timed_on)

    def architecture(self, path: Path) -> Measurement:
        """An untrained architecture: latency only (it depends on the architecture and the format, not
        on the weights)."""
        lat, ref = self.time(path)
        return Measurement(None, 0.0, self.size(path), lat, reference_latency_ms=ref, peak_memory_bytes=self.peak(path),
                           timed_on=self.timed_on)

    def peak(self, path: Path) -> int | None:
        if not self.memory:
            return None
        if self.agent is not None:  # measured on the device, in a fresh process there
            return self.agent.time(path, self.xshape, runtime=self.runtime, threads=self.threads, warmup=0, runs=1,
                                   memory=True)["peak_memory_bytes"]
        from ..measure.memory import peak_memory

        return peak_memory(path, self.xshape, runtime=self.runtime, threads=self.threads)["peak_memory_bytes"]

    def baseline(self, model: nn.Module, path: Path) -> tuple[Measurement, Any, dict]:
        """The baseline's measurement, its per-sample results and how long each part took (the
        search's clock sizes trials and the final comparison from it)."""
        ts = [time.monotonic()]
        self.export(model, path)
        ts.append(time.monotonic())
        value, per_sample = self.score(path)
        size = self.size(path)
        ts.append(time.monotonic())
        lat, _ = dataclasses.replace(self, reference=None).time(path)
        ts.append(time.monotonic())
        timing = {k: round(b - a, 3) for k, a, b in zip(("export_s", "val_s", "latency_s"), ts, ts[1:])}
        return Measurement(value, 0.0, size, lat, timed_on=self.timed_on), per_sample, timing
