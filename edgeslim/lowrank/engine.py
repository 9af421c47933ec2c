"""The factorize engine: one driver for every low-rank method, talking only to its Decomposition.

    small = edgeslim.factorize(model, Tucker(target_macs=0.5), data=data)

Ranks come from exactly one of ``rank`` (fixed), ``energy``, ``target_macs`` / ``target_params``
(whole-model ratio result/original) or ``vbmf=True``; with none given, ``target_macs=0.5``.
Each factorized layer is then timed against the original in ONNX Runtime (one single-layer ONNX
file each, side by side in one process); a layer that is not faster stays as it was and the
details say so. When a target ratio was asked for, the remaining layers are re-ranked to still
meet it (up to three rounds).

With a target ratio, ``allocation="energy"`` (default) gives every layer the ranks that keep one
common fraction of its squared singular values (per channel mode for Tucker/CP), bisected until
the model meets the target: compressible layers give up more rank than flat ones, and no layer
goes below ``min_layer_ratio`` of its cost; ``"uniform"`` makes every layer keep the same fraction
of its cost. Ranks come from the spectra only (computed once per layer); each layer is then
decomposed once, at its chosen ranks. With ``data``, BatchNorm statistics are re-estimated after
factorizing (``bn_batches``), before any fine-tuning.
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UsageError
from ..core.registry import Context, register, run
from ..core.select import select_layers
from ..train.loop import recalibrate_bn
from .config import CP, SVD, Tucker, _LowRank
from .decomposition import Decomposition, Geometry, Ranks
from .rank import layer_cost

_ROUNDS = 3  # re-ranking rounds after layers fall back to the original; each one re-times only what changed


@dataclasses.dataclass
class _Job:
    """What every round of one factorize call reads: the layers, their shapes and costs, the rule."""

    dec: Decomposition
    config: _LowRank
    originals: dict[str, nn.Module]  # untouched copies: every round decomposes from these
    geo: dict[str, Geometry]
    base: dict[str, tuple[int, int]]  # (params, MACs) of each original layer
    rule: str
    value: Any
    total_macs: int
    idx: int = 1  # which cost a target ratio is on: 0 params, 1 MACs
    total: int = 0  # the model's cost in that unit
    target: float | None = None  # the model's cost to reach, when the rule is a target ratio


@dataclasses.dataclass
class _Outcome:
    """What the rounds decided, per layer name."""

    chosen: dict[str, Ranks] = dataclasses.field(default_factory=dict)
    reverted: dict[str, str] = dataclasses.field(default_factory=dict)  # layer -> why it stays original
    timings: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # ms original, factorized
    decomposed: dict[tuple, nn.Module] = dataclasses.field(default_factory=dict)  # (layer, ranks) -> module
    spectra: dict[str, tuple] = dataclasses.field(default_factory=dict)  # computed once per layer
    notes: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------- the model around the layers
def _input_shape(model: nn.Module, ctx: Context) -> tuple[int, ...]:
    shape = ctx.input_shape
    if shape is None and ctx.data is not None:
        shape = tuple(ctx.data.meta.input_shape)
    if shape is None:
        shape = getattr(model, "input_shape", None)
    if shape is None:
        raise UsageError("factorize needs the model's input shape to count MACs and time layers",
                         hint="pass input_shape=(C,H,W) or data=")
    shape = tuple(shape)
    return shape[-3:] if len(shape) == 4 else shape  # a batch dimension given by mistake is dropped


def _geometry(model: nn.Module, names: list[str], input_shape) -> dict[str, Geometry]:
    """Input/output shapes each selected layer sees on one example input."""
    mods = dict(model.named_modules())
    geo: dict[str, Geometry] = {}

    def hook(name):
        def fn(mod, inp, out):
            x = inp[0]
            hw = dict(in_hw=tuple(x.shape[2:]), out_hw=tuple(out.shape[2:])) if x.dim() == 4 else {}
            # a Linear on (batch, tokens, features) runs once per token: its MACs scale with them
            apps = max(1, out.numel() // (out.shape[0] * out.shape[-1])) if isinstance(mod, nn.Linear) else 1
            geo.setdefault(name, Geometry(tuple(x.shape), tuple(out.shape), apps=apps, **hw))  # first call only
        return fn

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise UsageError(f"the model cannot run on input shape {[1, *input_shape]}: {str(e).splitlines()[0]}",
                         hint="pass the model's input shape (C,H,W)") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return geo


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _in_channels(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def _skipped_row(name: str, layer: nn.Module, why: str) -> dict[str, Any]:
    return {"layer": name, "type": type(layer).__name__, "ranks": None, "params_before": None,
            "macs_before": None, "params_after": None, "macs_after": None,
            "latency_ms_before": None, "latency_ms_after": None, "kept": "original", "why": why}


def _triage(dec: Decomposition, selected, min_channels: int) -> tuple[list[dict], list[tuple[str, nn.Module]]]:
    """(rows of the layers left alone and why, the candidates to factorize)."""
    rows, candidates = [], []
    for name, layer in selected:
        why = dec.unsupported(layer)
        if why is None and _in_channels(layer) < min_channels:
            why = f"only {_in_channels(layer)} input channels (min_channels={min_channels})"
        if why:
            rows.append(_skipped_row(name, layer, why))
        else:
            candidates.append((name, layer))
    return rows, candidates


def _job(model: nn.Module, dec: Decomposition, config: _LowRank, candidates, input_shape) -> _Job:
    from ..measure import count_macs, count_params

    geo = _geometry(model, [n for n, _ in candidates], input_shape)
    candidates = [(n, m) for n, m in candidates if n in geo]  # a layer the forward pass never reached
    total_macs = count_macs(model, (1, *input_shape))[0]
    rule, value = config.rank_rule
    originals = {n: copy.deepcopy(m) for n, m in candidates}
    base = {n: _layer_cost(m, geo[n]) for n, m in candidates}
    job = _Job(dec, config, originals, geo, base, rule, value, total_macs, total=total_macs)
    if rule in ("target_macs", "target_params"):
        job.idx = 1 if rule == "target_macs" else 0
        job.total = total_macs if job.idx else count_params(model)
        job.target = value * job.total
    return job


def _layer_cost(layer: nn.Module, geo: Geometry) -> tuple[int, int]:
    p, m = layer_cost(layer, geo.in_hw, geo.out_hw)
    return p, m * geo.apps  # apps is 1 for a conv: only a Linear over tokens runs more than once


# ---------------------------------------------------------------------------- ranks
def _rule_ranks(job: _Job, name: str) -> Ranks:
    """Ranks of one layer under a per-layer rule (a fixed rank, an energy, VBMF)."""
    layer = job.originals[name]
    if job.rule == "rank":
        return job.dec.fixed_ranks(layer, job.value, name)
    if job.rule == "energy":
        return job.dec.energy_ranks(job.dec.spectra(layer), job.value)
    return job.dec.vbmf_ranks(layer)


def _at_least(a: Ranks, b: Ranks) -> Ranks:
    return tuple(max(x, y) for x, y in zip(a, b)) if isinstance(a, tuple) else max(a, b)


def _solve_ratio(job: _Job, active: list[str], spectra: dict[str, tuple]) -> dict[str, Ranks]:
    """Per-layer ranks meeting the model target, from one knob t bisected to the largest t that fits.

    - ``uniform``: t is the fraction of its own cost every layer keeps;
    - ``energy``: t is the fraction of squared singular values (of each mode's unfolding) every
      layer keeps, so layers with a concentrated spectrum give up more rank than flat ones.

    No layer goes below ``min_layer_ratio`` of its cost (a target out of reach is reported, not
    forced onto a few layers); a layer whose factorized form would not be smaller counts at its
    original cost.
    """
    dec, idx, floor = job.dec, job.idx, job.config.min_layer_ratio
    energy = job.config.allocation == "energy"
    metric = "params" if job.rule == "target_params" else "macs"
    fixed = job.total - sum(job.base[n][idx] for n in active)  # cost of everything not being factorized

    def at_ratio(n: str, t: float) -> Ranks:
        return dec.ratio_ranks(job.originals[n], t, job.geo[n], metric)

    floor_ranks = {n: at_ratio(n, floor) for n in active}
    if energy:
        for n in active:
            if n not in spectra:
                spectra[n] = dec.spectra(job.originals[n])

    def plan(t: float):
        if energy:
            ranks = {n: _at_least(dec.energy_ranks(spectra[n], t), floor_ranks[n]) for n in active}
        else:
            ranks = {n: at_ratio(n, t) for n in active}
        cost = fixed + sum(min(dec.cost(job.originals[n], ranks[n], job.geo[n])[idx], job.base[n][idx])
                           for n in active)
        return ranks, cost

    lo, hi = (0.0, 1.0) if energy else (floor, 1.0)
    best = floor_ranks if energy else plan(lo)[0]
    for _ in range(24):
        mid = (lo + hi) / 2
        ranks, cost = plan(mid)
        if cost <= job.target:
            lo, best = mid, ranks
        else:
            hi = mid
    return best


def _fmt_ranks(r) -> str | None:
    if r is None:
        return None
    return "x".join(str(v) for v in r) if isinstance(r, (tuple, list)) else str(r)


# ---------------------------------------------------------------------------- rounds: rank, decompose, time
def _layer_latency(orig: nn.Module, fact: nn.Module, geo: Geometry, config: _LowRank, tmp: Path,
                   tag: str) -> tuple[float, float]:
    """Median ms of the original and the factorized layer, each as its own file of the deploying
    runtime (ONNX: exported without a check, the layer is timed only), side by side."""
    import torch

    from .. import runtimes
    from ..measure import bench

    shape = (1, *geo.in_shape[1:])
    rt = runtimes.get(config.runtime)
    paths = []
    for kind, mod in (("orig", orig), ("fact", fact)):
        p = tmp / f"{tag}_{kind}{runtimes.suffix_of(config.runtime)}"
        if rt.name == "onnxruntime":
            runtimes.export_onnx(mod, p, input_shape=shape, dynamic_batch=False, verify=False)
        else:
            rt.export(mod, p, torch.randn(shape, generator=torch.Generator().manual_seed(0)))
        paths.append(p)
    a, b = bench(paths, shape, threads=config.threads, warmup=3, runs=config.latency_runs)
    return a["median_ms"], b["median_ms"]


def _try_layer(job: _Job, out: _Outcome, name: str, ranks: Ranks, seed: int, tmp: Path, tag: str) -> None:
    """Decompose one layer at ``ranks`` and keep it only if it is smaller and (when checked) faster."""
    cost = job.dec.cost(job.originals[name], ranks, job.geo[name])
    if cost[0] >= job.base[name][0] and cost[1] >= job.base[name][1]:
        out.reverted[name] = "factorized form is not smaller"
        return
    key = (name, ranks)
    if key not in out.decomposed:  # a layer whose ranks came back to an earlier round's is not redone
        out.decomposed[key] = job.dec.build(job.originals[name], ranks, name=name, seed=seed).eval()
    if job.config.check_latency:
        t0, t1 = _layer_latency(job.originals[name], out.decomposed[key], job.geo[name], job.config, tmp, tag)
        out.timings[name] = (t0, t1)
        if t0 / t1 < job.config.min_speedup:
            out.reverted[name] = f"not faster in {job.config.runtime} ({t1:.3f} ms vs {t0:.3f} ms)"


def _rounds(job: _Job, seed: int) -> _Outcome:
    """Rank, decompose and time the layers; with a target ratio, re-rank what is left after layers
    fall back to the original, so the model still meets it."""
    out = _Outcome()
    active = list(job.originals)
    with tempfile.TemporaryDirectory(prefix="edgeslim-lowrank-") as tmpdir:
        tmp = Path(tmpdir)
        for round_ in range(_ROUNDS):
            if job.target is not None:
                ranks = _solve_ratio(job, active, out.spectra)
            else:
                ranks = {n: _rule_ranks(job, n) for n in active}
            changed = [n for n in active if out.chosen.get(n) != ranks[n]]
            out.chosen.update(ranks)
            for n in changed:
                _try_layer(job, out, n, ranks[n], seed, tmp, f"r{round_}_{len(out.timings)}")
            active = [n for n in active if n not in out.reverted]
            if job.target is None or not changed or not any(n in out.reverted for n in changed):
                break
            out.notes.append(f"round {round_ + 1}: {sum(n in out.reverted for n in changed)} layer(s) kept "
                             "original; re-ranked the rest toward the target")
    return out


# ---------------------------------------------------------------------------- results
def _install(model: nn.Module, job: _Job, out: _Outcome) -> list[dict[str, Any]]:
    """Put the kept factorized layers into ``model``; one row of the per-layer table per candidate."""
    rows = []
    for name, orig in job.originals.items():
        base = job.base[name]
        row: dict[str, Any] = {"layer": name, "type": type(orig).__name__, "ranks": _fmt_ranks(out.chosen.get(name)),
                               "params_before": base[0], "macs_before": base[1], "params_after": None,
                               "macs_after": None, "latency_ms_before": None, "latency_ms_after": None}
        if name in out.reverted:
            row.update(params_after=base[0], macs_after=base[1], kept="original", why=out.reverted[name])
        else:
            r = out.chosen[name]
            _set(model, name, out.decomposed[(name, r)])
            p, m = job.dec.cost(orig, r, job.geo[name])
            row.update(params_after=p, macs_after=m, kept="factorized", why="")
        if name in out.timings:
            t0, t1 = out.timings[name]
            row.update(latency_ms_before=round(t0, 4), latency_ms_after=round(t1, 4))
        rows.append(row)
    return rows


def _summary(job: _Job, layers: list[dict], n_selected: int, n_fact: int, new_macs: int) -> list[str]:
    total, rule, value = job.total_macs, job.rule, job.value
    notes = [f"{job.config.kind}: factorized {n_fact} of {n_selected} selected layer(s) "
             f"(ranks by {rule}{'' if rule == 'vbmf' else '=' + str(value)}); "
             f"MACs {total:,} -> {new_macs:,} ({new_macs / max(total, 1):.3f}x)"]
    if job.target is not None and rule == "target_macs" and new_macs > value * total * 1.02:
        notes.append(f"target_macs={value} not reached ({new_macs / total:.3f}): "
                     "too few layers were factorizable or faster when factorized")
    not_faster = [r["layer"] for r in layers if "not faster" in str(r.get("why", ""))]
    if not_faster:
        notes.append(f"kept original because factorized form was not faster in ONNX Runtime: {', '.join(not_faster)}")
    return notes


def _after(model: nn.Module, config: _LowRank, ctx: Context) -> None:
    """BatchNorm re-estimation, then fine-tuning: only once some layer was factorized."""
    if ctx.data is not None and config.bn_batches:
        n_bn = recalibrate_bn(model, ctx.data, config.bn_batches)
        if n_bn:
            ctx.details.setdefault("notes", []).append(
                f"re-estimated the statistics of {n_bn} BatchNorm layer(s) on {config.bn_batches} training batches")
    if config.finetune_epochs:
        from ..train.finetune import FinetuneOptions, finetune

        if ctx.data is None:
            raise UsageError("finetune_epochs needs data", hint="pass data= (or --data)")
        finetune(model, ctx, FinetuneOptions(epochs=config.finetune_epochs, lr=config.lr or 0.01,
                                             distill=config.finetune_distill))
        ctx.details.setdefault("notes", []).append(
            f"fine-tuned {config.finetune_epochs} epoch(s) at lr {config.lr or 0.01}")


# ---------------------------------------------------------------------------- the handler
def _factorize(model: nn.Module, config: _LowRank, ctx: Context) -> nn.Module:
    model.eval()
    if config.finetune_epochs and config.finetune_distill and ctx.teacher is None:
        ctx.teacher = copy.deepcopy(model)  # distil from the model as it was before factorizing
    dec = config.decomposition()
    input_shape = _input_shape(model, ctx)
    selected = select_layers(model, types=(dec.layer_type,), include=config.include or None,
                             exclude=config.exclude or None)
    layers, candidates = _triage(dec, selected, config.min_channels)
    if not candidates:
        ctx.details.update(method=config.kind, layers=layers, notes=[f"{config.kind}: no layer to factorize"])
        return model
    job = _job(model, dec, config, candidates, input_shape)
    out = _rounds(job, ctx.seed)
    layers += _install(model, job, out)
    order = {n: i for i, (n, _) in enumerate(selected)}
    layers.sort(key=lambda r: order.get(r["layer"], 0))
    factorized = [r for r in layers if r["kept"] == "factorized"]
    new_macs = job.total_macs - sum(r["macs_before"] - r["macs_after"] for r in factorized)
    notes = _summary(job, layers, len(selected), len(factorized), new_macs)
    ctx.details.update(method=config.kind, rank_rule=job.rule, layers=layers,
                       notes=ctx.details.get("notes", []) + notes[:1] + out.notes + notes[1:],
                       macs_before=job.total_macs, macs_after=new_macs)
    if factorized:
        _after(model, config, ctx)
    return model


for _cls in (SVD, Tucker, CP):  # one handler for all: what differs is behind config.decomposition()
    register(_cls)(_factorize)


# ---------------------------------------------------------------------------- the verb
def factorize(model: nn.Module, config: _LowRank | None = None, data: Any = None, *, input_shape=None,
              inplace: bool = False, seed: int = 0, progress: bool = True) -> nn.Module:
    """Factorize the selected layers of ``model`` (a copy unless ``inplace``) and return it.

    ``input_shape`` (C, H, W) is taken from ``data`` when not given. What was done (per-layer table,
    timings, notes): ``core.registry.run(model, config, ctx)`` returns it with the model.
    """
    ctx = Context(data=data, input_shape=input_shape, seed=seed, progress=progress)
    return run(model, config or Tucker(), ctx, inplace=inplace, accepts=(SVD, Tucker, CP))[0]
