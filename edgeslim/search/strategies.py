"""Search strategies: a fast sensitivity-guided greedy pass, then Optuna (TPE or NSGA-II).

The greedy pass walks the space's prune ratios upwards with a cheap evaluation of each: prune with
the sensitivity allocation, a short fine-tune (``PROBE_BATCHES`` batches, when the space allows
fine-tuning at all), quantize if the space allows, score a few validation batches in PyTorch. A
pruned network scored before any fine-tuning says little about what it reaches after it, while a
few dozen steps already recover most of the gap, so the probe judges a ratio by that. The pass
stops at the first ratio clearly out of reach and *enqueues* full policies in the Optuna study:
int8 alone first (cheap, and a feasible anchor on disk early), then, in the narrowest format with
the longest fine-tuning, the two largest ratios whose probes already clear the SLA, the smaller
first (under a tight SLA the likeliest strong feasible policies), then the narrowest format alone
(4-bit weights: AdaRound, about 2x smaller again at the same int8 kernels' speed), then in that
format the most aggressive ratio in reach, the next one up, and the next one down, so the first
real trials are good ones and TPE / NSGA-II learn from them. A second walk does the same over the
fraction of residual blocks removed (depth pruning) and enqueues the deepest cut in reach and the
one before it. Under a latency limit that walk times architectures instead (untrained: weights do not change
latency), and the first block ratio fast enough and the next one are queued first; when no block
ratio alone is fast enough, the deepest cut with the first prune ratio that is, and the next one.
Probes quantize to int8 (no AdaRound: cheap); a probe whose fine-tuning diverges scores 0 (out of
reach). With a ``deadline`` the walks stop where they are when it passes (what was found is queued).
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

from .scoring import named, value_text
from .space import FORMAT_NAMES, SearchSpace, bit_layers

PROBE_BATCHES = 24  # fine-tuning batches in a greedy probe
# points under the SLA at which a probed ratio still counts as within reach of the full fine-tuning
RECOVERY_POINTS = 3.0
RECOVERY_POINTS_NO_FT = 10.0  # when the probe could not fine-tune (the space has no fine-tuning)


def quick_accuracy(model, batches, metric: Any = "top1") -> float:
    """The PyTorch model's score in ``metric`` (a name, a callable or a Metric) on a few batches, through
    the runner the metric asks for (the metric seam, as every other score); 0 when it gives none."""
    from ..measure.profile import torch_score

    return torch_score(model, batches, metric=metric).value or 0.0


def greedy_seeds(model, space: SearchSpace, *, sla: float, batches: list, run_proxy: Callable[[dict], float],
                 log: Callable[[str], None] = print, fast_enough: Callable[[dict], bool] | None = None,
                 deadline: float | None = None, metric: str = "top1") -> list[dict]:
    """Policies to enqueue, best guesses first. ``run_proxy(params)`` returns the probe score of
    a policy on ``batches`` (``params['finetune_epochs']`` > 0 asks the probe to fine-tune briefly).
    ``fast_enough(params)`` (a latency limit) says whether a policy's architecture meets it.
    ``deadline`` (a ``time.monotonic()`` value): no probe starts that would end after it (as long
    as the longest probe so far). ``metric``: the name the log lines give the scores."""
    ratios = sorted(r for r in space.prune_ratio if r > 0)
    alloc = "sensitivity" if "sensitivity" in space.allocation else space.allocation[0]
    quant = "8" if 8 in space.bits else "float"  # what the probes simulate
    narrow = str(min((b for b in space.bits if b != "float"), default="float"))  # what the seeds deploy
    ep = max(space.finetune_epochs)
    distill = True in space.distill
    recovery = RECOVERY_POINTS if ep > 0 else RECOVERY_POINTS_NO_FT
    past, run_proxy, fast_enough = _timed(deadline, log, run_proxy, fast_enough)
    reach: list[float] = []
    clears: list[float] = []  # ratios whose probe already clears the SLA itself
    for r in ratios:
        if past():
            break
        params = {"prune_ratio": r, "allocation": alloc, "bits": quant, "finetune_epochs": 1 if ep > 0 else 0}
        acc = run_proxy(params)
        ok = acc >= sla - recovery
        log(f"greedy: prune {r:.2f} ({alloc}) {'int8' if quant == '8' else 'fp32'}"
            f"{f' after {PROBE_BATCHES} fine-tuning batches' if ep > 0 else ' without fine-tuning'}: "
            f"{named(metric, acc)} ({'within reach' if ok else 'out of reach'} of SLA {value_text(metric, sla)})")
        if not ok:
            break
        reach.append(r)
        if acc >= sla:
            clears.append(r)
    depth = _depth_ratios(model, space, sla=sla, quant=quant, narrow=narrow, ep=ep, alloc=alloc,
                          run_proxy=run_proxy, fast_enough=fast_enough, log=log, past=past, metric=metric)
    seeds: list[dict] = []

    def add(r, ft_epochs, bits, blocks=0.0):
        p = {"prune_ratio": r, "bits": bits, "finetune_epochs": ft_epochs}
        if len(space.block_ratio) > 1:
            p["block_ratio"] = blocks
        p.update(_first_last(space, model, bits))
        if r > 0 and len(space.allocation) > 1:
            p["allocation"] = alloc
        if ft_epochs > 0 and len(space.distill) > 1:
            p["distill"] = distill
        if len(space.lowrank) > 1:
            p["lowrank"] = False
        if p not in seeds:
            seeds.append(p)

    add(0.0, 0, quant)  # int8 alone: cheap, and the safe anchor
    for r in clears[-2:]:  # the likeliest strong feasible policies, the safer first (a probe is noisy),
        add(r, ep, narrow)  # before the narrow format alone, whose AdaRound on every full layer is slow
    add(0.0, 0, narrow)
    if reach:
        best = reach[-1]
        add(best, ep, narrow)
        above = [r for r in ratios if r > best]
        if above:  # one step more aggressive than the probe suggests: fine-tuning may carry it
            add(above[0], ep, narrow)
        if len(reach) > 1:
            add(reach[-2], ep, narrow)
    n_other = len(seeds)
    for b, r in depth:  # fewer blocks: fewer nodes, what makes small inputs fast
        add(r, ep, narrow, b)
    if fast_enough is not None:  # under a latency limit the depth seeds are the ones that can be feasible
        seeds = seeds[n_other:] + seeds[:n_other]
    return seeds


def _timed(deadline: float | None, log, *probes):
    """(past, *probes timed): ``past()`` is True (and says so once) when a probe as long as the
    longest so far would end after ``deadline``."""
    longest, said = [0.0], []

    def timed(f):
        def run(params):
            t = time.monotonic()
            try:
                return f(params)
            finally:
                longest[0] = max(longest[0], time.monotonic() - t)
        return None if f is None else run

    def past() -> bool:
        if deadline is None or time.monotonic() + longest[0] < deadline:
            return False
        if not said:
            said.append(True)
            log("greedy: out of time: the walk stops here; what it found is queued")
        return True

    return (past, *(timed(f) for f in probes))


def _depth_ratios(model, space: SearchSpace, *, sla, quant, narrow, ep, alloc, run_proxy, fast_enough,
                  log, past=lambda: False, metric: str = "top1") -> list[tuple[float, float]]:
    """(block ratio, prune ratio) pairs to seed, in queue order. Under a latency limit the question
    is how few blocks can go, and the architecture alone decides latency: the first ratio upwards
    whose untrained architecture is fast enough, then the next one. When even the deepest cut is too
    slow, channels go too: the deepest cut with the first prune ratio upwards that is fast enough, then
    the next one. Otherwise the deepest cut within reach of the SLA after a brief fine-tune, then the
    one before it."""
    blocks = sorted(b for b in space.block_ratio if b > 0)
    if fast_enough is not None:
        fmt = narrow if narrow == "float" else FORMAT_NAMES[narrow]

        def first_fast(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
            for i, (b, r) in enumerate(pairs):
                if past():
                    break
                params = {"block_ratio": b, "prune_ratio": r, "bits": narrow, "finetune_epochs": 0,
                          **({"allocation": alloc} if r > 0 else {}), **_first_last(space, model, narrow)}
                ok = fast_enough(params)
                log(f"greedy: drop blocks {b:.2f}{f' + prune {r:.2f} ({alloc})' if r > 0 else ''} in {fmt}: "
                    f"{'meets' if ok else 'misses'} the latency limit")
                if ok:
                    return pairs[i:i + 2]
            return []

        found = first_fast([(b, 0.0) for b in blocks])
        if not found and blocks:
            found = first_fast([(blocks[-1], r) for r in sorted(r for r in space.prune_ratio if r > 0)])
        return found
    reach: list[float] = []
    for b in blocks:
        if past():
            break
        acc = run_proxy({"block_ratio": b, "prune_ratio": 0.0, "bits": quant, "finetune_epochs": 1 if ep > 0 else 0})
        ok = acc >= sla - (RECOVERY_POINTS if ep > 0 else RECOVERY_POINTS_NO_FT)
        log(f"greedy: drop blocks {b:.2f} {'int8' if quant == '8' else 'fp32'}: {named(metric, acc)} "
            f"({'within reach' if ok else 'out of reach'} of SLA {value_text(metric, sla)})")
        if not ok:
            break
        reach.append(b)
    return [(b, 0.0) for b in reach[::-1][:2]]


def _first_last(space: SearchSpace, model, bits: str) -> dict:
    """First / last layers at 8 bits, the usual convention (when the space lets layers choose)."""
    if bits == "float" or len(space.bits) <= 1:
        return {}
    return {f"bits:{layer}": "8" if 8 in space.bits else bits for layer in bit_layers(space, model)}


def native_constraints() -> bool:
    """Optuna >= 5 takes constraints from ``trial.set_constraint``; older ones from a constraints_func."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def make_sampler(kind: str, *, seed: int, constraints: Callable, n_startup: int = 4, population: int = 8):
    import optuna

    kw = {} if native_constraints() else {"constraints_func": constraints}
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population, **kw)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, **kw)


def proxy_runner(model, space: SearchSpace, *, data, input_shape, batches, layer_ratios_for,
                 block_order: list[str] | None = None, metric: Any = "top1") -> Callable[[dict], float]:
    """Probe score of a policy in ``metric`` (prune, at most ``PROBE_BATCHES`` fine-tuning batches,
    quantize; PyTorch simulation) on ``batches``."""
    import dataclasses

    from ..train import TrainingDiverged
    from .recipe import run_steps
    from .space import build_steps

    probe_space = dataclasses.replace(space, finetune_batches=PROBE_BATCHES)

    def run(params: dict) -> float:
        steps = build_steps(params, probe_space, layer_ratios=layer_ratios_for(params), block_order=block_order)
        try:
            res = run_steps(copy.deepcopy(model), steps, data=data, input_shape=input_shape, progress=False)
        except TrainingDiverged:  # no usable model: out of reach
            return 0.0
        return quick_accuracy(res.model, batches, metric)

    return run


def first_batches(loader, n: int) -> list[Any]:
    out = []
    for i, (x, y) in enumerate(loader):
        if i >= n:
            break
        out.append((x, y))
    return out
