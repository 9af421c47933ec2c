"""Which channel groups can really be removed: a trial surgery on a copy, before the real one.

Torch-Pruning's couplings come from one traced forward pass; a few operators fall outside what it
can see (a parameter sliced along the wrong dimension, a reshape to a fixed channel count, an index
table sized by heads). Rather than fail after the surgery, :func:`unsafe_groups` removes one unit of
every prunable group on a copy, runs it, and -- when that breaks -- bisects the groups to find the
ones whose removal breaks the model. Those stay whole, each with the first line of the error as
the reason, and everything else is pruned as asked.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .dependency import build_graph

_MAX_ROUNDS = 4  # bisection rounds: interactions between groups are rare; after these, freeze the rest
Trial = Callable[[set], "str | None"]


def forward_problem(model: nn.Module, example: Any, ref_shape) -> str | None:
    """Why ``model`` (after a surgery) no longer does what it did: None when it runs on ``example``
    and returns the ``ref_shape`` it returned before."""
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as e:  # noqa: BLE001 - any failure of the forward pass is the answer
        return _error(e)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if ref_shape is not None and shape != tuple(ref_shape):
        return f"the output shape changes from {list(ref_shape)} to {list(shape or [])}"
    return None


def output_shape(model: nn.Module, example: Any):
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(example)
    finally:
        model.train(was)
    return tuple(out.shape) if isinstance(out, torch.Tensor) else None


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


def _channel_trial(model: nn.Module, example: Any, exclude: Mapping[str, str], ref_shape) -> Trial:
    def trial(roots: set[str]) -> str | None:
        """Remove one unit of each group in ``roots`` from a copy of ``model``; what breaks, if anything."""
        m = copy.deepcopy(model)
        try:
            graph = build_graph(m, example, exclude=exclude)
            for g in graph.groups():
                if g.prunable and g.root in roots and g.unit > 1:
                    graph.remove(g, g.expand([g.unit - 1]))
        except Exception as e:  # noqa: BLE001 - the surgery itself failed inside the library
            return _error(e)
        return forward_problem(m, example, ref_shape)

    return trial


def _bisect(trial: Trial, items: list[str], err: str) -> dict[str, str]:
    """The items among ``items`` (whose trial failed with ``err``) that break the model alone."""
    if len(items) == 1:
        return {items[0]: err}
    half = len(items) // 2
    found: dict[str, str] = {}
    for part in (items[:half], items[half:]):
        e = trial(set(part))
        if e is not None:
            found.update(_bisect(trial, part, e))
    return found or {r: err for r in items}  # only together: keep them all


def breaking(items: list[str], trial: Trial) -> dict[str, str]:
    """Item -> the error its surgery causes, for the ``items`` whose surgery (``trial(subset)``: on a
    copy, None when the copy still works) breaks the model; empty when doing all of them works."""
    found: dict[str, str] = {}
    for _ in range(_MAX_ROUNDS):
        rest = [r for r in items if r not in found]
        err = trial(set(rest)) if rest else None
        if err is None:
            return found
        found.update(_bisect(trial, rest, err))
    return {**found, **{r: "with other groups" for r in items if r not in found}}


def unsafe_groups(model: nn.Module, example: Any, exclude: Mapping[str, str], ref_shape,
                  roots: list[str] | None = None) -> dict[str, str]:
    """Group root -> why removing its channels breaks ``model`` (empty when every group is safe).
    ``roots``: the prunable groups' roots under ``exclude``, when the caller has them (a trace saved)."""
    if roots is None:
        roots = [g.root for g in build_graph(model, example, exclude=exclude).groups() if g.prunable]
    found = breaking(roots, _channel_trial(model, example, exclude, ref_shape))
    return {r: f"removing its channels breaks the model ({e})" for r, e in found.items()}
