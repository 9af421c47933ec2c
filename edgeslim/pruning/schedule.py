"""Pruning schedules: how the target sparsity grows over pruning steps.

- ``oneshot``: prune to the target once, then fine-tune.
- ``iterative``: k rounds of prune -> fine-tune, the target growing linearly (i/k).
- ``agp``: Automated Gradual Pruning (Zhu & Gupta 2017, "To prune, or not to prune"):

      s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3     for t in {t0, t0 + dt, ..., t0 + n*dt}

  fast pruning early, when redundancy is high, slowing down as the target nears.
  Mask-based granularities follow it step by step during fine-tuning (``AGPMasks``);
  channel pruning applies it at k prune -> fine-tune rounds.
"""
from __future__ import annotations

from typing import Callable

SCHEDULES = ("oneshot", "iterative", "agp")


def agp_sparsity(step: int, *, final: float, initial: float = 0.0, start: int = 0, n_events: int = 10,
                 frequency: int = 1) -> float:
    """Target sparsity at training step ``step`` (Zhu & Gupta's cubic schedule)."""
    if n_events < 1 or frequency < 1:
        raise ValueError("n_events and frequency must be >= 1")
    if step < start:
        return initial
    end = start + n_events * frequency
    if step >= end:
        return final
    # the target changes only at pruning events (every `frequency` steps)
    t = start + ((step - start) // frequency) * frequency
    progress = (t - start) / (n_events * frequency)
    return final + (initial - final) * (1.0 - progress) ** 3


def step_fractions(kind: str, steps: int) -> list[float]:
    """Fraction of the final ratio reached after each prune step (last is 1.0)."""
    if kind == "oneshot":
        return [1.0]
    if kind == "iterative":
        return [i / steps for i in range(1, steps + 1)]
    if kind == "agp":  # the cubic schedule sampled at k events, from 0 to 1
        return [agp_sparsity(i, final=1.0, initial=0.0, start=0, n_events=steps, frequency=1)
                for i in range(1, steps + 1)]
    raise ValueError(f"unknown schedule {kind!r}")


class AGPMasks:
    """An ``on_step`` callback for fit(): raises mask sparsity along the AGP curve.

    ``update(sparsity)`` recomputes the masks for a sparsity level; ``reapply()`` zeroes
    the masked weights. Both come from the unstructured pruner.
    """

    def __init__(self, update: Callable[[float], None], reapply: Callable[[], None], *, final: float,
                 total_steps: int, initial: float = 0.0, start: int = 0, n_events: int | None = None,
                 end_fraction: float = 0.75):
        span = max(1, int(total_steps * end_fraction) - start)
        self.n_events = n_events or max(1, min(span, 20))
        self.frequency = max(1, span // self.n_events)
        self.final, self.initial, self.start = final, initial, start
        self.update, self.reapply = update, reapply
        self.current = None
        self.trace: list[tuple[int, float]] = []

    def target(self, step: int) -> float:
        return agp_sparsity(step, final=self.final, initial=self.initial, start=self.start,
                            n_events=self.n_events, frequency=self.frequency)

    def __call__(self, step: int, model) -> None:
        s = self.target(step)
        if s != self.current:
            self.update(s)
            self.current = s
            self.trace.append((step, s))
        self.reapply()
