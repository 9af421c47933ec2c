"""How sure the search is that a candidate meets the SLA, from the validation images it was scored on.

A validation split of n images measures top-1 with a sampling error, and the search picks the
smallest of many candidates that clear the SLA on that same split: the pick is biased towards
candidates that got lucky there (the winner's curse), and it loses more on unseen data than it did
on validation. So a candidate counts as feasible only when a one-sided lower confidence bound of
its accuracy clears the SLA:

    val_accuracy - z(confidence) * SE  >=  SLA

- with ``max_drop`` the quantity tested is the drop against the baseline, measured on the SAME
  images, so SE is the standard error of the paired per-image difference (baseline correct minus
  candidate correct). Images both get right or both get wrong carry no noise: a candidate that
  changes few predictions gets a small margin, one that reshuffles many gets a large one;
- with an absolute floor (``min_accuracy``) SE is the binomial standard error of the accuracy.

``confidence`` 0.9 means z = 1.28. Values of 0.5 or less turn the margin off (the plain
``val_accuracy >= SLA`` check).
"""
from __future__ import annotations

import base64
import statistics

from ..core.errors import UsageError

DEFAULT_CONFIDENCE = 0.9


def z_value(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or isinstance(confidence, bool) or not 0 <= confidence < 1:
        raise UsageError(f"confidence must be a number in [0, 1), got {confidence!r}",
                         hint="e.g. 0.9; 0 (or 0.5) turns the margin off")
    return statistics.NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0


def margin(correct, baseline_correct=None, *, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Points to subtract from the candidate's accuracy for a one-sided lower bound at ``confidence``.

    ``correct``: per-image booleans of the candidate; ``baseline_correct``: the baseline's on the same
    images in the same order (paired, for a drop SLA) or None (binomial, for an absolute floor)."""
    import numpy as np

    z = z_value(confidence)
    c = np.asarray(correct, dtype=np.float64)
    n = c.size
    if z == 0 or n < 2:
        return 0.0 if z == 0 else float("inf")
    if baseline_correct is not None:
        b = np.asarray(baseline_correct, dtype=np.float64)
        if b.size != n:
            raise UsageError(f"paired accuracy margin: {n} candidate predictions against {b.size} baseline ones",
                             hint="score both on the same validation images")
        se = float(np.std(b - c, ddof=1)) / np.sqrt(n)
    else:
        p = float(c.mean())
        se = float(np.sqrt(p * (1 - p) / n))
    return float(100.0 * z * se)


def rule_text(confidence: float, paired: bool) -> str:
    """How feasibility is decided, for logs and reports ('' when the margin is off)."""
    if z_value(confidence) == 0:
        return ""
    return (f"as a one-sided lower bound at confidence {confidence:g} "
            f"({'paired with the baseline per image' if paired else 'binomial'})")


def pack(correct) -> str:
    """Per-image booleans as a compact string (kept in the study so resumed runs and workers reuse them)."""
    import numpy as np

    c = np.asarray(correct, dtype=bool)
    return f"{c.size}:" + base64.b64encode(np.packbits(c).tobytes()).decode("ascii")


def unpack(text: str):
    import numpy as np

    n, _, data = text.partition(":")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    return bits[: int(n)].astype(bool)
