"""Structured (channel / filter) pruning that physically removes channels.

    small = edgeslim.prune(model, ChannelPrune(ratio=0.5, importance="taylor"), data=data)

The result is an ordinary, smaller, dense nn.Module: no masks, no hooks, no custom
layer types, so it saves and loads through edgeslim.models and exports to ONNX like
the original. Channels that must go together (residual sums, concatenations,
depthwise convs, norms, flatten->Linear, attention) are found by edgeslim.graph.

Ratio semantics: ``ratio`` is the fraction of each prunable group's channels that is
removed (per-layer ranking), or of all prunable channels together (``global_ranking``,
each group capped at ``max_layer_ratio``). Layers whose output is the model output
(the classifier head) keep their outputs. ``target_macs`` instead asks for a model
with at most that fraction of the original MACs (0.5 = 2x fewer) and searches the
ratio (``allocation="uniform"``) or per-layer ratios from a sensitivity scan
(``allocation="sensitivity"``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Any

import torch
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, ModelError, UsageError
from ..core.registry import Context, register
from ..graph import build_graph, excluded_modules
from .importance import IMPORTANCE_NAMES, Importance, calibration_batches, get_importance
from .schedule import SCHEDULES, step_fractions


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChannelPrune(Config):
    kind = "channel_prune"
    ratio: float = 0.5
    importance: str = "l1"
    global_ranking: bool = False
    round_to: int = 1
    exclude: tuple[str, ...] = ()  # layer-name regexes whose output channels are kept
    exclude_types: tuple[str, ...] = ()  # layer type names ("Linear", "mypkg.MyBlock")
    layer_ratios: tuple[tuple[str, float], ...] = ()  # (regex on a group's root layer, ratio)
    max_layer_ratio: float = 0.9  # cap per group under global ranking / MACs search
    target_macs: float | None = None  # fraction of the original MACs to keep (overrides ratio)
    allocation: str = "uniform"  # with target_macs: "uniform" ratio search or "sensitivity"
    schedule: str = "oneshot"  # oneshot | iterative | agp
    steps: int = 3  # prune -> fine-tune rounds for iterative / agp
    finetune_epochs: float = 0.0  # total, spread over the steps
    lr: float | None = None
    max_batches: int | None = None  # cap fine-tuning batches per epoch (quick runs)
    calibration_batches: int = 4  # batches for taylor / activation / apoz
    distill: bool = False  # fine-tune with a KD loss from the unpruned model
    bn_batches: int = 50  # with data: re-estimate BatchNorm statistics on this many batches after pruning

    def validate(self) -> None:
        if isinstance(self.layer_ratios, dict):
            object.__setattr__(self, "layer_ratios", tuple(self.layer_ratios.items()))
        object.__setattr__(self, "layer_ratios", tuple(tuple(p) for p in self.layer_ratios))
        _check_ratio(self.ratio, "ratio")
        for pat, r in self.layer_ratios:
            _check_ratio(r, f"ratio for {pat!r}")
        if self.importance not in IMPORTANCE_NAMES:
            raise UsageError(f"unknown importance {self.importance!r}", hint=f"one of: {', '.join(IMPORTANCE_NAMES)}")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise UsageError(f"round_to must be a positive integer, got {self.round_to!r}")
        if not 0 < self.max_layer_ratio < 1:
            raise UsageError(f"max_layer_ratio must be in (0, 1), got {self.max_layer_ratio}")
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise UsageError(f"target_macs is the fraction of MACs kept and must be in (0, 1), got {self.target_macs}",
                             hint="0.5 keeps half of the MACs (2x fewer)")
        if self.allocation not in ("uniform", "sensitivity"):
            raise UsageError(f"unknown allocation {self.allocation!r}", hint="use 'uniform' or 'sensitivity'")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"one of: {', '.join(SCHEDULES)}")
        if self.steps < 1:
            raise UsageError("steps must be >= 1")
        if self.finetune_epochs < 0:
            raise UsageError("finetune_epochs must be >= 0")
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) or self.bn_batches < 0:
            raise UsageError(f"bn_batches must be an integer >= 0, got {self.bn_batches!r}")


def _check_ratio(r: Any, what: str) -> None:
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 <= r < 1:
        raise UsageError(f"{what} must be in [0, 1), got {r!r}",
                         hint="it is the fraction removed: 0.5 removes half; 1 would remove everything")


# -- example inputs --------------------------------------------------------------
def example_input(model: nn.Module, ctx: Context | None) -> torch.Tensor:
    shape = ctx.input_shape if ctx is not None else None
    if shape is None and ctx is not None and ctx.data is not None and getattr(ctx.data, "meta", None) is not None:
        shape = ctx.data.meta.input_shape
    if shape is None:
        shape = getattr(model, "input_shape", None)
    if shape is None:
        raise UsageError("structured pruning needs the model's input shape to trace it",
                         hint="pass data=... or input_shape=(C, H, W)")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3 or len(shape) == 1:
        shape = (1, *shape)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)


# -- one pruning pass --------------------------------------------------------------
def _unit_scores(g, s: torch.Tensor) -> torch.Tensor:
    s = s.double().reshape(g.channel_groups, g.unit).mean(0) if g.channel_groups > 1 else s.double()
    return s


def _round_keep(keep_units: int, g, round_to: int) -> int:
    if round_to > 1:
        step = round_to // math.gcd(round_to, g.channel_groups)
        keep_units = max(step, int(math.floor(keep_units / step + 0.5)) * step)
    return min(keep_units, g.unit)


def prune_once(
    model: nn.Module,
    example: torch.Tensor,
    *,
    ratio: float,
    importance: Importance,
    scores: dict[str, torch.Tensor] | None = None,
    batches: list | None = None,
    global_ranking: bool = False,
    round_to: int = 1,
    exclude: set[str] = frozenset(),
    layer_ratios: dict[str, float] | None = None,
    max_layer_ratio: float = 0.9,
    original: dict[str, int] | None = None,
    clamp: bool = False,
) -> list[dict[str, Any]]:
    """Remove channels from ``model`` in place; returns one row per group.

    Ratios are relative to ``original`` channel counts (group root -> channels) when
    given, so repeated calls walk a schedule towards the final size.
    """
    graph = build_graph(model, example, exclude=exclude)
    groups = graph.groups()
    prunable = [g for g in groups if g.prunable]
    if scores is None:
        importance.prepare(model, batches or [])
        scores = {g.root: importance.channel_scores(g) for g in prunable}
    layer_ratios = layer_ratios or {}
    original = original or {}
    plan: dict[str, int] = {}  # root -> units to keep
    pool = []
    for g in prunable:
        orig_units = original.get(g.root, g.size) // g.channel_groups
        r = layer_ratios.get(g.root)
        if r is None and global_ranking:
            pool.append((g, orig_units))
            continue
        r = ratio if r is None else r
        keep = int(math.floor((1 - r) * orig_units + 0.5))
        if clamp:  # searches (MACs targets): never empty a layer, cap like global ranking does
            keep = max(keep, 1, int(math.ceil((1 - max_layer_ratio) * orig_units)))
        if keep < 1:
            raise UsageError(
                f"ratio {r} would remove every channel of layer {g.root!r} ({orig_units * g.channel_groups} channels)",
                hint=f"lower the ratio, give {g.root!r} its own ratio, or exclude it (--exclude '{re.escape(g.root)}')",
            )
        plan[g.root] = keep
    if pool:
        entries = []
        for g, orig_units in pool:
            s = _unit_scores(g, scores[g.root])
            if importance.normalize:
                s = s / s.mean().clamp_min(1e-12)
            entries += [(float(v), g.root) for v in s]
        total_orig = sum(u for _, u in pool)
        total_now = sum(g.unit for g, _ in pool)
        n_remove = total_now - int(math.floor((1 - ratio) * total_orig + 0.5))
        floor_keep = {g.root: max(1, int(math.ceil((1 - max_layer_ratio) * u))) for g, u in pool}
        keep = {g.root: g.unit for g, _ in pool}
        for v, root in sorted(entries):
            if n_remove <= 0:
                break
            if keep[root] > floor_keep[root]:
                keep[root] -= 1
                n_remove -= 1
        plan.update(keep)
    rows = []
    for g in groups:
        before = g.size
        removed: list[int] = []
        if g.prunable and g.root in plan:
            keep_units = _round_keep(plan[g.root], g, round_to)
            n = g.unit - keep_units
            if n > 0:
                s = _unit_scores(g, scores[g.root])
                drop = torch.argsort(s, stable=True)[:n].tolist()
                removed = g.expand(drop)
                graph.remove(g, removed)
        after = before if not g.prunable or g.root not in plan else _round_keep(plan[g.root], g, round_to) * g.channel_groups
        after = min(after, before)
        rows.append({"layer": g.root, "channels": original.get(g.root, before), "kept": after,
                     "ratio": round(1 - after / max(1, original.get(g.root, before)), 4),
                     "note": g.frozen or "", "removed": removed})
    return rows


def _check_forward(model: nn.Module, example: torch.Tensor, ref_shape) -> None:
    try:
        with torch.no_grad():
            was = model.training
            out = model.eval()(example)
            model.train(was)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"the pruned model no longer runs: {type(e).__name__}: {str(e).splitlines()[0]}",
                         hint="a layer edgeslim cannot see through changes channel counts; exclude it with --exclude") from e
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if ref_shape is not None and shape != ref_shape:
        raise ModelError(f"pruning changed the output shape from {list(ref_shape)} to {list(shape or [])}",
                         hint="exclude the layers that produce the model output with --exclude")


def _out_shape(model: nn.Module, example: torch.Tensor):
    with torch.no_grad():
        was = model.training
        out = model.eval()(example)
        model.train(was)
    return tuple(out.shape) if isinstance(out, torch.Tensor) else None


def macs_of(model: nn.Module, example: torch.Tensor) -> int:
    from ..measure import count_macs

    was = model.training
    try:
        return int(count_macs(model, tuple(example.shape))[0])
    finally:
        model.train(was)


def _resolve_layer_ratios(pairs, roots: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pat, r in pairs:
        hit = [n for n in roots if re.fullmatch(pat, n)]
        if not hit:
            raise UsageError(f"layer_ratios pattern {pat!r} matches no prunable layer",
                             hint=f"prunable layers: {', '.join(roots[:8])}{'…' if len(roots) > 8 else ''}")
        for n in hit:
            out.setdefault(n, float(r))
    return out


# -- MACs-targeted search ------------------------------------------------------------
def search_ratio(model, example, target: float, *, prune_kwargs: dict, max_ratio: float, iters: int = 8) -> float:
    """Smallest uniform ratio whose pruned copy keeps <= ``target`` of the MACs."""
    base = macs_of(model, example)

    def kept(r: float) -> float:
        m = copy.deepcopy(model)
        prune_once(m, example, ratio=r, clamp=True, **prune_kwargs)
        return macs_of(m, example) / base

    if kept(max_ratio) > target:
        raise UsageError(
            f"target_macs {target} is out of reach: even ratio {max_ratio} keeps {kept(max_ratio):.3f} of the MACs",
            hint="raise --target-macs, raise max_layer_ratio, or exclude fewer layers")
    return bisect_kept(kept, target, 0.0, max_ratio, iters)


def bisect_kept(kept, target: float, lo: float, hi: float, iters: int) -> float:
    """The smallest x in [lo, hi] (to bisection precision) with ``kept(x) <= target``, for a ``kept``
    that falls as x grows and ``kept(hi) <= target``."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if kept(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


# -- the handler ------------------------------------------------------------------
@register(ChannelPrune)
def _apply(model: nn.Module, cfg: ChannelPrune, ctx: Context) -> nn.Module:
    example = example_input(model, ctx)
    ref_shape = _out_shape(model, example)
    crit = get_importance(cfg.importance, seed=ctx.seed)
    batches = calibration_batches(ctx.data, cfg.calibration_batches) if crit.needs_data else []
    if crit.needs_data and not batches:
        raise DataError(f"importance {cfg.importance!r} needs calibration data", hint="pass data=... (--data D)")
    exclude = excluded_modules(model, cfg.exclude, cfg.exclude_types)

    graph = build_graph(model, example, exclude=exclude)
    groups = graph.groups()
    original = {g.root: g.size for g in groups}
    roots = [g.root for g in groups if g.prunable]
    if not roots:
        raise UsageError("no prunable channel group left", hint="exclude fewer layers")
    layer_ratios = _resolve_layer_ratios(cfg.layer_ratios, roots)
    base_macs = macs_of(model, example)
    kw = dict(importance=crit, global_ranking=cfg.global_ranking, round_to=cfg.round_to, exclude=exclude,
              max_layer_ratio=cfg.max_layer_ratio, original=original)

    ratio = cfg.ratio
    notes = []
    if cfg.target_macs is not None:
        if cfg.allocation == "sensitivity":
            from .sensitivity import allocate, analyze

            if ctx.data is None:
                raise DataError("sensitivity allocation needs labelled data", hint="pass data=... or use allocation='uniform'")
            curves = analyze(model, ctx.data, example_shape=tuple(example.shape), importance=cfg.importance,
                             exclude=cfg.exclude, exclude_types=cfg.exclude_types)
            layer_ratios = {**allocate(model, curves, cfg.target_macs, example=example, exclude=exclude,
                                       round_to=cfg.round_to, max_ratio=cfg.max_layer_ratio), **layer_ratios}
            ratio = 0.0  # layers the allocation leaves out stay whole
            ctx.details["sensitivity"] = curves["rows"]
            notes.append(f"per-layer ratios from a sensitivity scan, reaching <= {cfg.target_macs} of the MACs")
        else:
            scores_model = copy.deepcopy(model)
            crit.prepare(scores_model, batches)
            g0 = build_graph(scores_model, example, exclude=exclude).groups()
            scores = {g.root: crit.channel_scores(g) for g in g0 if g.prunable}
            kw_s = {**kw, "scores": scores, "layer_ratios": layer_ratios}
            ratio = search_ratio(scores_model, example, cfg.target_macs, prune_kwargs=kw_s,
                                 max_ratio=cfg.max_layer_ratio)
            notes.append(f"uniform ratio {ratio:.3f} found to keep <= {cfg.target_macs} of the MACs")

    if cfg.distill and ctx.teacher is None and cfg.finetune_epochs:
        ctx.teacher = copy.deepcopy(model)
        notes.append("fine-tuned with distillation from the unpruned model")
    fractions = step_fractions(cfg.schedule, cfg.steps)
    epochs_per_step = cfg.finetune_epochs / len(fractions) if cfg.finetune_epochs else 0
    rows = []
    history = []
    for i, f in enumerate(fractions):
        step_ratios = {k: v * f for k, v in layer_ratios.items()}
        if crit.needs_data and i > 0:
            batches = calibration_batches(ctx.data, cfg.calibration_batches)
        rows = prune_once(model, example, ratio=ratio * f, batches=batches, layer_ratios=step_ratios,
                          clamp=cfg.target_macs is not None, **kw)
        _check_forward(model, example, ref_shape)
        step_info = {"step": i + 1, "fraction": round(f, 4), "macs": macs_of(model, example)}
        if cfg.bn_batches and ctx.data is not None:
            from ..train import recalibrate_bn

            step_info["bn_recalibrated"] = recalibrate_bn(model, ctx.data, cfg.bn_batches)
        if epochs_per_step:
            _finetune(model, ctx, cfg, epochs_per_step)
            if ctx.data is not None and getattr(ctx.data, "val", None) is not None:
                from ..train import evaluate

                step_info["val_top1_sample"] = evaluate(model, ctx.data.val, max_batches=10)["top1"]
        history.append(step_info)
    n_bn = max((h.get("bn_recalibrated", 0) for h in history), default=0)
    if n_bn:
        notes.append(f"re-estimated the statistics of {n_bn} BatchNorm layer(s) on {cfg.bn_batches} training batches "
                     "after each pruning step (the next layers' inputs changed)")
    if getattr(crit, "fallback_groups", None):
        notes.append(f"bn importance fell back to L1 for {len(crit.fallback_groups)} group(s) without a norm layer")
    if getattr(crit, "pseudo_labels", False):
        notes.append("taylor importance used the model's own predictions as targets (unlabelled data)")
    final_macs = macs_of(model, example)
    ctx.details.update({
        "granularity": "channel",
        "importance": cfg.importance,
        "ranking": "global" if cfg.global_ranking else "per-layer",
        "ratio": ratio,
        "schedule": cfg.schedule,
        "steps": history,
        "macs_before": base_macs,
        "macs_after": final_macs,
        "macs_kept": final_macs / base_macs if base_macs else None,
        "layers": [{k: v for k, v in r.items() if k != "removed"} for r in rows],
        "notes": ctx.details.get("notes", []) + notes,
    })
    model.eval()
    return model


def _finetune(model: nn.Module, ctx: Context, cfg, epochs: float, on_step=()) -> None:
    if ctx.data is None:
        raise DataError("fine-tuning needs training data", hint="pass data=... or set finetune_epochs=0")
    from ..train import fit

    loss_fn = None
    if ctx.teacher is not None:
        from ..distillation.losses import kd_loss_fn

        loss_fn = kd_loss_fn(ctx.teacher)
    fit(model, ctx.data, epochs=epochs, lr=cfg.lr, max_batches=cfg.max_batches, loss_fn=loss_fn, on_step=list(on_step), seed=ctx.seed,
        progress=ctx.progress)
