"""The search's time: when trials must be measured by, and what the final comparison keeps."""
from __future__ import annotations

import contextlib
import dataclasses
import time

FINAL_SLACK = 1.25  # the final comparison's estimate: this times the baseline's measured costs ...
FINAL_FIXED_S = 1.5  # ... plus the plots' time measured at the setup, plus this for the rest of the out DIR


class OutOfTime(Exception):
    """Raised inside a trial when the search's time is up: the trial is recorded as unfinished."""


def n_batches(loader) -> int:
    try:
        return max(1, len(loader))
    except TypeError:  # an iterable loader of unknown length
        return 1


@dataclasses.dataclass
class Clock:
    """Trials must be measured by ``trial_end``: the budget's end less ``final_s``, what the final
    side-by-side comparison takes (estimated from the baseline's measurement at the setup). A
    running trial checks it between fine-tuning epochs, and no optimizer step of a trial (AdaRound's
    too, which has no epochs) runs after it; a new trial starts only while the cheapest trial
    measured so far still fits."""

    trial_end: float
    final_s: float
    measure_s: float  # export, validation and timing of one artifact
    cheapest_s: float  # the cheapest measured trial (the setup's estimate before the first)

    @classmethod
    def of(cls, state, end: float, data, *, val_batches, latency_runs: int, final_runs: int) -> "Clock":
        """From the study's timings of the baseline (``state.timing``) and this run's end."""
        t, t_trial = state.timing, state.trial_estimate_s
        if not t:
            return cls(end - t_trial, t_trial, t_trial, t_trial)
        n_val = n_batches(data.val) if val_batches is None else min(n_batches(data.val), val_batches)
        n_test = n_batches(data.test if data.test is not None else data.val)
        per_run = t["latency_s"] / (latency_runs + 5)  # the setup timed latency_runs + 5 warm-up runs
        final = FINAL_SLACK * (t["export_s"] + 2 * t["val_s"] * n_test / n_val
                               + 2 * per_run * (final_runs + 10)) + t.get("render_s", 0.0) + FINAL_FIXED_S
        return cls(end - final, final, 1.2 * (t["export_s"] + t["val_s"] + t["latency_s"]), t_trial)

    def left(self) -> float:
        return self.trial_end - time.monotonic()

    def check(self, where: str, need: float = 0.0) -> None:
        if self.left() < need:
            raise OutOfTime(f"the search's time ran out {where}")

    @contextlib.contextmanager
    def guard(self):
        """Inside the block, an optimizer step after ``trial_end`` raises OutOfTime."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def hook(*_):
            if time.monotonic() > self.trial_end:
                raise OutOfTime("the search's time ran out while it was training or quantizing")

        handle = register_optimizer_step_post_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def room_for_trial(self) -> bool:
        return self.left() >= self.cheapest_s

    def measured(self, seconds: float) -> None:
        self.cheapest_s = min(self.cheapest_s, seconds)

    def no_room_text(self) -> str:
        return (f"{max(0.0, self.left()):.0f}s left before the final comparison, less than the cheapest trial "
                f"({self.cheapest_s:.0f}s): no new trial")
