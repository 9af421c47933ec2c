"""Low-rank decomposition: SVD for Linear, Tucker-2 and CP for Conv2d.

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

from ..core.config import Config
from ..core.errors import UsageError
from ..core.registry import Context, apply, register
from ..core.select import select_layers
from ..train.loop import recalibrate_bn
from . import cp as _cp
from . import rank as _rank
from . import svd as _svd
from . import tucker as _tucker
from .cp import cp_conv
from .svd import svd_linear
from .tucker import tucker_conv

__all__ = ["CP", "SVD", "Tucker", "cp_conv", "factorize", "factorize_with_details", "recalibrate_bn", "svd_linear",
           "tucker_conv"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _LowRank(Config):
    rank: int | None = None  # fixed rank for every selected layer (Tucker: both channel modes)
    energy: float | None = None  # keep this fraction of the squared singular values, 0 < e <= 1
    target_macs: float | None = None  # whole-model MACs ratio result/original, e.g. 0.5 = 2x fewer
    target_params: float | None = None  # whole-model params ratio result/original
    vbmf: bool = False  # estimate ranks by empirical variational Bayesian matrix factorization
    include: tuple[str, ...] = ()  # layer-name regexes (default: every supported layer)
    exclude: tuple[str, ...] = ()
    min_channels: int = 8  # skip layers with fewer input channels (the stem conv: nothing to gain)
    min_layer_ratio: float = 0.1  # with a target ratio, no layer keeps less than this fraction of its cost
    allocation: str = "energy"  # with a target ratio: "energy" (one kept-energy fraction for all layers) or "uniform"
    check_latency: bool = True  # keep a factorized layer only if it is faster in ONNX Runtime
    min_speedup: float = 1.0  # ... by at least this factor
    threads: int = 2
    latency_runs: int = 20
    bn_batches: int = 50  # with data: re-estimate BatchNorm statistics on this many batches after factorizing
    finetune_epochs: float = 0
    lr: float | None = None
    finetune_distill: bool = False  # fine-tune with KD from the original model

    def validate(self) -> None:
        chosen = [k for k in ("rank", "energy", "target_macs", "target_params") if getattr(self, k) is not None]
        chosen += ["vbmf"] if self.vbmf else []
        if len(chosen) > 1:
            raise UsageError(f"give one way to choose ranks, not {' and '.join(chosen)}",
                             hint="rank=, energy=, target_macs=, target_params= or vbmf=True")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise UsageError(f"rank must be a positive integer, got {self.rank!r}",
                             hint="a rank of 0 would remove the layer; use 1 or more")
        if self.energy is not None and not (0 < self.energy <= 1):
            raise UsageError(f"energy must be in (0, 1], got {self.energy!r}")
        for k in ("target_macs", "target_params"):
            v = getattr(self, k)
            if v is not None and not (0 < v < 1):
                raise UsageError(f"{k} must be a ratio in (0, 1) (0.5 = half the original), got {v!r}")
        if self.allocation not in ("energy", "uniform"):
            raise UsageError(f"allocation must be 'energy' or 'uniform', got {self.allocation!r}",
                             hint="energy: layers with a concentrated spectrum give up more rank; "
                                  "uniform: every layer keeps the same fraction of its cost")
        if not 0 < self.min_layer_ratio <= 1:
            raise UsageError(f"min_layer_ratio must be in (0, 1], got {self.min_layer_ratio!r}")
        if self.min_speedup <= 0 or self.threads < 1 or self.latency_runs < 1:
            raise UsageError("min_speedup must be > 0, threads and latency_runs >= 1")
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) or self.bn_batches < 0:
            raise UsageError(f"bn_batches must be an integer >= 0, got {self.bn_batches!r}")
        if self.finetune_epochs < 0:
            raise UsageError("finetune_epochs must be >= 0")

    @property
    def rank_rule(self) -> tuple[str, Any]:
        for k in ("rank", "energy", "target_macs", "target_params"):
            if getattr(self, k) is not None:
                return k, getattr(self, k)
        if self.vbmf:
            return "vbmf", True
        return "target_macs", 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class SVD(_LowRank):
    """Truncated SVD: each Linear becomes two Linears."""

    kind = "svd"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tucker(_LowRank):
    """Tucker-2: each Conv2d becomes 1x1 -> kxk core -> 1x1."""

    kind = "tucker"
    n_iter_max: int = 2  # HOOI iterations after the HOSVD start


@dataclasses.dataclass(frozen=True, kw_only=True)
class CP(_LowRank):
    """CP: each Conv2d becomes four thin convolutions."""

    kind = "cp"
    n_iter_max: int = 25  # ALS iterations


# ---------------------------------------------------------------------------- per-method plumbing
def _supported(method: str, layer: nn.Module) -> str | None:
    if method == "svd":
        return None if type(layer) is nn.Linear else "not a Linear"
    return (_tucker if method == "tucker" else _cp).supported(layer)


def _ranks(method: str, layer: nn.Module, rule: str, value: Any, geo: dict, name: str, ratio: float | None = None):
    """Ranks for one layer: an int (SVD, CP) or (r_out, r_in) (Tucker)."""
    metric = "params" if rule == "target_params" else "macs"
    if method == "svd":
        if rule == "rank":
            _svd.check_rank(value, _svd.max_rank(layer), name, "min(in_features, out_features)")
            return value
        if rule == "energy":
            return _rank.energy_rank(_svd.singular_values(layer).numpy(), value)
        if rule == "vbmf":
            return _rank.vbmf_rank(layer.weight.detach().double().numpy())
        return _rank.svd_rank_for_ratio(layer, ratio, metric)
    if method == "tucker":
        if rule == "rank":
            _svd.check_rank(value, layer.out_channels, f"{name} (output mode)", "out_channels")
            _svd.check_rank(value, layer.in_channels, f"{name} (input mode)", "in_channels")
            return (value, value)
        if rule == "energy":
            return (_rank.energy_rank(_rank.unfold_spectrum(layer.weight, 0), value),
                    _rank.energy_rank(_rank.unfold_spectrum(layer.weight, 1), value))
        if rule == "vbmf":
            return _rank.vbmf_ranks_conv(layer.weight)
        return _rank.tucker_ranks_for_ratio(layer, ratio, geo["in_hw"], geo["out_hw"], metric)
    # cp
    if rule == "rank":
        _svd.check_rank(value, _cp.max_rank(layer), name, "the product of the kernel's dimensions except the largest")
        return value
    if rule == "energy":
        return max(_rank.energy_rank(_rank.unfold_spectrum(layer.weight, m), value) for m in (0, 1))
    if rule == "vbmf":
        return max(_rank.vbmf_ranks_conv(layer.weight))
    return _rank.cp_rank_for_ratio(layer, ratio, geo["in_hw"], geo["out_hw"], metric)


def _cost(method: str, layer: nn.Module, ranks, geo: dict) -> tuple[int, int]:
    """(params, MACs) of the factorized layer, MACs for the layer's real input (tokens for Linear)."""
    if method == "svd":
        p, m = _rank.svd_cost(layer, ranks)
        return p, m * geo["apps"]
    if method == "tucker":
        return _rank.tucker_cost(layer, *ranks, geo["in_hw"], geo["out_hw"])
    return _rank.cp_cost(layer, ranks, geo["in_hw"], geo["out_hw"])


def _base_cost(layer: nn.Module, geo: dict) -> tuple[int, int]:
    p, m = _rank.layer_cost(layer, geo["in_hw"], geo["out_hw"])
    return p, (m * geo["apps"] if isinstance(layer, nn.Linear) else m)


def _decompose(method: str, layer: nn.Module, ranks, name: str, config: _LowRank, seed: int) -> nn.Module:
    if method == "svd":
        return svd_linear(layer, ranks, name=name)
    if method == "tucker":
        return tucker_conv(layer, ranks, name=name, n_iter_max=config.n_iter_max)
    return cp_conv(layer, ranks, name=name, n_iter_max=config.n_iter_max, seed=seed)


def _geometry(model: nn.Module, names: list[str], input_shape) -> dict[str, dict]:
    """Input/output shapes each selected layer sees on one example input."""
    mods = dict(model.named_modules())
    geo: dict[str, dict] = {}
    handles = []

    def hook(name):
        def fn(mod, inp, out):
            x = inp[0]
            g = {"in_shape": tuple(x.shape), "out_shape": tuple(out.shape)}
            if x.dim() == 4:
                g["in_hw"], g["out_hw"] = tuple(x.shape[2:]), tuple(out.shape[2:])
            else:
                g["in_hw"] = g["out_hw"] = (1, 1)
            g["apps"] = max(1, out.numel() // (out.shape[0] * out.shape[-1])) if isinstance(mod, nn.Linear) else 1
            geo.setdefault(name, g)
        return fn

    for n in names:
        handles.append(mods[n].register_forward_hook(hook(n)))
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


def _layer_latency(orig: nn.Module, fact: nn.Module, geo: dict, config: _LowRank, tmp: Path, tag: str) -> tuple[float, float]:
    """Median ms of the original and the factorized layer, each as its own ONNX file, side by side."""
    from ..export import onnx as export_onnx
    from ..measure import bench

    shape = (1, *geo["in_shape"][1:])
    paths = []
    for kind, mod in (("orig", orig), ("fact", fact)):
        p = tmp / f"{tag}_{kind}.onnx"
        export_onnx(mod, p, input_shape=shape, dynamic_batch=False, verify=False)
        paths.append(p)
    a, b = bench(paths, shape, threads=config.threads, warmup=3, runs=config.latency_runs)
    return a["median_ms"], b["median_ms"]


# ---------------------------------------------------------------------------- the handler
def _factorize(model: nn.Module, config: _LowRank, ctx: Context) -> nn.Module:
    method = config.kind
    input_shape = ctx.input_shape
    if input_shape is None and ctx.data is not None:
        input_shape = tuple(ctx.data.meta.input_shape)
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise UsageError("factorize needs the model's input shape to count MACs and time layers",
                         hint="pass input_shape=(C,H,W) or data=")
    input_shape = tuple(input_shape)[-3:] if len(tuple(input_shape)) == 4 else tuple(input_shape)
    types = (nn.Linear,) if method == "svd" else (nn.Conv2d,)
    selected = select_layers(model, types=types, include=config.include or None, exclude=config.exclude or None)
    layers: list[dict] = []
    candidates: list[tuple[str, nn.Module]] = []
    for name, layer in selected:
        why = _supported(method, layer)
        cin = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
        if why is None and cin < config.min_channels:
            why = f"only {cin} input channels (min_channels={config.min_channels})"
        if why:
            layers.append({"layer": name, "type": type(layer).__name__, "ranks": None, "params_before": None,
                           "macs_before": None, "params_after": None, "macs_after": None,
                           "latency_ms_before": None, "latency_ms_after": None, "kept": "original", "why": why})
        else:
            candidates.append((name, layer))
    if not candidates:
        ctx.details.update(method=method, layers=layers, notes=[f"{method}: no layer to factorize"])
        return model

    from ..measure import count_macs, count_params

    geo = _geometry(model, [n for n, _ in candidates], input_shape)
    candidates = [(n, m) for n, m in candidates if n in geo]
    total_macs = count_macs(model, (1, *input_shape))[0]
    total_params = count_params(model)
    rule, value = config.rank_rule
    target, idx, total = None, 1, total_macs
    if rule in ("target_macs", "target_params"):
        idx = 1 if rule == "target_macs" else 0
        total = total_macs if idx else total_params
        target = value * total

    originals = {n: copy.deepcopy(m) for n, m in candidates}
    base = {n: _base_cost(m, geo[n]) for n, m in candidates}
    active = [n for n, _ in candidates]
    reverted: dict[str, dict] = {}
    chosen: dict[str, Any] = {}
    timings: dict[str, tuple] = {}
    decomposed: dict[tuple, nn.Module] = {}
    spectra: dict[str, tuple] = {}  # per-layer singular values, computed once (energy allocation)
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="edgeslim-lowrank-") as tmpdir:
        tmp = Path(tmpdir)
        for round_ in range(3):
            if target is not None:
                ranks = _solve_ratio(method, originals, active, geo, base, rule, idx, target, total,
                                     config.min_layer_ratio, config.allocation, spectra)
            else:
                ranks = {n: _ranks(method, originals[n], rule, value, geo[n], n) for n in active}
            changed = [n for n in active if chosen.get(n) != ranks[n]]
            chosen.update(ranks)
            for n in changed:
                cost = _cost(method, originals[n], ranks[n], geo[n])
                if cost[0] >= base[n][0] and cost[1] >= base[n][1]:
                    reverted[n] = {"why": "factorized form is not smaller"}
                    continue
                key = (n, ranks[n])
                if key not in decomposed:
                    decomposed[key] = _decompose(method, originals[n], ranks[n], n, config, ctx.seed).eval()
                if config.check_latency:
                    t0, t1 = _layer_latency(originals[n], decomposed[key], geo[n], config, tmp, f"r{round_}_{len(timings)}")
                    timings[n] = (t0, t1)
                    if t0 / t1 < config.min_speedup:
                        reverted[n] = {"why": f"not faster in ONNX Runtime ({t1:.3f} ms vs {t0:.3f} ms)"}
            active = [n for n in active if n not in reverted]
            if target is None or not changed or not any(n in reverted for n in changed):
                break
            notes.append(f"round {round_ + 1}: {sum(n in reverted for n in changed)} layer(s) kept original; "
                         "re-ranked the rest toward the target")

    for name, _ in candidates:
        row: dict[str, Any] = {"layer": name, "type": type(originals[name]).__name__,
                               "ranks": _fmt_ranks(chosen.get(name)),
                               "params_before": base[name][0], "macs_before": base[name][1],
                               "params_after": None, "macs_after": None,
                               "latency_ms_before": None, "latency_ms_after": None}
        if name in reverted:
            row.update(params_after=base[name][0], macs_after=base[name][1], kept="original", why=reverted[name]["why"])
        else:
            r = chosen[name]
            _set(model, name, decomposed[(name, r)])
            p, m = _cost(method, originals[name], r, geo[name])
            row.update(params_after=p, macs_after=m, kept="factorized", why="")
        if name in timings:
            row.update(latency_ms_before=round(timings[name][0], 4), latency_ms_after=round(timings[name][1], 4))
        layers.append(row)

    order = {n: i for i, (n, _) in enumerate(selected)}
    layers.sort(key=lambda r: order.get(r["layer"], 0))
    new_macs = total_macs - sum(r["macs_before"] - r["macs_after"] for r in layers if r["kept"] == "factorized")
    n_fact = sum(1 for r in layers if r.get("kept") == "factorized")
    notes.insert(0, f"{method}: factorized {n_fact} of {len(selected)} selected layer(s) "
                    f"(ranks by {rule}{'' if rule == 'vbmf' else '=' + str(value)}); "
                    f"MACs {total_macs:,} -> {new_macs:,} ({new_macs / max(total_macs, 1):.3f}x)")
    if target is not None and rule == "target_macs" and new_macs > value * total_macs * 1.02:
        notes.append(f"target_macs={value} not reached ({new_macs / total_macs:.3f}): "
                     "too few layers were factorizable or faster when factorized")
    not_faster = [r["layer"] for r in layers if "not faster" in str(r.get("why", ""))]
    if not_faster:
        notes.append(f"kept original because factorized form was not faster in ONNX Runtime: {', '.join(not_faster)}")
    ctx.details.update(method=method, rank_rule=rule, layers=layers, notes=ctx.details.get("notes", []) + notes,
                       macs_before=total_macs, macs_after=new_macs)

    if ctx.data is not None and config.bn_batches and n_fact:
        n_bn = recalibrate_bn(model, ctx.data, config.bn_batches)
        if n_bn:
            ctx.details.setdefault("notes", []).append(
                f"re-estimated the statistics of {n_bn} BatchNorm layer(s) on {config.bn_batches} training batches")
    if config.finetune_epochs and n_fact:
        if ctx.data is None:
            raise UsageError("finetune_epochs needs data", hint="pass data= (or --data)")
        _finetune(model, config, ctx)
    return model


def _spectra(method: str, layer: nn.Module) -> tuple:
    if method == "svd":
        return (_svd.singular_values(layer).numpy(),)
    return tuple(_rank.unfold_spectrum(layer.weight, m) for m in (0, 1))


def _energy_ranks(method: str, spectra: tuple, e: float):
    r = [_rank.energy_rank(s, e) for s in spectra]
    return r[0] if method == "svd" else tuple(r) if method == "tucker" else max(r)


def _at_least(a, b):
    return tuple(max(x, y) for x, y in zip(a, b)) if isinstance(a, tuple) else max(a, b)


def _solve_ratio(method, originals, active, geo, base, rule, idx, target, total, floor,
                 allocation="uniform", spectra=None) -> dict[str, Any]:
    """Per-layer ranks meeting the model target, from one knob t bisected to the largest t that fits.

    - ``uniform``: t is the fraction of its own cost every layer keeps;
    - ``energy``: t is the fraction of squared singular values (of each mode's unfolding) every
      layer keeps, so layers with a concentrated spectrum give up more rank than flat ones.

    No layer goes below ``floor`` of its cost (a target out of reach is reported, not forced onto
    a few layers); a layer whose factorized form would not be smaller counts at its original cost.
    """
    fixed = total - sum(base[n][idx] for n in active)  # cost of everything not being factorized
    floor_ranks = {n: _ranks(method, originals[n], rule, None, geo[n], n, ratio=floor) for n in active}
    if allocation == "energy":
        spectra = {} if spectra is None else spectra
        for n in active:
            if n not in spectra:
                spectra[n] = _spectra(method, originals[n])

    def plan(t: float):
        if allocation == "energy":
            ranks = {n: _at_least(_energy_ranks(method, spectra[n], t), floor_ranks[n]) for n in active}
        else:
            ranks = {n: _ranks(method, originals[n], rule, None, geo[n], n, ratio=t) for n in active}
        cost = fixed + sum(min(_cost(method, originals[n], ranks[n], geo[n])[idx], base[n][idx]) for n in active)
        return ranks, cost

    lo, hi = (0.0, 1.0) if allocation == "energy" else (floor, 1.0)
    best = plan(lo)[0] if allocation == "uniform" else floor_ranks
    for _ in range(24):
        mid = (lo + hi) / 2
        ranks, cost = plan(mid)
        if cost <= target:
            lo, best = mid, ranks
        else:
            hi = mid
    return best


def _fmt_ranks(r) -> str | None:
    if r is None:
        return None
    return "x".join(str(v) for v in r) if isinstance(r, (tuple, list)) else str(r)


def _finetune(model: nn.Module, config: _LowRank, ctx: Context) -> None:
    from ..train import fit

    loss_fn = None
    if config.finetune_distill and ctx.teacher is not None:
        from ..distill.losses import kd_loss_fn

        loss_fn = kd_loss_fn(ctx.teacher)
    fit(model, ctx.data, epochs=config.finetune_epochs, lr=config.lr or 0.01, loss_fn=loss_fn,
        seed=ctx.seed, progress=ctx.progress)
    ctx.details.setdefault("notes", []).append(f"fine-tuned {config.finetune_epochs} epoch(s) at lr {config.lr or 0.01}")


for _cls in (SVD, Tucker, CP):
    register(_cls)(_factorize)


# ---------------------------------------------------------------------------- the verb
def factorize_with_details(model: nn.Module, config: _LowRank | None = None, data: Any = None, *,
                           input_shape=None, inplace: bool = False, seed: int = 0,
                           progress: bool = True) -> tuple[nn.Module, dict]:
    if not isinstance(model, nn.Module):
        raise UsageError(f"factorize expects a torch.nn.Module, got {type(model).__name__}")
    config = config or Tucker()
    if not isinstance(config, _LowRank):
        raise UsageError(f"factorize expects an SVD, Tucker or CP config, got {type(config).__name__}")
    original = model
    work = model if inplace else copy.deepcopy(model)
    work.eval()
    ctx = Context(data=data, teacher=copy.deepcopy(original).eval() if config.finetune_distill else None,
                  seed=seed, progress=progress)
    ctx.input_shape = tuple(input_shape) if input_shape is not None else None  # type: ignore[attr-defined]
    out = apply(work, config, ctx)
    return out, ctx.details


def factorize(model: nn.Module, config: _LowRank | None = None, data: Any = None, *, input_shape=None,
              inplace: bool = False, seed: int = 0, progress: bool = True) -> nn.Module:
    """Factorize the selected layers of ``model`` (a copy unless ``inplace``) and return it.

    ``input_shape`` (C, H, W) is taken from ``data`` when not given.
    """
    return factorize_with_details(model, config, data, input_shape=input_shape, inplace=inplace,
                                  seed=seed, progress=progress)[0]
