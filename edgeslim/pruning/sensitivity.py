"""Sensitivity analysis: how accuracy falls when one layer at a time is pruned.

    curves = analyze(model, data, example_shape=(1, 1, 28, 28))      # rows: layer, ratio, accuracy
    ratios = allocate(model, curves, target_macs=0.5, example=x)     # {layer: ratio}

``analyze`` prunes each prunable channel group alone at each ratio (others untouched)
and measures validation accuracy - one curve per layer. ``allocate`` turns the curves
into per-layer ratios: every layer gets the largest ratio whose accuracy drop stays
under a common threshold, and the threshold is searched (bisection, MACs measured on
the really pruned model) until the model keeps at most ``target_macs`` of its MACs.
``target_macs`` is the fraction of the original MACs KEPT: 0.5 = 2x fewer MACs.
"""
from __future__ import annotations

import copy
import csv
import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import DataError, UsageError
from ..graph import output_shape
from .importance import Magnitude, calibration_batches, get_importance
from .structured import bisect_kept, exclusions, macs_of, prune_once

DEFAULT_RATIOS = (0.2, 0.4, 0.6, 0.8)


def _eval_batches(data: Any, max_batches: int) -> list:
    loader = None
    for split in ("val", "test", "train"):
        loader = getattr(data, split, None)
        if loader is not None:
            break
    if loader is None:
        loader = data
    out = []
    for i, (x, y) in enumerate(loader):
        if i >= max_batches:
            break
        out.append((x, y))
    if not out:
        raise DataError("sensitivity analysis needs evaluation batches")
    if any(isinstance(y, torch.Tensor) and y.ndim == 1 and (y < 0).any() for _, y in out):
        raise DataError("sensitivity analysis needs labelled data", hint="use a labelled dataset (--data)")
    return out


def _scorer(model: nn.Module, metric: Any):
    """``score(model, batches)``: ``metric`` (default: the model's task's, top-1 for a classifier) in its points."""
    from .. import metrics
    from ..models import task_of

    m = metrics.resolve(metric) if metric is not None else metrics.get(metrics.default_for(task_of(model)))

    @torch.no_grad()
    def score(net: nn.Module, batches: list) -> float:
        was = net.training
        try:
            value = m.evaluate(metrics.torch_runner(net, outputs=metrics.outputs_of(m)), batches).value
        finally:
            net.train(was)
        if value is None:
            raise DataError("sensitivity analysis needs labelled data", hint="use a labelled dataset (--data)")
        return value
    return score


def analyze(model: nn.Module, data: Any, *, example_shape, ratios=DEFAULT_RATIOS, importance: str = "l1",
            exclude=(), exclude_types=(), max_batches: int = 8, calibration: int = 4,
            progress: bool = False, metric: Any = None) -> dict[str, Any]:
    """Per-layer accuracy-vs-ratio curves. Returns {"baseline", "ratios", "layers", "rows"}. ``metric``:
    what "accuracy" is (default: the model's task's metric: top-1, mAP, mIoU), in its points."""
    ratios = tuple(float(r) for r in ratios)
    for r in ratios:
        if not 0 < r < 1:
            raise UsageError(f"sensitivity ratios must be in (0, 1), got {r}")
    model = copy.deepcopy(model).eval()
    example = torch.randn(tuple(example_shape))
    batches = _eval_batches(data, max_batches)
    _accuracy = _scorer(model, metric)
    excl, traced = exclusions(model, example, exclude, exclude_types, output_shape(model, example))
    crit = get_importance(importance)
    crit.prepare(model, calibration_batches(data, calibration) if crit.needs_data else [])
    groups = [g for g in traced if g.prunable]
    scores = {g.root: crit.channel_scores(g) for g in groups}
    base_acc = _accuracy(model, batches)
    base_macs = macs_of(model, example)
    rows = []
    for gi, g in enumerate(groups):
        for r in ratios:
            m = copy.deepcopy(model)
            try:
                prune_once(m, example, ratio=0.0, importance=crit, scores=scores, exclude=excl,
                           layer_ratios={g.root: r})
            except UsageError:  # this ratio would empty the layer
                continue
            acc = _accuracy(m, batches)
            rows.append({"layer": g.root, "channels": g.size, "ratio": r, "accuracy": round(acc, 3),
                         "drop": round(base_acc - acc, 3), "macs_kept": round(macs_of(m, example) / base_macs, 4)})
        if progress:
            print(f"  sensitivity {gi + 1}/{len(groups)} {g.root}", flush=True)
    return {"baseline": base_acc, "baseline_macs": base_macs, "ratios": list(ratios),
            "layers": [g.root for g in groups], "importance": importance, "eval_images": sum(len(x) for x, _ in batches),
            "rows": rows}


def _envelope(rows: list[dict], layer: str) -> list[tuple[float, float]]:
    """(ratio, drop) points from 0, made monotone (a ratio is as bad as the worst one below it)."""
    pts = [(0.0, 0.0)] + sorted((r["ratio"], r["drop"]) for r in rows if r["layer"] == layer)
    out, worst = [], 0.0
    for r, d in pts:
        worst = max(worst, d)
        out.append((r, worst))
    return out


def _ratio_at(env: list[tuple[float, float]], tau: float) -> float:
    best = 0.0
    for (r0, d0), (r1, d1) in zip(env, env[1:]):
        if d1 <= tau:
            best = r1
            continue
        if d0 <= tau < d1:
            best = r0 + (r1 - r0) * (tau - d0) / (d1 - d0)
        break
    return best


def allocate(model: nn.Module, curves: dict[str, Any], target_macs: float, *, example: torch.Tensor,
             exclude=frozenset(), round_to: int = 1, max_ratio: float = 0.9, iters: int = 10) -> dict[str, float]:
    """Per-layer ratios from sensitivity curves that keep <= ``target_macs`` of the MACs."""
    if not 0 < target_macs < 1:
        raise UsageError(f"target_macs is the fraction of MACs kept and must be in (0, 1), got {target_macs}")
    layers = curves["layers"]
    envs = {l: _envelope(curves["rows"], l) for l in layers}
    base = macs_of(model, example)
    crit = Magnitude(1)  # channel counts, not which channels, decide the MACs

    def ratios_for(tau: float) -> dict[str, float]:
        return {l: min(max_ratio, _ratio_at(envs[l], tau)) for l in layers}

    def kept(tau: float) -> float:
        m = copy.deepcopy(model)
        prune_once(m, example, ratio=0.0, importance=crit, exclude=exclude, round_to=round_to, clamp=True,
                   max_layer_ratio=max_ratio, layer_ratios={k: v for k, v in ratios_for(tau).items() if v > 0})
        return macs_of(m, example) / base

    hi = max([d for e in envs.values() for _, d in e] + [0.0]) + 1e-6
    if kept(hi) > target_macs:
        raise UsageError(
            f"target_macs {target_macs} is out of reach with the scanned ratios (up to {max(curves['ratios'])}): "
            f"best is {kept(hi):.3f}", hint="scan higher ratios (--ratios) or raise --target-macs")
    tau = bisect_kept(kept, target_macs, 0.0, hi, iters)
    return {k: v for k, v in ratios_for(tau).items() if v > 0}


# -- outputs ------------------------------------------------------------------------------
def table_csv(curves: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["layer", "channels", "ratio", "accuracy", "drop", "macs_kept"])
    w.writeheader()
    for r in curves["rows"]:
        w.writerow(r)
    return buf.getvalue()


def table_markdown(curves: dict[str, Any]) -> str:
    ratios = curves["ratios"]
    head = "| layer | channels | " + " | ".join(f"acc @ {r:g}" for r in ratios) + " |"
    lines = [f"Baseline accuracy {curves['baseline']:.2f}% on {curves['eval_images']} images; "
             f"each layer pruned alone ({curves['importance']} importance).", "",
             head, "|---|---:|" + "---:|" * len(ratios)]
    by = {}
    for r in curves["rows"]:
        by.setdefault(r["layer"], {})[r["ratio"]] = r
    for layer in curves["layers"]:
        cells = [f"{by.get(layer, {}).get(r, {}).get('accuracy', float('nan')):.2f}" if r in by.get(layer, {}) else "–"
                 for r in ratios]
        ch = next((x["channels"] for x in curves["rows"] if x["layer"] == layer), "")
        lines.append(f"| {layer} | {ch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.io import save_png

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for layer in curves["layers"]:
        pts = sorted((r["ratio"], r["accuracy"]) for r in curves["rows"] if r["layer"] == layer)
        if pts:
            ax.plot([0.0] + [p[0] for p in pts], [curves["baseline"]] + [p[1] for p in pts], marker="o",
                    label=layer, linewidth=1)
    ax.set_xlabel("fraction of channels removed (this layer alone)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Per-layer pruning sensitivity")
    ax.grid(alpha=0.3)
    if len(curves["layers"]) <= 24:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)


def layer_ratio_regexes(ratios: dict[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((re.escape(k), v) for k, v in ratios.items())
