"""Search strategies on synthetic landscapes (score and latency known functions of the arch), and the
differentiable search on a real tiny supernet with a fake latency table."""
import dataclasses
import itertools
import random
import statistics
import time

import pytest
import torch

from edgeslim.core.errors import UsageError
from edgeslim.nas import space as spaces
from edgeslim.nas.candidate import Budget, Candidate
from edgeslim.nas.darts import argmax_arch, darts, gumbel_hard, searching
from edgeslim.nas.strategies import (STRATEGIES, Policy, StrategyConfig, arch_key, dominates, pareto, reward, rl,
                                     run)
from edgeslim.nas.supernet import Supernet

STAGE = {"depth": [1, 2, 3], "width": [0.5, 0.75, 1.0], "expand": [3, 6], "kernel": [3, 5]}
BIG = spaces.from_dict({"type": "mobilenet", "stem": {"out": 16}, "head": None, "divisor": 4, "stages": [
    dict(channels=16, stride=1, **STAGE), dict(channels=32, stride=2, **STAGE), dict(channels=64, stride=2, **STAGE)]})
SMALL = spaces.from_dict({"type": "resnet", "stem": {}, "divisor": 4, "stages": [
    {"channels": 8, "stride": 1, "depth": [1, 2], "width": [0.5, 1.0]}]})
FIXED = spaces.from_dict({"type": "resnet", "stem": {}, "divisor": 4, "stages": [{"channels": 8, "stride": 1, "depth": [1]}]})
SEARCHES = ["random", "evolution", "nsga2", "rl"]


class Synthetic:
    """score = 50 + sum of gain * f^0.7 and latency = 1 + sum of cost * f over the decisions, f the
    choice's index in [0, 1]: bigger is better and slower; ``limit`` (a fraction of the largest
    latency) makes the big ones infeasible. Repeats come back cached, as the engine's do."""

    def __init__(self, space, limit: float | None = 0.45, seed: int = 1, delay: float = 0.0):
        r = random.Random(seed)
        self.space, self.dec, self.delay = space, space.decisions(), delay
        self.gain = {n: r.uniform(1, 5) for n, _ in self.dec}
        self.cost = {n: r.uniform(1, 5) for n, _ in self.dec}
        self.limit = None if limit is None else 1 + limit * sum(self.cost.values())
        self.cache, self.new, self.calls = {}, 0, []

    def measure(self, arch: dict) -> Candidate:
        f = {n: c.index(arch[n]) / (len(c) - 1) for n, c in self.dec}
        lat = 1 + sum(self.cost[n] * f[n] for n in f)
        excess = 0.0 if self.limit is None else max(0.0, lat / self.limit - 1)
        return Candidate(arch=dict(arch), score=50 + sum(self.gain[n] * f[n] ** 0.7 for n in f), latency_ms=lat,
                         params=0, feasible=excess == 0, excess=excess)

    def __call__(self, arch: dict) -> Candidate:
        assert set(arch) == {n for n, _ in self.dec}
        self.space.full(arch)  # refuses an unknown choice
        self.calls.append(dict(arch))
        k = arch_key(arch)
        if k in self.cache:
            return dataclasses.replace(self.cache[k], cached=True)
        time.sleep(self.delay)
        self.new += 1
        self.cache[k] = self.measure(arch)
        return self.cache[k]

    def optimum(self) -> float:
        names = [n for n, _ in self.dec]
        every = (self.measure(dict(zip(names, v))) for v in itertools.product(*[c for _, c in self.dec]))
        return max(c.score for c in every if c.feasible)


def best_feasible(history) -> float:
    return max((c.score for c in history if c.feasible), default=float("-inf"))


# -- budgets, caching, termination, determinism ------------------------------------------------------------
@pytest.mark.parametrize("name", SEARCHES)
def test_a_strategy_spends_exactly_its_evaluations(name):
    ev, budget = Synthetic(BIG), Budget(evaluations=30)
    history = run(name, BIG, ev, budget, StrategyConfig(seed=3, population=8, sample_size=3))
    assert budget.used == ev.new == 30 == sum(not c.cached for c in history)
    assert len(history) == len(ev.calls) and all(c.strategy == name for c in history)


@pytest.mark.parametrize("name", SEARCHES)
def test_a_strategy_stops_at_the_deadline(name):
    ev, start = Synthetic(BIG, delay=0.005), time.monotonic()
    history = run(name, BIG, ev, Budget(deadline=start + 0.3), StrategyConfig(population=4, sample_size=2))
    assert history and time.monotonic() - start < 2.0


@pytest.mark.parametrize("name", SEARCHES)
def test_cached_answers_do_not_count_and_a_small_space_ends(name):
    ev, budget = Synthetic(SMALL), Budget()  # no limit at all: the space's size or patience ends it
    history = run(name, SMALL, ev, budget, StrategyConfig(population=2, sample_size=2, patience=20))
    assert budget.used == ev.new == len({arch_key(c.arch) for c in history}) <= SMALL.size() == 4
    assert len(history) <= 4 + 20 + StrategyConfig().rl_batch
    if name in ("random", "evolution"):
        assert ev.new == 4  # these sample every arch of a 4-arch space long before 20 cached in a row


@pytest.mark.parametrize("name", SEARCHES)
def test_a_space_without_choices_is_one_evaluation(name):
    ev, budget = Synthetic(FIXED, limit=None), Budget()
    assert [c.arch for c in run(name, FIXED, ev, budget)] == [{}] and budget.used == 1


@pytest.mark.parametrize("name", SEARCHES)
def test_a_seed_fixes_the_search(name):
    cfg = StrategyConfig(seed=7, population=6, sample_size=3)
    a, b = Synthetic(BIG), Synthetic(BIG)
    run(name, BIG, a, Budget(evaluations=25), cfg)
    run(name, BIG, b, Budget(evaluations=25), cfg)
    c = Synthetic(BIG)
    run(name, BIG, c, Budget(evaluations=25), dataclasses.replace(cfg, seed=8))
    assert a.calls == b.calls and a.calls != c.calls


# -- search quality --------------------------------------------------------------------------------------------
def test_evolution_beats_random_search_at_the_same_budget():
    def mean_best(name):
        return statistics.mean(best_feasible(run(name, BIG, Synthetic(BIG), Budget(evaluations=150),
                                                 StrategyConfig(seed=s))) for s in range(4))

    evo, rand = mean_best("evolution"), mean_best("random")
    assert evo > rand + 0.5, (evo, rand)
    assert evo > Synthetic(BIG).optimum() - 3.0


def test_evolution_finds_the_optimum_of_a_small_space():
    ev = Synthetic(SMALL)
    assert best_feasible(run("evolution", SMALL, ev, Budget(evaluations=10), StrategyConfig(population=2,
                                                                                           sample_size=2))) == ev.optimum()


def test_nsga2_history_gives_a_non_dominated_feasible_front():
    ev = Synthetic(BIG)
    history = run("nsga2", BIG, ev, Budget(evaluations=80), StrategyConfig(population=10))
    front = pareto(history)
    assert front and all(c.feasible for c in front)
    assert not any(dominates(a, b) for a in front for b in front)
    for c in history:  # every feasible candidate is on the front or dominated by a member of it
        assert not c.feasible or any(arch_key(f.arch) == arch_key(c.arch) or dominates(f, c) for f in front)
    assert [c.latency_ms for c in front] == sorted(c.latency_ms for c in front)


def cand(score, lat, feasible=True, key=0, cached=False):
    return Candidate(arch={"k": key}, score=score, latency_ms=lat, params=0, feasible=feasible,
                     excess=0.0 if feasible else 0.5, cached=cached)


def test_pareto_prefers_feasible_ones_and_counts_an_arch_once():
    h = [cand(90, 5, key=1), cand(80, 2, key=2), cand(85, 6, key=3), cand(99, 1, False, key=4),
         cand(90, 5, key=1, cached=True)]
    assert [c.arch["k"] for c in pareto(h)] == [2, 1]
    assert [c.arch["k"] for c in pareto([cand(70, 3, False, key=5), cand(60, 4, False, key=6)])] == [5]


def test_rl_moves_the_policy_toward_the_better_choices():
    ev, policy = Synthetic(BIG, limit=None), Policy(BIG)  # no limit: the largest choice is the best
    before = {n: float(p[-1]) for n, p in policy.probs().items()}
    history = rl(BIG, ev, Budget(evaluations=120), StrategyConfig(seed=0, rl_lr=0.1), policy=policy)
    after = {n: float(p[-1]) for n, p in policy.probs().items()}
    assert sum(after[n] > before[n] for n in before) > len(before) / 2
    assert statistics.mean(after.values()) > statistics.mean(before.values()) + 0.1
    first, last = history[:30], history[-30:]
    assert statistics.mean(c.score for c in last) > statistics.mean(c.score for c in first)


def test_rl_reward_penalises_the_excess():
    assert reward(cand(80, 1), penalty=2.0) == 80
    assert reward(cand(80, 1, feasible=False), penalty=2.0) == pytest.approx(80 - 2.0 * 100 * 0.5)


# -- config and registry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"population": 1}, {"sample_size": 9, "population": 8}, {"rl_lr": 0},
                                 {"baseline_decay": 1.0}, {"tau_start": 0.1, "tau_end": 0.5},
                                 {"mutation_prob": 1.5}, {"patience": 0}, {"latency_weight": -1}])
def test_config_refuses_bad_values(bad):
    with pytest.raises(UsageError):
        StrategyConfig(**bad)


def test_config_round_trips_through_a_dict():
    cfg = StrategyConfig(seed=4, population=12, mutation_prob=0.3)
    assert StrategyConfig.from_dict(cfg.to_dict()) == cfg


def test_run_names_the_valid_strategies():
    assert set(STRATEGIES) == {"random", "evolution", "nsga2", "rl", "darts"}
    with pytest.raises(UsageError, match=r"'anneal'.*random, evolution, nsga2, rl, darts"):
        run("anneal", BIG, Synthetic(BIG), Budget(evaluations=1))
    with pytest.raises(UsageError, match="supernet, batches, table"):
        run("darts", BIG, Synthetic(BIG), Budget(evaluations=1))
    with pytest.raises(UsageError, match="tabel"):
        run("random", BIG, Synthetic(BIG), Budget(evaluations=1), tabel=None)


# -- the differentiable search ----------------------------------------------------------------------------------------
TINY = spaces.from_dict({"type": "mobilenet", "stem": {"out": 8}, "head": None, "divisor": 4, "stages": [
    {"channels": 8, "stride": 1, "depth": [1, 2], "width": [0.5, 1.0], "expand": [2, 3], "kernel": [3, 5]},
    {"channels": 16, "stride": 2, "depth": [1, 2], "width": [0.5, 1.0], "expand": [2, 3], "kernel": [3, 5]}]})


class FakeTable:
    """A latency linear in the probabilities: each choice a fixed cost, growing with the choice."""

    def __init__(self, space):
        self.space = space
        self.cost = {n: torch.linspace(0.0, 1.0 + i / 4, len(c)) for i, (n, c) in enumerate(space.decisions())}

    def expected(self, probs):
        return 1.0 + sum((probs[n] * c).sum() for n, c in self.cost.items())

    def predict(self, arch):
        return 1.0 + sum(float(self.cost[n][c.index(arch[n])]) for n, c in self.space.decisions())


class SupernetEvaluate:
    """Checks it is called with a valid arch and the supernet as the caller left it (weights trainable,
    hard mode); scores with the fake table's latency."""

    def __init__(self, net, table):
        self.net, self.table, self.calls, self.seen = net, table, [], set()

    def __call__(self, arch):
        assert set(arch) == {n for n, _ in TINY.decisions()}
        TINY.full(arch)
        assert self.net.probs is None and all(p.requires_grad for p in self.net.parameters())
        self.calls.append(dict(arch))
        cached = arch_key(arch) in self.seen
        self.seen.add(arch_key(arch))
        return Candidate(arch=dict(arch), score=0.0, latency_ms=self.table.predict(arch), params=0, feasible=True,
                         cached=cached)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    net = Supernet(TINY, num_classes=4, in_channels=1).eval()
    batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 4, (8,))) for _ in range(2)]
    return net, batches, FakeTable(TINY)


def darts_cfg(**kw):
    return StrategyConfig(**{"darts_steps": 20, "darts_lr": 0.1, "darts_eval_every": 10, "darts_samples": 2, **kw})


def test_darts_updates_alpha_and_leaves_the_supernet_as_it_was(tiny):
    net, batches, table = tiny
    before = {k: v.clone() for k, v in net.state_dict().items()}
    alpha = {n: torch.zeros(len(c), requires_grad=True) for n, c in TINY.decisions()}
    ev = SupernetEvaluate(net, table)
    history = run("darts", TINY, ev, Budget(evaluations=10), darts_cfg(latency_weight=0.0), supernet=net,
                  batches=batches, table=table, limit_ms=100.0, alpha=alpha)  # no latency pressure: the task loss moves alpha
    assert all(a.grad is not None for a in alpha.values())
    assert sum(float(a.detach().abs().sum()) for a in alpha.values()) > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m.training for m in net.modules()) and net.probs is None and net.arch == TINY.largest()
    assert all(p.requires_grad for p in net.parameters())
    assert history and [c.arch for c in history] == ev.calls and all(c.strategy == "darts" for c in history)


@pytest.mark.parametrize("limit_ms", [0.5, None])
def test_a_heavy_latency_weight_drives_darts_to_the_fastest_choices(tiny, limit_ms):
    net, batches, table = tiny
    ev = SupernetEvaluate(net, table)
    alpha = {n: torch.zeros(len(c), requires_grad=True) for n, c in TINY.decisions()}
    cfg = darts_cfg(darts_steps=30, latency_weight=1e4, free_latency_weight=1e4)
    history = darts(TINY, ev, Budget(evaluations=10), cfg, supernet=net, batches=batches, table=table,
                    limit_ms=limit_ms, alpha=alpha)  # limit 0.5 ms: under every subnet's, the hinge always pulls
    assert argmax_arch(TINY, alpha) == TINY.smallest()
    assert TINY.smallest() in [c.arch for c in history]


def test_darts_respects_the_budget(tiny):
    net, batches, table = tiny
    ev, budget, lines = SupernetEvaluate(net, table), Budget(evaluations=1), []
    darts(TINY, ev, budget, darts_cfg(darts_steps=1000, darts_eval_every=5), supernet=net, batches=batches,
          table=table, log=lines.append)
    assert budget.used == 1 and int(lines[-1].split()[2].split("/")[0]) < 1000
    start = time.monotonic()
    darts(TINY, ev, Budget(deadline=start + 0.3), darts_cfg(darts_steps=10 ** 6), supernet=net, batches=batches,
          table=table)
    assert time.monotonic() - start < 3.0


def test_darts_is_seeded(tiny):
    net, batches, table = tiny
    runs = []
    for _ in range(2):
        alpha = {n: torch.zeros(len(c), requires_grad=True) for n, c in TINY.decisions()}
        ev = SupernetEvaluate(net, table)
        darts(TINY, ev, Budget(evaluations=10), darts_cfg(), supernet=net, batches=batches, table=table, alpha=alpha)
        runs.append((ev.calls, {n: a.detach().clone() for n, a in alpha.items()}))
    assert runs[0][0] == runs[1][0] and all(torch.equal(runs[0][1][n], runs[1][1][n]) for n in runs[0][1])


def test_straight_through_gumbel_is_one_hot_forward_with_a_gradient():
    logits = torch.zeros(3, requires_grad=True)
    y = gumbel_hard(logits, 1.0, torch.Generator().manual_seed(0))
    assert sorted(y.tolist()) == [0.0, 0.0, 1.0]
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad.abs().sum() > 0
    assert torch.equal(y.detach(), gumbel_hard(logits, 1.0, torch.Generator().manual_seed(0)).detach())


def test_searching_restores_the_supernet_after_an_error(tiny):
    net, batches, _ = tiny
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError), searching(net):
        net(batches[0][0])  # train mode: BN running statistics move
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and not net.training


def test_the_config_names_every_registered_strategy():
    """config.py keeps the names without importing torch; they must be the registry's."""
    from edgeslim.nas.config import STRATEGY_NAMES
    from edgeslim.nas.strategies import STRATEGIES

    assert set(STRATEGY_NAMES) == set(STRATEGIES)
