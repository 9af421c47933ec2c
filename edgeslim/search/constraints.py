"""What a candidate must satisfy. Feasibility, Optuna's constraint values, the greedy pass, the
closest miss and the final notes all iterate over one list of these, so another limit (size,
memory) is one more class here and nothing else.

    excess(m)      how far a measurement is from satisfying it (<= 0: satisfied), None: not measured
    precheck(arch) a Precheck of the UNTRAINED architecture (``arch()`` measures it, once), when
                   that can tell (latency can: it does not depend on the weights), else None
    figures(m)     what the trial table shows about it
    scale(figures) the size of the limit an excess is measured against (the SLA's points, the latency
                   limit's ms, the memory limit's bytes): the sampler sees excess / scale, so that
                   trials that miss different limits rank on one footing (a 0.03 ms miss of a 0.23 ms
                   limit is 13%, not "0.03", beside a 3-point miss of a 92-point SLA)
    final(...)     its verdict on the final side-by-side comparison: (details key, ok, note)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

from .config import latency_spec, memory_spec
from .confidence import kind_of, rule_text
from .evaluator import Measurement
from .scoring import named, value_text, what

LATENCY_PRUNE_SLACK = 1.1  # a trial whose architecture runs slower than this times the limit stops before training


@dataclasses.dataclass(frozen=True)
class Precheck:
    excess: float
    stop: str | None  # why the trial stops before training, or None when it goes on
    figures: dict


@runtime_checkable
class Constraint(Protocol):
    name: str  # its key among Optuna's constraint values

    def excess(self, m: Measurement) -> float | None: ...

    def precheck(self, arch: Callable[[], Measurement]) -> Precheck | None: ...

    def figures(self, m: Measurement) -> dict: ...

    def scale(self, figures: dict) -> float: ...

    def text(self) -> str: ...

    def final(self, result: dict, baseline: dict) -> tuple[str, bool, str] | None: ...


@dataclasses.dataclass(frozen=True)
class AccuracySLA:
    """The candidate's validation score in the study's metric, less its confidence margin, at or above
    ``sla`` (in the metric's points). ``values``: the metric's per-sample values ("hits", "numbers", or
    "none": no sample-based bound, the plain value is compared)."""

    sla: float
    confidence: float = 0.0
    max_drop: float | None = None  # a drop SLA (the bound is paired with the baseline)
    name: str = "accuracy_sla"
    metric: str = "top1"
    values: str = "hits"

    def excess(self, m: Measurement) -> float | None:
        return None if m.bound is None else self.sla - m.bound

    def scale(self, figures: dict) -> float:
        return max(abs(float(self.sla)), 1.0)

    def precheck(self, arch: Callable[[], Measurement]) -> Precheck | None:
        return None  # an untrained architecture says nothing about the trained score

    def figures(self, m: Measurement) -> dict:
        return {}

    def rule(self) -> str:
        return rule_text(self.confidence, self.max_drop is not None, self.values)

    def text(self) -> str:
        rule = self.rule()
        return f"validation {what(self.metric)} >= {value_text(self.metric, self.sla)}" + (f", {rule}" if rule else "")

    def final(self, result: dict, baseline: dict) -> tuple[str, bool, str] | None:
        test, base = result.get("accuracy"), baseline.get("accuracy")
        if test is None or base is None:
            return None
        ok = test >= base - self.max_drop if self.max_drop is not None else test >= self.sla
        name = self.metric
        return ("test_within_sla", bool(ok), f"test split (never seen by the search): {named(name, test)} vs "
                f"baseline {value_text(name, base)} -> " + ("within" if ok else "OUTSIDE") + " the SLA")


@dataclasses.dataclass(frozen=True)
class LatencyLimit:
    """The runtime latency in ms, or a speed-up over the fp32 baseline ('3x'). A speed-up is checked
    against the baseline timed alongside each candidate (the evaluator's reference), not against one
    figure from the start: on a shared machine both drift, their ratio much less."""

    spec: str
    name: str = "max_latency"

    @property
    def ms(self) -> float | None:
        return latency_spec(self.spec)[0]

    @property
    def speedup(self) -> float | None:
        return latency_spec(self.spec)[1]

    def limit(self, m: Measurement) -> float:
        if self.ms is not None:
            return self.ms
        return m.reference_latency_ms / self.speedup

    def excess(self, m: Measurement) -> float | None:
        return round(m.latency_ms - self.limit(m), 5)

    def precheck(self, arch: Callable[[], Measurement]) -> Precheck | None:
        a = arch()
        lat, lim = a.latency_ms, self.limit(a)
        stop = (f"its architecture runs in {lat:.3f} ms untrained, over the latency limit {lim:.3f} ms "
                f"(x{LATENCY_PRUNE_SLACK:g})") if lat > LATENCY_PRUNE_SLACK * lim else None
        return Precheck(round(lat - lim, 5), stop, {"latency_probe_ms": round(lat, 5), "latency_limit_ms": round(lim, 5)})

    def figures(self, m: Measurement) -> dict:
        return {"latency_limit_ms": round(self.limit(m), 5)}

    def scale(self, figures: dict) -> float:
        return float(figures.get("latency_limit_ms") or self.ms or 1.0)

    def text(self) -> str:
        return f"latency limit {self.spec}"

    def explain(self) -> str:
        return (f"latency <= {self.ms:.3f} ms" if self.ms is not None else
                f"at least {self.speedup:g}x faster than the fp32 baseline, timed alongside each candidate")

    def final(self, result: dict, baseline: dict) -> tuple[str, bool, str] | None:
        lat, base = result.get("latency_ms"), baseline.get("latency_ms")
        if not lat or not base:
            return None
        ok = lat <= self.ms if self.ms is not None else base / lat >= self.speedup
        return ("latency_within_limit", bool(ok),
                f"latency limit {self.spec} (checked on each trial's own measurement): the final side-by-side "
                f"comparison measured {lat:.3f} ms against the baseline's {base:.3f} ms ({base / lat:.2f}x) -> "
                + ("within" if ok else "OUTSIDE") + " the limit")


@dataclasses.dataclass(frozen=True)
class MemoryLimit:
    """The peak memory of running the artifact in its runtime ('8MB'), measured in a fresh process
    (edgeslim.measure.memory). It hardly depends on the weights' values, so an untrained
    architecture already tells."""

    spec: str
    name: str = "max_memory"

    @property
    def bytes(self) -> int:
        return memory_spec(self.spec)

    def excess(self, m: Measurement) -> float | None:
        return None if m.peak_memory_bytes is None else float(m.peak_memory_bytes - self.bytes)

    def precheck(self, arch: Callable[[], Measurement]) -> Precheck | None:
        a = arch()
        if a.peak_memory_bytes is None:
            return None
        stop = (f"its architecture takes {a.peak_memory_bytes:,} bytes of memory untrained, over the limit "
                f"{self.bytes:,} (x{LATENCY_PRUNE_SLACK:g})") if a.peak_memory_bytes > LATENCY_PRUNE_SLACK * self.bytes \
            else None
        return Precheck(float(a.peak_memory_bytes - self.bytes), stop, {"memory_probe_bytes": a.peak_memory_bytes})

    def figures(self, m: Measurement) -> dict:
        return {"peak_memory_bytes": m.peak_memory_bytes, "memory_limit_bytes": self.bytes}

    def scale(self, figures: dict) -> float:
        return float(self.bytes)

    def text(self) -> str:
        return f"memory limit {self.spec}"

    def final(self, result: dict, baseline: dict) -> tuple[str, bool, str] | None:
        peak = result.get("peak_memory_bytes")
        if peak is None:
            return None
        ok = peak <= self.bytes
        return ("memory_within_limit", bool(ok), f"memory limit {self.spec}: the final comparison measured a peak of "
                f"{peak:,} bytes running the result -> " + ("within" if ok else "OUTSIDE") + " the limit")


def constraints_of(state: Any) -> list[Constraint]:
    """The study's constraints, from its StudyState (the SLA first: the closest miss ranks by it)."""
    packed = getattr(state, "baseline_correct", "")  # a StudyState's; "" (hits) for what has none
    out: list[Constraint] = [AccuracySLA(state.sla, state.confidence, state.max_drop,
                                         metric=getattr(state, "metric", None) or "top1", values=kind_of(packed))]
    if state.max_latency is not None:
        out.append(LatencyLimit(state.max_latency))
    if getattr(state, "max_memory", None) is not None:
        out.append(MemoryLimit(str(state.max_memory)))
    return out


def excesses(constraints: list[Constraint], m: Measurement) -> dict[str, float]:
    return {c.name: v for c in constraints if (v := c.excess(m)) is not None}


def feasible(constraints: list[Constraint], m: Measurement) -> bool:
    return all((v := c.excess(m)) is not None and v <= 0 for c in constraints)


def verdict_text(constraints: list[Constraint]) -> str:
    """'validation accuracy >= 88.10%, a lower bound ...; latency <= 0.2 ms' for notes and logs."""
    return "; ".join(c.text() for c in constraints)
