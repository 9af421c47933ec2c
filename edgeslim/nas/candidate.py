"""What every search strategy proposes and gets back: one subnet scored on the supernet.

    evaluate(arch) -> Candidate   the engine's scorer: BN recalibrated, validation score in the
                                  study's metric, latency from the lookup table, parameter count;
                                  an architecture scored before is answered from the study (no second
                                  evaluation, and a resumed search does not redo it)
    Budget                        when a strategy stops: a wall-clock deadline and/or a number of
                                  evaluations (the same for every strategy, so that they compare)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Candidate:
    arch: dict
    score: float  # validation score (the metric's points), higher is better
    latency_ms: float  # predicted by the lookup table (whole-subnet measurement for finalists: see report)
    params: int
    feasible: bool  # every constraint (latency limit, size limit, the metric SLA) met
    excess: float = 0.0  # how far from feasible, each limit's excess relative to the limit, summed (0: feasible)
    strategy: str = ""
    cached: bool = False  # answered from the study, not evaluated again

    def key(self) -> tuple:
        """Ranking of the search: feasible first, then nearer feasible (less excess), then higher score,
        then lower latency."""
        return (not self.feasible, self.excess, -self.score, self.latency_ms)


Evaluate = Callable[[dict], Candidate]


@dataclasses.dataclass
class Budget:
    deadline: float | None = None  # time.monotonic() value
    evaluations: int | None = None  # new (not cached) evaluations
    used: int = 0

    def spent(self) -> bool:
        return (self.deadline is not None and time.monotonic() >= self.deadline) or \
            (self.evaluations is not None and self.used >= self.evaluations)

    def count(self, c: Candidate) -> Candidate:
        if not c.cached:
            self.used += 1
        return c


def best(cands: list[Candidate]) -> Candidate | None:
    return min(cands, key=Candidate.key) if cands else None
