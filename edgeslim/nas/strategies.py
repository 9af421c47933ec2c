"""Search strategies over a Space: each proposes architectures to the engine's ``evaluate`` and
returns the history (every Candidate it got back, in evaluation order, cached answers included).

    random      uniform samples: the honest baseline every NAS result is compared to
    evolution   regularized (aging) evolution, Real et al. 2019
    nsga2       NSGA-II through Optuna: the Pareto front of (score up, latency down), the
                candidate's excess as Optuna's constraint value
    rl          REINFORCE (Williams 1992) with a factorized categorical policy
    darts       differentiable search of architecture logits on the supernet (``darts.py``)

    run(name, space, evaluate, budget, cfg, **darts_kwargs) -> list[Candidate]

Every strategy stops when ``budget.spent()`` (each answer goes through ``budget.count``, so cached
answers cost nothing), after ``cfg.patience`` cached answers in a row (the strategy keeps proposing
what it has seen), or once it has seen every architecture of a small space.
"""
from __future__ import annotations

import collections
import dataclasses
import random
from typing import Callable

import torch

from ..core.config import Config
from ..core.errors import UsageError
from .candidate import Budget, Candidate, Evaluate
from .darts import darts
from .space import Space


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyConfig(Config):
    """How every strategy searches; each reads its own fields.

    Common: ``seed`` (every strategy is deterministic given it and ``evaluate``), ``patience``
    (stop after that many cached answers in a row).
    evolution: ``population`` P (also NSGA-II's population size), ``sample_size`` S (tournament),
    ``mutation_prob`` (each choice redrawn with it; None: 1 / number of decisions).
    rl: ``rl_lr`` (Adam), ``rl_batch`` archs per update, ``baseline_decay`` (exponential moving
    average of the reward), ``entropy_weight`` (bonus in reward units), ``penalty``: an infeasible
    candidate's reward is ``score - penalty * 100 * excess`` (excess is relative: 0.1 = 10% over).
    darts: ``darts_steps``, ``darts_lr`` (Adam on alpha), temperature ``tau_start`` -> ``tau_end``
    (geometric), ``latency_weight`` (on the hinge relu(E[lat]/limit - 1)), ``free_latency_weight``
    (on E[lat] / E[lat of the largest] when there is no limit), ``darts_eval_every`` steps the argmax
    is evaluated, ``darts_samples`` more archs sampled from softmax(alpha) at the end.
    """

    kind = "nas_strategy"
    seed: int = 0
    patience: int = 50
    population: int = 20
    sample_size: int = 5
    mutation_prob: float | None = None
    rl_lr: float = 0.05
    rl_batch: int = 4
    baseline_decay: float = 0.9
    entropy_weight: float = 0.01
    penalty: float = 1.0
    darts_steps: int = 300
    darts_lr: float = 0.05
    tau_start: float = 5.0
    tau_end: float = 0.5
    latency_weight: float = 1.0
    free_latency_weight: float = 0.05
    darts_eval_every: int = 50
    darts_samples: int = 3

    def validate(self) -> None:
        ints = {"patience": 1, "population": 2, "sample_size": 1, "rl_batch": 1, "darts_steps": 1,
                "darts_eval_every": 1, "darts_samples": 0}
        for name, low in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise UsageError(f"nas strategy option {name} must be an integer >= {low}, got {v!r}")
        if self.sample_size > self.population:
            raise UsageError(f"nas strategy option sample_size ({self.sample_size}) exceeds population "
                             f"({self.population})")
        for name in ("rl_lr", "darts_lr", "tau_end"):
            if not _number(getattr(self, name)) or not getattr(self, name) > 0:
                raise UsageError(f"nas strategy option {name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("entropy_weight", "penalty", "latency_weight", "free_latency_weight"):
            if not _number(getattr(self, name)) or getattr(self, name) < 0:
                raise UsageError(f"nas strategy option {name} must be a number >= 0, got {getattr(self, name)!r}")
        if not _number(self.baseline_decay) or not 0 <= self.baseline_decay < 1:
            raise UsageError(f"nas strategy option baseline_decay must be in [0, 1), got {self.baseline_decay!r}")
        if not _number(self.tau_start) or self.tau_start < self.tau_end:
            raise UsageError(f"nas strategy option tau_start ({self.tau_start!r}) must be a number >= tau_end "
                             f"({self.tau_end})")
        if self.mutation_prob is not None and (not _number(self.mutation_prob) or not 0 < self.mutation_prob <= 1):
            raise UsageError(f"nas strategy option mutation_prob must be in (0, 1] or null, got {self.mutation_prob!r}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def arch_key(arch: dict) -> tuple:
    return tuple(sorted(arch.items()))


class Tracker:
    """What every strategy shares: ask ``evaluate``, count the answer, keep the history, and know
    when to stop (budget spent, ``patience`` cached answers in a row, every arch of the space seen)."""

    def __init__(self, space: Space, evaluate: Evaluate, budget: Budget, cfg: StrategyConfig, strategy: str):
        self.evaluate, self.budget, self.patience, self.strategy = evaluate, budget, cfg.patience, strategy
        self.size = space.size()
        self.history: list[Candidate] = []
        self.seen: set[tuple] = set()
        self.streak = 0  # cached answers in a row

    def done(self) -> bool:
        return self.budget.spent() or self.streak >= self.patience or len(self.seen) >= self.size

    def __call__(self, arch: dict) -> Candidate:
        c = self.budget.count(self.evaluate(arch))
        if not c.strategy:
            c = dataclasses.replace(c, strategy=self.strategy)
        self.history.append(c)
        self.seen.add(arch_key(arch))
        self.streak = self.streak + 1 if c.cached else 0
        return c


# -- random and evolution -----------------------------------------------------------------------------
def random_search(space: Space, evaluate: Evaluate, budget: Budget, cfg: StrategyConfig) -> list[Candidate]:
    """Uniform samples until the budget is spent."""
    rng, ask = random.Random(cfg.seed), Tracker(space, evaluate, budget, cfg, "random")
    while not ask.done():
        ask(space.sample(rng))
    return ask.history


def evolution(space: Space, evaluate: Evaluate, budget: Budget, cfg: StrategyConfig) -> list[Candidate]:
    """Regularized evolution: a population of ``population`` random archs; each step the best
    (Candidate.key) of ``sample_size`` drawn from it is mutated, the child joins, the oldest leaves."""
    rng, ask = random.Random(cfg.seed), Tracker(space, evaluate, budget, cfg, "evolution")
    pop: collections.deque[Candidate] = collections.deque()
    while not ask.done() and len(pop) < cfg.population:
        pop.append(ask(space.sample(rng)))
    while not ask.done():
        parent = min(rng.sample(list(pop), min(cfg.sample_size, len(pop))), key=Candidate.key)
        pop.append(ask(space.mutate(parent.arch, rng, cfg.mutation_prob)))
        pop.popleft()
    return ask.history


# -- NSGA-II --------------------------------------------------------------------------------------------
def _violation(c: Candidate) -> float:
    """Optuna's constraint value: > 0 is infeasible."""
    return 0.0 if c.feasible else max(float(c.excess), 1e-9)


def nsga2(space: Space, evaluate: Evaluate, budget: Budget, cfg: StrategyConfig) -> list[Candidate]:
    """NSGA-II (Optuna's sampler, an in-memory study, ask/tell) on (score maximized, latency minimized)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    native = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5; older ones take a constraints_func
    kw = {} if native else {"constraints_func": lambda t: (t.user_attrs["violation"],)}
    sampler = optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=cfg.population, **kw)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    ask, dec = Tracker(space, evaluate, budget, cfg, "nsga2"), space.decisions()
    while not ask.done():
        trial = study.ask()
        c = ask({n: trial.suggest_categorical(n, list(choices)) for n, choices in dec})
        if native:
            trial.set_constraint("excess", _violation(c))
        else:
            trial.set_user_attr("violation", _violation(c))
        study.tell(trial, [float(c.score), float(c.latency_ms)])
    return ask.history


def dominates(a: Candidate, b: Candidate) -> bool:
    return a.score >= b.score and a.latency_ms <= b.latency_ms and (a.score > b.score or a.latency_ms < b.latency_ms)


def pareto(history: list[Candidate]) -> list[Candidate]:
    """The non-dominated candidates on (score up, latency down) among the feasible ones (among all when
    none is feasible), one per arch, fastest first."""
    unique: dict[tuple, Candidate] = {}
    for c in history:
        unique.setdefault(arch_key(c.arch), c)
    pool = [c for c in unique.values() if c.feasible] or list(unique.values())
    front = [c for c in pool if not any(dominates(o, c) for o in pool)]
    return sorted(front, key=lambda c: (c.latency_ms, -c.score))


# -- REINFORCE ------------------------------------------------------------------------------------------
class Policy:
    """A factorized categorical distribution over a space's decisions: one logits vector each."""

    def __init__(self, space: Space, device: str | torch.device = "cpu"):
        self.decisions = space.decisions()
        self.logits = {n: torch.zeros(len(c), device=device, requires_grad=True) for n, c in self.decisions}

    def probs(self) -> dict[str, torch.Tensor]:
        return {n: l.detach().softmax(-1) for n, l in self.logits.items()}

    def sample(self, gen: torch.Generator) -> tuple[dict, dict[str, int]]:
        """(arch, the choice index of each decision)."""
        idx = {n: int(torch.multinomial(p, 1, generator=gen)) for n, p in self.probs().items()}
        return {n: c[idx[n]] for n, c in self.decisions}, idx

    def log_prob(self, idx: dict[str, int]) -> torch.Tensor:
        return sum(self.logits[n].log_softmax(-1)[i] for n, i in idx.items())

    def entropy(self) -> torch.Tensor:
        return sum(-(l.softmax(-1) * l.log_softmax(-1)).sum() for l in self.logits.values())

    def argmax(self) -> dict:
        return {n: c[int(self.logits[n].argmax())] for n, c in self.decisions}


def reward(c: Candidate, penalty: float) -> float:
    """The score when feasible; less ``penalty`` points per percent over the limits when not."""
    return float(c.score) if c.feasible else float(c.score) - penalty * 100.0 * float(c.excess)


def rl(space: Space, evaluate: Evaluate, budget: Budget, cfg: StrategyConfig, *,
       policy: Policy | None = None) -> list[Candidate]:
    """REINFORCE: ``rl_batch`` archs sampled per update, advantage = reward - moving-average baseline
    (the first batch's mean starts it), plus an entropy bonus; ``policy`` (optional) is the caller's,
    updated in place."""
    pol = policy or Policy(space)
    opt = torch.optim.Adam(list(pol.logits.values()), lr=cfg.rl_lr) if pol.logits else None
    gen = torch.Generator().manual_seed(cfg.seed)
    ask, baseline = Tracker(space, evaluate, budget, cfg, "rl"), None
    while not ask.done():
        batch = []
        while len(batch) < cfg.rl_batch and not ask.done():
            arch, idx = pol.sample(gen)
            batch.append((idx, reward(ask(arch), cfg.penalty)))
        mean = sum(r for _, r in batch) / len(batch)
        b = mean if baseline is None else baseline
        if opt is not None:
            loss = -sum((r - b) * pol.log_prob(idx) for idx, r in batch) / len(batch) \
                - cfg.entropy_weight * pol.entropy()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        baseline = mean if baseline is None else cfg.baseline_decay * baseline + (1 - cfg.baseline_decay) * mean
    return ask.history


# -- the registry -----------------------------------------------------------------------------------------
STRATEGIES: dict[str, Callable[..., list[Candidate]]] = {
    "random": random_search, "evolution": evolution, "nsga2": nsga2, "rl": rl, "darts": darts}
DARTS_KWARGS = ("supernet", "batches", "table", "limit_ms", "loss_fn", "alpha", "log")


def run(name: str, space: Space, evaluate: Evaluate, budget: Budget, cfg: StrategyConfig | None = None,
        **darts_kwargs) -> list[Candidate]:
    """The strategy ``name``'s history. ``darts_kwargs`` (supernet, batches, table, limit_ms, loss_fn,
    alpha, log) are the differentiable search's; the other strategies ignore them."""
    if name not in STRATEGIES:
        raise UsageError(f"unknown NAS strategy {name!r}: one of {', '.join(STRATEGIES)}")
    unknown = sorted(set(darts_kwargs) - set(DARTS_KWARGS))
    if unknown:
        raise UsageError(f"unknown NAS strategy argument(s) {', '.join(unknown)}: one of {', '.join(DARTS_KWARGS)}")
    cfg = cfg if cfg is not None else StrategyConfig()
    if name != "darts":
        return STRATEGIES[name](space, evaluate, budget, cfg)
    missing = [k for k in ("supernet", "batches", "table") if darts_kwargs.get(k) is None]
    if missing:
        raise UsageError(f"the darts strategy needs {', '.join(missing)} (a trained supernet, validation "
                         "batches (x, y), a latency table)")
    return darts(space, evaluate, budget, cfg, **darts_kwargs)
