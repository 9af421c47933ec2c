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
from ..graph import build_graph, excluded_modules, forward_problem, output_shape, unsafe_groups
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

    def untrained(self) -> "ChannelPrune":
        return self.replace(bn_batches=0, finetune_epochs=0.0)

    def split_training(self):
        # iterative / agp interleave pruning and training: their fine-tuning stays inside the step
        return split_finetune(self) if self.schedule == "oneshot" else (self, None)


def split_finetune(cfg):
    """(``cfg`` without its fine-tuning, that fine-tuning as a ``finetune`` or ``kd`` step) for a
    pruning config with finetune_epochs / lr / max_batches / distill."""
    if not cfg.finetune_epochs:
        return cfg, None
    from ..distillation import training_step

    step = training_step(cfg.finetune_epochs, lr=cfg.lr, max_batches=cfg.max_batches, distill=cfg.distill)
    return cfg.replace(finetune_epochs=0.0, lr=None, max_batches=None, distill=False), step


def finetune_options(cfg, epochs: float):
    """The one trainer's options for a pruning config's own fine-tuning (KD only when it distils)."""
    from ..train.finetune import FinetuneOptions

    return FinetuneOptions(epochs=epochs, lr=cfg.lr, max_batches=cfg.max_batches, distill=cfg.distill)


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class PassOptions:
    """How one pruning pass ranks and rounds: the keywords of ``prune_once`` besides ratio and scores."""

    global_ranking: bool = False
    round_to: int = 1
    exclude: Any = frozenset()  # layer names (or name -> why) whose output channels are kept
    layer_ratios: dict[str, float] | None = None  # group root -> ratio (overrides ``ratio``)
    max_layer_ratio: float = 0.9
    original: dict[str, int] | None = None  # group root -> channels before the first pass
    clamp: bool = False  # searches (MACs targets): never empty a layer, cap like global ranking does


def prune_once(model: nn.Module, example: torch.Tensor, *, ratio: float, importance: Importance,
               scores: dict[str, torch.Tensor] | None = None, batches: list | None = None,
               **options: Any) -> list[dict[str, Any]]:
    """Remove channels from ``model`` in place; returns one row per group. ``options``: the fields
    of ``PassOptions``.

    Ratios are relative to ``original`` channel counts (group root -> channels) when
    given, so repeated calls walk a schedule towards the final size.
    """
    opts = PassOptions(**options)
    graph = build_graph(model, example, exclude=opts.exclude)
    groups = graph.groups()
    prunable = [g for g in groups if g.prunable]
    if scores is None:
        importance.prepare(model, batches or [])
        scores = {}
        for g in prunable:
            try:
                scores[g.root] = importance.channel_scores(g)
            except IndexError as e:  # the dependency graph numbered a member past its width: leave it whole
                g.frozen = f"Torch-Pruning numbers its channels past a layer's width ({e})"
        prunable = [g for g in prunable if g.prunable]
    plan = _keep_plan(prunable, scores, ratio, importance, opts)
    return _remove_channels(graph, groups, plan, scores, opts)


def _keep_plan(prunable, scores, ratio: float, importance: Importance, opts: PassOptions) -> dict[str, int]:
    """Units to keep per group root."""
    layer_ratios, original = opts.layer_ratios or {}, opts.original or {}
    plan: dict[str, int] = {}
    pool = []
    for g in prunable:
        orig_units = original.get(g.root, g.size) // g.channel_groups
        r = layer_ratios.get(g.root)
        if r is None and opts.global_ranking:
            pool.append((g, orig_units))
            continue
        r = ratio if r is None else r
        keep = int(math.floor((1 - r) * orig_units + 0.5))
        if opts.clamp:
            keep = max(keep, 1, int(math.ceil((1 - opts.max_layer_ratio) * orig_units)))
        if keep < 1:
            raise UsageError(
                f"ratio {r} would remove every channel of layer {g.root!r} ({orig_units * g.channel_groups} channels)",
                hint=f"lower the ratio, give {g.root!r} its own ratio, or exclude it (--exclude '{re.escape(g.root)}')",
            )
        plan[g.root] = keep
    if pool:
        plan.update(_global_keep(pool, scores, ratio, importance, opts.max_layer_ratio))
    return plan


def _global_keep(pool, scores, ratio: float, importance: Importance, max_layer_ratio: float) -> dict[str, int]:
    """Global ranking: the least important units of all pooled groups go first, each group capped."""
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
    return keep


def _remove_channels(graph, groups, plan: dict[str, int], scores, opts: PassOptions) -> list[dict[str, Any]]:
    original = opts.original or {}
    rows = []
    for g in groups:
        before = g.size
        removed: list[int] = []
        if g.prunable and g.root in plan:
            keep_units = _round_keep(plan[g.root], g, opts.round_to)
            n = g.unit - keep_units
            if n > 0:
                s = _unit_scores(g, scores[g.root])
                drop = torch.argsort(s, stable=True)[:n].tolist()
                removed = g.expand(drop)
                graph.remove(g, removed)
        after = before if not g.prunable or g.root not in plan else _round_keep(plan[g.root], g, opts.round_to) * g.channel_groups
        after = min(after, before)
        rows.append({"layer": g.root, "channels": original.get(g.root, before), "kept": after,
                     "ratio": round(1 - after / max(1, original.get(g.root, before)), 4),
                     "note": g.frozen or "", "removed": removed})
    return rows


def _check_forward(model: nn.Module, example: torch.Tensor, ref_shape) -> None:
    problem = forward_problem(model, example, ref_shape)
    if problem is not None:
        raise ModelError(f"the pruned model no longer does what it did: {problem}",
                         hint="a layer edgeslim cannot see through changes channel counts; exclude it with --exclude")


def exclusions(model: nn.Module, example: torch.Tensor, patterns=(), types=(), ref_shape=None):
    """(layer name -> why its output channels are kept, the channel groups under those exclusions):
    the user's ``patterns`` / ``types`` and the groups whose removal a trial surgery on a copy shows
    to break the model."""
    excl = dict.fromkeys(excluded_modules(model, patterns, types), "")
    groups = build_graph(model, example, exclude=excl).groups()
    unsafe = unsafe_groups(model, example, excl, ref_shape, roots=[g.root for g in groups if g.prunable])
    for g in groups:
        g.frozen = g.frozen or unsafe.get(g.root)
    return {**excl, **unsafe}, groups


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
@dataclasses.dataclass
class _Setup:
    """What every pruning step of one call shares."""

    example: torch.Tensor
    ref_shape: Any
    crit: Importance
    batches: list
    exclude: dict[str, str]
    layer_ratios: dict[str, float]
    kw: dict  # prune_once options
    base_macs: int


def criterion(cfg, ctx: Context) -> tuple[Importance, list]:
    """The importance a pruning config names and its calibration batches (one DataError when it
    needs data and there is none)."""
    crit = get_importance(cfg.importance, seed=ctx.seed)
    batches = calibration_batches(ctx.data, cfg.calibration_batches) if crit.needs_data else []
    if crit.needs_data and not batches:
        raise DataError(f"importance {cfg.importance!r} needs calibration data", hint="pass data=... (--data D)")
    return crit, batches


def _setup(model: nn.Module, cfg: ChannelPrune, ctx: Context) -> _Setup:
    example = example_input(model, ctx)
    ref_shape = output_shape(model, example)
    crit, batches = criterion(cfg, ctx)
    exclude, groups = exclusions(model, example, cfg.exclude, cfg.exclude_types, ref_shape)
    roots = [g.root for g in groups if g.prunable]
    if not roots:
        broken = [g for g in groups if g.frozen and g.frozen.startswith("removing its channels breaks")]
        if broken:  # nothing the user excluded: the model itself allows no channel removal
            raise ModelError(f"no channel of this model can be removed without breaking it: layer {broken[0].root!r}: "
                             f"{broken[0].frozen}", hint="unstructured pruning (--granularity fine) or quantization "
                             "still apply")
        raise UsageError("no prunable channel group left", hint="exclude fewer layers")
    kw = dict(importance=crit, global_ranking=cfg.global_ranking, round_to=cfg.round_to, exclude=exclude,
              max_layer_ratio=cfg.max_layer_ratio, original={g.root: g.size for g in groups})
    return _Setup(example, ref_shape, crit, batches, exclude, _resolve_layer_ratios(cfg.layer_ratios, roots), kw,
                  macs_of(model, example))


def _macs_target(model: nn.Module, cfg: ChannelPrune, ctx: Context, st: _Setup, notes: list[str]) -> float:
    """The uniform ratio reaching ``target_macs`` (or 0 with per-layer ratios from a sensitivity scan,
    merged into ``st.layer_ratios``)."""
    if cfg.allocation == "sensitivity":
        from .sensitivity import allocate, analyze

        if ctx.data is None:
            raise DataError("sensitivity allocation needs labelled data", hint="pass data=... or use allocation='uniform'")
        curves = analyze(model, ctx.data, example_shape=tuple(st.example.shape), importance=cfg.importance,
                         exclude=cfg.exclude, exclude_types=cfg.exclude_types)
        st.layer_ratios = {**allocate(model, curves, cfg.target_macs, example=st.example, exclude=st.exclude,
                                      round_to=cfg.round_to, max_ratio=cfg.max_layer_ratio), **st.layer_ratios}
        ctx.details["sensitivity"] = curves["rows"]
        notes.append(f"per-layer ratios from a sensitivity scan, reaching <= {cfg.target_macs} of the MACs")
        return 0.0  # layers the allocation leaves out stay whole
    scores_model = copy.deepcopy(model)
    st.crit.prepare(scores_model, st.batches)
    g0 = build_graph(scores_model, st.example, exclude=st.exclude).groups()
    scores = {g.root: st.crit.channel_scores(g) for g in g0 if g.prunable}
    ratio = search_ratio(scores_model, st.example, cfg.target_macs,
                         prune_kwargs={**st.kw, "scores": scores, "layer_ratios": st.layer_ratios},
                         max_ratio=cfg.max_layer_ratio)
    notes.append(f"uniform ratio {ratio:.3f} found to keep <= {cfg.target_macs} of the MACs")
    return ratio


def _prune_steps(model: nn.Module, cfg: ChannelPrune, ctx: Context, st: _Setup, ratio: float):
    """The schedule's prune (-> BatchNorm re-estimate -> fine-tune) rounds -> (last rows, history)."""
    from ..train import recalibrate_bn, task_score
    from ..train.finetune import finetune

    fractions = step_fractions(cfg.schedule, cfg.steps)
    epochs_per_step = cfg.finetune_epochs / len(fractions) if cfg.finetune_epochs else 0
    rows, history, batches = [], [], st.batches
    for i, f in enumerate(fractions):
        step_ratios = {k: v * f for k, v in st.layer_ratios.items()}
        if st.crit.needs_data and i > 0:
            batches = calibration_batches(ctx.data, cfg.calibration_batches)
        rows = prune_once(model, st.example, ratio=ratio * f, batches=batches, layer_ratios=step_ratios,
                          clamp=cfg.target_macs is not None, **st.kw)
        _check_forward(model, st.example, st.ref_shape)
        step_info = {"step": i + 1, "fraction": round(f, 4), "macs": macs_of(model, st.example)}
        if cfg.bn_batches and ctx.data is not None:
            step_info["bn_recalibrated"] = recalibrate_bn(model, ctx.data, cfg.bn_batches)
        if epochs_per_step:
            finetune(model, ctx, finetune_options(cfg, epochs_per_step))
            if ctx.data is not None and getattr(ctx.data, "val", None) is not None:
                step_info["val_score_sample"] = task_score(model, ctx.data.val, max_batches=10)
        history.append(step_info)
    return rows, history


@register(ChannelPrune)
def _apply(model: nn.Module, cfg: ChannelPrune, ctx: Context) -> nn.Module:
    st = _setup(model, cfg, ctx)
    notes: list[str] = []
    ratio = cfg.ratio if cfg.target_macs is None else _macs_target(model, cfg, ctx, st, notes)
    if cfg.distill and ctx.teacher is None and cfg.finetune_epochs:
        ctx.teacher = copy.deepcopy(model)
        notes.append("fine-tuned with distillation from the unpruned model")
    rows, history = _prune_steps(model, cfg, ctx, st, ratio)
    n_bn = max((h.get("bn_recalibrated", 0) for h in history), default=0)
    if n_bn:
        notes.append(f"re-estimated the statistics of {n_bn} BatchNorm layer(s) on {cfg.bn_batches} training batches "
                     "after each pruning step (the next layers' inputs changed)")
    if getattr(st.crit, "fallback_groups", None):
        notes.append(f"bn importance fell back to L1 for {len(st.crit.fallback_groups)} group(s) without a norm layer")
    if getattr(st.crit, "pseudo_labels", False):
        notes.append("taylor importance used the model's own predictions as targets (unlabelled data)")
    final_macs = macs_of(model, st.example)
    ctx.details.update({
        "granularity": "channel",
        "importance": cfg.importance,
        "ranking": "global" if cfg.global_ranking else "per-layer",
        "ratio": ratio,
        "schedule": cfg.schedule,
        "steps": history,
        "macs_before": st.base_macs,
        "macs_after": final_macs,
        "macs_kept": final_macs / st.base_macs if st.base_macs else None,
        "layers": [{k: v for k, v in r.items() if k != "removed"} for r in rows],
        "notes": ctx.details.get("notes", []) + notes,
    })
    model.eval()
    return model
