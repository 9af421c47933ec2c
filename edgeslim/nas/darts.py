"""Differentiable architecture search over a trained supernet (ProxylessNAS / FBNetV2 style).

One logits vector ``alpha`` per decision. Each step draws a straight-through Gumbel-softmax sample per
decision (one-hot forward, softmax gradient), runs the supernet in soft mode on a validation batch and
updates only alpha:

    loss = loss_fn(supernet(x), y) + latency_weight * relu(E[latency] / limit_ms - 1)     (a limit)
    loss = loss_fn(supernet(x), y) + free_latency_weight * E[latency] / E[latency of the largest]

``E[latency]`` is ``table.expected(softmax(alpha))``: the softmax probabilities, not the hard samples,
so the latency gradient is smooth (they reach the table on the CPU, where a lookup table lives). The
hinge costs nothing once the expected latency is under the limit (accuracy alone decides there) and
grows with the relative overshoot. Without a limit a small weight on the latency relative to the
largest subnet's only breaks ties toward faster subnets.

The supernet's weights are frozen during the search (``requires_grad`` off, restored after). It runs
in train mode: its shared BatchNorm running statistics belong to no one subnet, so batch statistics
are the right ones; the running statistics it would update are saved and restored, so the supernet
leaves exactly as it came. Every ``darts_eval_every`` steps and at the end, the argmax subnet (and at
the end a few sampled from softmax(alpha)) goes to ``evaluate``, with the supernet restored, so the
history holds real scored candidates. The budget's evaluation count counts those calls; the search
stops when the budget is spent (deadline or evaluations) or after ``darts_steps`` steps.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Callable, Protocol

import torch
import torch.nn.functional as F

from ..core.errors import UsageError
from .candidate import Budget, Candidate, Evaluate
from .space import Space
from .supernet import Supernet

if TYPE_CHECKING:
    from .strategies import StrategyConfig


class ExpectedLatency(Protocol):
    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Differentiable expected latency (ms) under per-decision choice probabilities."""


def gumbel_hard(logits: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """``F.gumbel_softmax(logits, tau, hard=True)`` with the noise from ``gen`` (seeded, and the
    caller's global random state untouched): a one-hot forward with the softmax's gradient."""
    g = -torch.empty_like(logits).exponential_(generator=gen).log()
    soft = ((logits + g) / tau).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def argmax_arch(space: Space, alpha: dict[str, torch.Tensor]) -> dict:
    return {n: c[int(alpha[n].argmax())] for n, c in space.decisions()}


@contextlib.contextmanager
def searching(net: Supernet):
    """``net`` with frozen weights in train mode; on exit its weights' requires_grad, BatchNorm buffers,
    train/eval modes and chosen arch (or soft probabilities) are as before."""
    params = list(net.parameters())
    grads = [p.requires_grad for p in params]
    buffers = [(b, b.detach().clone()) for b in net.buffers()]
    modes = [(m, m.training) for m in net.modules()]
    arch, probs = net.arch, net.probs
    try:
        for p in params:
            p.requires_grad_(False)
        net.train()
        yield net
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in zip(params, grads):
            p.requires_grad_(g)
        for m, mode in modes:
            m.training = mode
        net.set_arch(arch)
        if probs is not None:
            net.set_soft(probs)


def _alpha(space: Space, alpha: dict | None, device: torch.device) -> dict[str, torch.Tensor]:
    dec = space.decisions()
    if alpha is None:
        return {n: torch.zeros(len(c), device=device, requires_grad=True) for n, c in dec}
    want = {n: len(c) for n, c in dec}
    got = {n: tuple(a.shape) for n, a in alpha.items()}
    if got != {n: (k,) for n, k in want.items()} or not all(a.is_leaf and a.requires_grad for a in alpha.values()):
        raise UsageError(f"darts alpha must hold one leaf logits vector (requires_grad) per decision {want}, got {got}")
    return alpha


def _latency_term(table: ExpectedLatency, space: Space, limit_ms: float | None,
                  cfg: "StrategyConfig") -> Callable[[dict], torch.Tensor]:
    """The latency part of the loss as a function of the softmax probabilities."""
    if limit_ms is not None:
        if not limit_ms > 0:
            raise UsageError(f"darts limit_ms must be a positive number of milliseconds, got {limit_ms!r}")
        return lambda probs: cfg.latency_weight * F.relu(table.expected(probs) / limit_ms - 1)
    big = {n: F.one_hot(torch.tensor(c.index(max(c))), len(c)).float() for n, c in space.decisions()}
    with torch.no_grad():
        scale = float(table.expected(big))
    if not scale > 0:
        raise UsageError(f"the latency table's expected latency of the largest subnet is {scale} ms; "
                         "darts needs a positive scale")
    return lambda probs: cfg.free_latency_weight * table.expected(probs) / scale


@dataclasses.dataclass
class _Search:
    """One search's state: what each step needs."""
    space: Space
    supernet: Supernet
    batches: list
    alpha: dict[str, torch.Tensor]
    opt: torch.optim.Optimizer
    gen: torch.Generator
    latency: Callable[[dict], torch.Tensor]
    loss_fn: Callable
    cfg: "StrategyConfig"
    device: torch.device

    def tau(self, step: int) -> float:
        c = self.cfg
        return c.tau_start * (c.tau_end / c.tau_start) ** (step / max(1, c.darts_steps - 1))

    def step(self, step: int) -> dict[str, float]:
        x, y = self.batches[step % len(self.batches)]
        x, y = x.to(self.device), y.to(self.device)
        tau = self.tau(step)
        hard = {n: gumbel_hard(a, tau, self.gen) for n, a in self.alpha.items()}
        soft = {n: a.softmax(-1).cpu() for n, a in self.alpha.items()}  # a lookup table lives on the CPU
        ce = self.loss_fn(self.supernet.set_soft(hard)(x), y)
        lat = self.latency(soft).to(ce)
        loss = ce + lat
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"tau": tau, "loss": loss.item(), "ce": ce.item(), "latency_term": lat.item()}

    def samples(self, n: int, skip: list[dict]) -> list[dict]:
        """Up to ``n`` distinct archs drawn from softmax(alpha), none of ``skip``."""
        out: list[dict] = []
        dec = self.space.decisions()
        for _ in range(10 * n):
            if len(out) >= n:
                break
            arch = {name: c[int(torch.multinomial(self.alpha[name].detach().softmax(-1), 1, generator=self.gen))]
                    for name, c in dec}
            if arch not in out and arch not in skip:
                out.append(arch)
        return out


def darts(space: Space, evaluate: Evaluate, budget: Budget, cfg: "StrategyConfig", *, supernet: Supernet,
          batches: list, table: ExpectedLatency, limit_ms: float | None = None, loss_fn: Callable = F.cross_entropy,
          alpha: dict[str, torch.Tensor] | None = None, log: Callable[[str], None] | None = None) -> list[Candidate]:
    """Gradient search of alpha on ``supernet`` over ``batches`` ((x, y) validation batches), the latency
    from ``table.expected``; ``alpha`` (one leaf logits vector per decision) starts the search from the
    caller's logits and is updated in place. Returns the evaluated candidates in evaluation order."""
    history: list[Candidate] = []

    def ask(arch: dict) -> None:
        if not budget.spent():
            c = budget.count(evaluate(arch))
            history.append(c if c.strategy else dataclasses.replace(c, strategy="darts"))

    if not space.decisions():
        ask({})
        return history
    if not batches:
        raise UsageError("darts needs at least one validation batch (x, y)")
    device = next(supernet.parameters()).device
    alpha = _alpha(space, alpha, device)
    s = _Search(space, supernet, list(batches), alpha, torch.optim.Adam(list(alpha.values()), lr=cfg.darts_lr),
                torch.Generator(device=device).manual_seed(cfg.seed), _latency_term(table, space, limit_ms, cfg),
                loss_fn, cfg, device)
    step, every, info = 0, cfg.darts_eval_every, None
    while step < cfg.darts_steps and not budget.spent():
        with searching(supernet):
            for _ in range(min(every, cfg.darts_steps - step)):
                if budget.spent():
                    break
                info = s.step(step)
                step += 1
        if log and info:
            log(f"darts step {step}/{cfg.darts_steps}: tau {info['tau']:.2f}, loss {info['loss']:.4f} "
                f"(task {info['ce']:.4f}, latency {info['latency_term']:.4f}), argmax {argmax_arch(space, alpha)}")
        if step < cfg.darts_steps and step % every == 0:
            ask(argmax_arch(space, alpha))
    final = argmax_arch(space, alpha)
    for arch in [final] + s.samples(cfg.darts_samples, [final]):
        ask(arch)
    return history
