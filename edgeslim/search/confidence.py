"""How sure the search is that a candidate meets the SLA, from the validation images it was scored on.

A validation split of n images measures a metric with a sampling error, and the search picks the
smallest of many candidates that clear the SLA on that same split: the pick is biased towards
candidates that got lucky there (the winner's curse), and it loses more on unseen data than it did
on validation. So a candidate counts as feasible only when a one-sided lower confidence bound of
its score clears the SLA:

    val_score - z(confidence) * SE  >=  SLA

- with ``max_drop`` the quantity tested is the drop against the baseline, measured on the SAME
  images, so SE is the standard error of the paired per-image difference (baseline minus
  candidate). Images both get right or both get wrong carry no noise: a candidate that changes
  few predictions gets a small margin, one that reshuffles many gets a large one;
- with an absolute floor (``min_accuracy``) SE is the binomial standard error of the accuracy
  (hits), or the standard error of the mean of per-sample numbers.

Per-sample values are the metric's (``Score.per_sample``): booleans (top-1 hits: the score is
100 x their mean, so SE is scaled to percent) or numbers in the metric's own points (a user
function's; the score is their mean, no scaling). A metric without them (map, miou, a function
returning one number) has no sample-based bound: its margin is 0, the plain check.

``confidence`` 0.9 means z = 1.28. Values of 0.5 or less turn the margin off (the plain
``val_score >= SLA`` check).
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
    """Points to subtract from the candidate's score for a one-sided lower bound at ``confidence``.

    ``correct``: the candidate's per-sample values, booleans (hits: the score is 100 x their mean, so
    the margin is in percent) or numbers in the metric's own points (the score is their mean);
    ``baseline_correct``: the baseline's on the same samples in the same order (paired, for a drop SLA)
    or None (an absolute floor: the binomial SE for hits, the SE of the mean for numbers)."""
    import numpy as np

    z = z_value(confidence)
    raw = np.asarray(correct)
    hits = raw.dtype.kind == "b"
    c = raw.astype(np.float64)
    n = c.size
    if z == 0 or n < 2:
        return 0.0 if z == 0 else float("inf")
    if baseline_correct is not None:
        b_raw = np.asarray(baseline_correct)
        if b_raw.size != n:
            raise UsageError(f"paired accuracy margin: {n} candidate predictions against {b_raw.size} baseline ones",
                             hint="score both on the same validation images")
        if (b_raw.dtype.kind == "b") != hits:
            raise UsageError("paired margin: the candidate's per-sample values and the baseline's are of different "
                             "kinds (hits and numbers)", hint="score both with the same metric")
        se = float(np.std(b_raw.astype(np.float64) - c, ddof=1)) / np.sqrt(n)
    elif hits:
        p = float(c.mean())
        se = float(np.sqrt(p * (1 - p) / n))
    else:
        se = float(np.std(c, ddof=1)) / np.sqrt(n)
    return float(100.0 * z * se) if hits else float(z * se)


NO_PER_SAMPLE = "no per-sample values: the plain value is compared with the SLA"
KINDS = ("hits", "numbers", "none")  # what the metric's per-sample values are: booleans, numbers, or none


def rule_text(confidence: float, paired: bool, values: str = "hits") -> str:
    """How feasibility is decided, for logs and reports ('' when the margin is off). ``values``: the
    metric's per-sample values, "hits" (top-1), "numbers" (a user function's) or "none" (map, miou, a
    function returning one number), when no sample-based bound exists."""
    if z_value(confidence) == 0:
        return ""
    if values not in KINDS:
        raise UsageError(f"values must be one of {', '.join(KINDS)}, got {values!r}")
    if values == "none":
        return NO_PER_SAMPLE
    unpaired = "binomial" if values == "hits" else "standard error of the per-sample mean"
    return (f"as a one-sided lower bound at confidence {confidence:g} "
            f"({'paired with the baseline per image' if paired else unpaired})")


def kind_of(packed: str | None) -> str:
    """What ``pack`` packed: "hits", "numbers", or "none" (no per-sample values)."""
    return "none" if packed is None else "numbers" if packed.startswith("f") else "hits"


def pack(correct) -> str | None:
    """Per-sample values as a compact string (kept in the study so resumed runs and workers reuse
    them): booleans as bits ("N:..."), numbers as float64 ("fN:..."); None stays None."""
    import numpy as np

    if correct is None:
        return None
    raw = np.asarray(correct)
    if raw.dtype.kind != "b":
        v = raw.astype("<f8")
        return f"f{v.size}:" + base64.b64encode(v.tobytes()).decode("ascii")
    c = raw.astype(bool)
    return f"{c.size}:" + base64.b64encode(np.packbits(c).tobytes()).decode("ascii")


def unpack(text: str):
    import numpy as np

    n, _, data = text.partition(":")
    if n.startswith("f"):
        return np.frombuffer(base64.b64decode(data), dtype="<f8")[: int(n[1:])].astype(np.float64)
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    return bits[: int(n)].astype(bool)
