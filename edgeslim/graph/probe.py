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
from typing import Any, Mapping

import torch
from torch import nn

from .dependency import build_graph

_MAX_ROUNDS = 4  # bisection rounds: interactions between groups are rare; after these, freeze the rest


def forward_problem(model: nn.Module, example: Any, ref_shape) -> str | None:
    """Why ``model`` (after a surgery) no longer does what it did: None when it runs on ``example``
    and returns the ``ref_shape`` it returned before."""
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as e:  # noqa: BLE001 - any failure of the forward pass is the answer
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
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


def _trial(model: nn.Module, example: Any, exclude: Mapping[str, str], roots: set[str], ref_shape) -> str | None:
    """Remove one unit of each group in ``roots`` from a copy of ``model``; what breaks, if anything."""
    m = copy.deepcopy(model)
    try:
        graph = build_graph(m, example, exclude=exclude)
        for g in graph.groups():
            if g.prunable and g.root in roots and g.unit > 1:
                graph.remove(g, g.expand([g.unit - 1]))
    except Exception as e:  # noqa: BLE001 - the surgery itself failed inside the library
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    return forward_problem(m, example, ref_shape)


def _bisect(model, example, exclude, roots: list[str], ref_shape, err: str) -> dict[str, str]:
    """The roots among ``roots`` (whose trial failed with ``err``) that break the model alone."""
    if len(roots) == 1:
        return {roots[0]: err}
    half = len(roots) // 2
    found: dict[str, str] = {}
    for part in (roots[:half], roots[half:]):
        e = _trial(model, example, exclude, set(part), ref_shape)
        if e is not None:
            found.update(_bisect(model, example, exclude, part, ref_shape, e))
    return found or {r: err for r in roots}  # only together: keep them all


def unsafe_groups(model: nn.Module, example: Any, exclude: Mapping[str, str], ref_shape,
                  roots: list[str] | None = None) -> dict[str, str]:
    """Group root -> why removing its channels breaks ``model`` (empty when every group is safe).
    ``roots``: the prunable groups' roots under ``exclude``, when the caller has them (a trace saved)."""
    if roots is None:
        roots = [g.root for g in build_graph(model, example, exclude=exclude).groups() if g.prunable]
    found: dict[str, str] = {}
    for _ in range(_MAX_ROUNDS):
        rest = [r for r in roots if r not in found]
        err = _trial(model, example, {**exclude, **found}, set(rest), ref_shape) if rest else None
        if err is None:
            break
        found.update(_bisect(model, example, {**exclude, **found}, rest, ref_shape, err))
    else:
        found.update({r: "with other groups" for r in roots if r not in found})
    return {r: f"removing its channels breaks the model ({e})" for r, e in found.items()}
