"""Search strategies: a fast sensitivity-guided greedy pass, then Optuna (TPE or NSGA-II).

The greedy pass walks the space's prune ratios upwards with the cheapest possible evaluation (no
fine-tuning: prune with the sensitivity allocation, quantize if the space allows, score a few
validation batches in PyTorch) and stops at the first ratio that is clearly out of reach even
allowing for what fine-tuning recovers. It then *enqueues* the most promising full policies in the
Optuna study, so the first real trials are good ones and TPE / NSGA-II learn from them.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from .space import SearchSpace, build_steps

# points that fine-tuning is assumed to win back when the greedy pass judges a ratio without it
RECOVERY_POINTS = 10.0


@torch.no_grad()
def quick_accuracy(model, batches) -> float:
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    return 100.0 * correct / max(1, total)


def greedy_seeds(model, space: SearchSpace, *, sla: float, batches: list, run_proxy: Callable[[dict], float],
                 log: Callable[[str], None] = print) -> list[dict]:
    """Policies to enqueue, best guesses first. ``run_proxy(params)`` returns the no-fine-tune
    accuracy of a policy on ``batches``."""
    ratios = sorted(r for r in space.prune_ratio if r > 0)
    alloc = "sensitivity" if "sensitivity" in space.allocation else space.allocation[0]
    quant = "8" if 8 in space.bits else "float"
    can_ft = max(space.finetune_epochs) > 0
    ep = max(space.finetune_epochs)
    distill = True in space.distill
    recovery = RECOVERY_POINTS if can_ft else 0.0
    best_r = 0.0
    for r in ratios:
        params = {"prune_ratio": r, "allocation": alloc, "bits": quant, "finetune_epochs": 0}
        acc = run_proxy(params)
        ok = acc >= sla - recovery
        log(f"greedy: prune {r:.2f} ({alloc}) {'int8' if quant == '8' else 'fp32'} without fine-tuning: "
            f"{acc:.2f}% ({'within reach' if ok else 'out of reach'} of SLA {sla:.2f}%)")
        if not ok:
            break
        best_r = r
    seeds = []

    from .space import bit_layers

    def add(r, ft_epochs):
        p = {"prune_ratio": r, "bits": quant, "finetune_epochs": ft_epochs}
        if quant == "8" and len(space.bits) > 1:
            p.update({f"bits:{layer}": "8" for layer in bit_layers(space, model)})
        if r > 0 and len(space.allocation) > 1:
            p["allocation"] = alloc
        if ft_epochs > 0 and len(space.distill) > 1:
            p["distill"] = distill
        if len(space.lowrank) > 1:
            p["lowrank"] = False
        if p not in seeds:
            seeds.append(p)

    if best_r > 0:
        add(best_r, ep if can_ft else 0)
        below = [r for r in ratios if r < best_r]
        if below:
            add(below[-1], ep if can_ft else 0)
    add(0.0, 0)  # quantization alone: the safe anchor
    return seeds


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


def proxy_runner(model, space: SearchSpace, *, data, input_shape, batches, layer_ratios_for) -> Callable[[dict], float]:
    """No-fine-tune accuracy of a policy (prune + quantize, PyTorch simulation) on ``batches``."""
    from .recipe import run_steps

    def run(params: dict) -> float:
        steps = build_steps(params, space, layer_ratios=layer_ratios_for(params))
        res = run_steps(copy.deepcopy(model), steps, data=data, input_shape=input_shape, progress=False)
        return quick_accuracy(res.model, batches)

    return run


def first_batches(loader, n: int) -> list[Any]:
    out = []
    for i, (x, y) in enumerate(loader):
        if i >= n:
            break
        out.append((x, y))
    return out
