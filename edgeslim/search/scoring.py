"""The metric a search scores with: its name (found without importing anything), the study's metric
on a resume or for a worker, and how its values read in logs and notes (top-1 and top-5 in percent,
every other metric in its own points).

A ``package.module:function`` text is imported by ``metrics.resolve`` only where the caller gave it
(``auto(metric=...)``, ``--metric``); a name read from a study, a YAML config or a report is compared,
never imported.
"""
from __future__ import annotations

import re
from typing import Any

from ..core.errors import UsageError

PERCENT = ("top1", "top5")  # metrics whose points are percent
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def metric_name(metric: Any) -> str | None:
    """The name a metric is recorded under (the study, the report): a text as given, a Metric's
    ``name``, a callable's ``module:qualname`` (what ``metrics.from_callable`` names it)."""
    if metric is None:
        return None
    if isinstance(metric, str):
        return metric.strip()
    from .. import metrics

    return metrics.resolve(metric).name  # a callable or a Metric: nothing is imported


def check_metric(metric: Any) -> None:
    """A UsageError (one line) for what cannot be a metric: an unknown name, a malformed text, an
    object that is neither callable nor a Metric. A ``package.module:function`` text is checked for its
    form only here; ``auto`` imports it when it runs (the call that names it)."""
    if metric is None:
        return
    from .. import metrics

    if not isinstance(metric, str):
        metrics.resolve(metric)
        return
    text = metric.strip()
    module, sep, attr = text.partition(":")
    if text in metrics.names() or (sep and _MODULE.match(module) and attr):
        return
    metrics.resolve(text)  # the UsageError naming the metrics, or the form (a malformed text imports nothing)


def study_metric(given: Any, name: str):
    """The Metric a resumed run (or a worker) scores with: the study's, recorded as ``name``.
    ``given``: this run's resolved Metric, or None. Another metric is refused; a function of the user's
    must be given again (the name in the study is never imported)."""
    from .. import metrics

    if given is not None:
        if given.name != name:
            raise UsageError(f"the study scores with metric {name}, but this run asks for metric {given.name}",
                             hint=f"resume with the study's metric ({_how(name)}), or start a fresh search "
                                  "with another --out / --storage")
        return given
    if name in metrics.names():
        return metrics.get(name)
    raise UsageError(f"the study scores with metric {name}, a function of yours, which is not imported from the "
                     "study: give it again", hint=_how(name))


def _how(name: str) -> str:
    from .. import metrics

    if name in metrics.names():
        return f"--metric {name}, metric={name!r}"
    return f"metric=<the function> in the API; --metric {name} on the command line when it is package.module:function"


def what(name: str) -> str:
    """How logs call the metric's value: 'accuracy' for top-1 (as ever), else the metric's name."""
    return "accuracy" if name == "top1" else name


def label(name: str) -> str:
    """The metric in summaries: top-1, top-5, map, miou, a function's name."""
    return {"top1": "top-1", "top5": "top-5"}.get(name, name)


def value_text(name: str, v: float | None) -> str:
    """'90.91%' for top-1 / top-5, '31.20' for a metric in its own points, '–' for none."""
    if v is None:
        return "–"
    return f"{v:.2f}%" if name in PERCENT else f"{v:.2f}"


def summary_line(name: str, baseline: float | None, result: float | None, split: str = "test") -> str | None:
    """'top-1 91.20% -> 90.85% (drop 0.35 points, test split)', or None without both values."""
    if baseline is None or result is None:
        return None
    return (f"{label(name)} {value_text(name, baseline)} -> {value_text(name, result)} "
            f"(drop {baseline - result:.2f} points, {split} split)")


def named(name: str, v: float | None) -> str:
    """A value as logs write it: '90.91%' for top-1 (as ever), 'map 31.20' for any other metric."""
    return value_text(name, v) if name == "top1" else f"{name} {value_text(name, v)}"
