"""The user's own metric: a function ``(predict, loader) -> float | per-sample values``.

``predict`` is the runner (numpy batch in, output out) and ``loader`` the labelled batches. It returns
either one number (higher is better, in the user's own points) or one number per sample in the
loader's order: floats (value = their mean, and the SLA's confidence bound uses them) or booleans
(hits, value = percent of True, like top-1). Anything else, NaN or infinity, or an exception, is one
error line naming the function.

A ``package.module:function`` text is imported only by ``import_function``, which ``resolve`` calls
for a name the caller gave (a CLI argument, an API call), never for one read from a file.
"""
from __future__ import annotations

import importlib
import numbers
import re
from typing import Any, Callable

import numpy as np

from ..core.errors import EdgeslimError, UsageError
from .base import OUTPUTS, Run, Score, batches, first_line, to_numpy

FORM = "package.module:function"
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_HINT = "a metric function takes (predict, loader) and returns a finite number or one number per sample"


class UserMetric:
    """A Metric around ``fn(predict, loader)``; ``outputs`` says which runner it wants ("first" | "all")."""

    task = None  # any data: the function knows what it scores

    def __init__(self, fn: Callable, name: str | None = None, *, outputs: str = "first"):
        if not callable(fn):
            raise UsageError(f"a metric function must be callable, got {type(fn).__name__}", hint=_HINT)
        if outputs not in OUTPUTS:
            raise UsageError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
        self.fn, self.outputs = fn, outputs
        self.name = name or describe(fn)

    def evaluate(self, run: Run, loader: Any, *, max_batches: int | None = None) -> Score:
        counted = _Counted(loader, max_batches)
        try:
            result = self.fn(run, counted)
        except EdgeslimError:
            raise  # edgeslim's own errors (a corrupt image in the loader, ...) already say what happened
        except Exception as e:  # the user's function failed: name it, one line
            raise EdgeslimError(f"metric {self.name} raised {first_line(e)}", hint=_HINT) from None
        return to_score(result, self.name, counted.count)

    def __repr__(self) -> str:
        return f"UserMetric({self.name})"


def describe(fn: Callable) -> str:
    """``module:qualname`` of a function, else its type's name."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else type(fn).__name__


def to_score(result: Any, name: str, seen: int) -> Score:
    """A user function's return as a Score; an EdgeslimError naming the function when it is not a metric."""
    if isinstance(result, (bool, np.bool_)):
        raise EdgeslimError(f"metric {name} returned a bool ({result}), not a number", hint=_HINT)
    if hasattr(result, "detach") or isinstance(result, np.ndarray):
        result = to_numpy(result)
        if result.ndim == 0:
            result = result.item()
    if isinstance(result, numbers.Real) and not isinstance(result, bool):
        value = float(result)
        if not np.isfinite(value):
            raise EdgeslimError(f"metric {name} returned {value}, not a finite number", hint=_HINT)
        return Score(value, None, seen)
    if isinstance(result, (list, tuple, np.ndarray)):
        return _per_sample(result, name, seen)
    raise EdgeslimError(f"metric {name} returned {type(result).__name__}, expected a number or a sequence of "
                        "per-sample numbers", hint=_HINT)


def _per_sample(result, name: str, seen: int) -> Score:
    values = np.asarray(result) if isinstance(result, np.ndarray) else _array(result, name)
    if values.ndim != 1 or values.dtype.kind not in "biuf":
        what = f"an array of {values.dtype} with shape {tuple(values.shape)}"
        raise EdgeslimError(f"metric {name} returned {what}, expected one number per sample", hint=_HINT)
    if len(values) == 0:
        raise EdgeslimError(f"metric {name} returned no per-sample values", hint=_HINT)
    if seen and len(values) != seen:
        raise EdgeslimError(f"metric {name} returned {len(values)} per-sample values for the {seen} samples it "
                            "read from the loader", hint="return one value per sample, in the loader's order")
    if values.dtype.kind == "b":
        return Score(100.0 * float(values.mean()), values.astype(bool), len(values))
    bad = np.flatnonzero(~np.isfinite(values.astype(np.float64)))
    if bad.size:
        raise EdgeslimError(f"metric {name} returned {values[bad[0]]} for sample {bad[0]}, not a finite number",
                            hint=_HINT)
    values = values.astype(np.float64)
    return Score(float(values.mean()), values, len(values))


def _array(seq, name: str) -> np.ndarray:
    items = []
    for i, v in enumerate(seq):
        if hasattr(v, "detach") or isinstance(v, np.ndarray):
            v = to_numpy(v)
            v = v.item() if v.ndim == 0 else v
        if not isinstance(v, (numbers.Real, np.bool_)):
            raise EdgeslimError(f"metric {name} returned a sequence holding {type(v).__name__} at position {i}, "
                                "expected numbers", hint=_HINT)
        items.append(v)
    kinds = {isinstance(v, (bool, np.bool_)) for v in items}
    if kinds == {True, False}:
        raise EdgeslimError(f"metric {name} returned a sequence mixing booleans and numbers", hint=_HINT)
    return np.asarray(items, dtype=bool if kinds == {True} else np.float64)


class _Counted:
    """The loader as the user's function sees it: at most ``max_batches`` batches, the samples counted
    (the most any one pass read); other attributes (``dataset``, ``batch_size``) are the loader's."""

    def __init__(self, loader: Any, max_batches: int | None):
        self._loader, self._max, self.count = loader, max_batches, 0

    def __iter__(self):
        seen = 0
        for batch in batches(self._loader, self._max):
            first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
            seen += len(first) if hasattr(first, "__len__") else 1
            self.count = max(self.count, seen)
            yield batch

    def __len__(self) -> int:
        n = len(self._loader)
        return n if self._max is None else min(n, self._max)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


def import_function(text: str) -> Callable:
    """The function a ``package.module:function`` text names, imported now because the caller named it."""
    module_name, sep, attr = text.partition(":")
    if not sep or not _DOTTED.match(module_name) or not _DOTTED.match(attr):
        raise UsageError(f"metric {text!r} is not a metric name nor {FORM}", hint=f"write {FORM}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        raise UsageError(f"metric {text!r}: no module named {missing!r}",
                         hint="the module must be importable (on PYTHONPATH); the form is " + FORM) from None
    except Exception as e:  # the user's module failed while importing
        raise UsageError(f"metric {text!r}: importing {module_name} raised {first_line(e)}") from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise UsageError(f"metric {text!r}: {module_name} has no attribute {attr!r}", hint=f"write {FORM}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise UsageError(f"metric {text!r}: {module_name}.{attr} is a {type(fn).__name__}, not a function",
                         hint=_HINT)
    return fn
