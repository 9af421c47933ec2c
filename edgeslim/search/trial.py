"""One trial of the search, as one object: policy -> reuse of an identical recipe -> pre-checks of
the untrained architecture -> build and train (stopped early when clearly infeasible) -> measure ->
record. What a trial found travels as one typed TrialRecord (one Optuna user attribute)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..core.errors import EdgeslimError
from ..output import Compressed
from ..train import TrainingDiverged
from .clock import Clock, OutOfTime
from .constraints import Constraint, excesses, feasible
from .evaluator import Evaluator, Measurement
from .recipe import recipe_dict, run_steps
from .scoring import named, value_text, what
from .space import describe, suggest

RECORD_KEY = "record"


@dataclasses.dataclass
class TrialRecord:
    trial: int | None = None
    origin: str = "search"  # greedy | search | resumed
    policy: str | None = None
    recipe: dict | None = None
    hash: str | None = None
    worker: str | None = None  # host:pid of the process that ran it (a study may have several)
    measurement: dict | None = None  # Measurement.to_dict() of the trained artifact
    excess: dict = dataclasses.field(default_factory=dict)  # constraint name -> excess (0: no verdict)
    relative: dict = dataclasses.field(default_factory=dict)  # the same over each limit's scale: what the sampler sees
    feasible: bool | None = None
    figures: dict = dataclasses.field(default_factory=dict)  # pre-check and early-stop figures
    layers: list | None = None
    seconds: float | None = None
    cached_from: Any = None
    reason: str | None = None
    error: str | None = None
    diverged: bool = False
    unfinished: bool = False

    @property
    def m(self) -> Measurement | None:
        return None if self.measurement is None else Measurement.from_dict(self.measurement)

    def save(self, trial) -> None:
        trial.set_user_attr(RECORD_KEY, dataclasses.asdict(self))


def read_record(trial) -> TrialRecord:
    """The record of a (frozen or live) trial; an enqueued one not yet run has only its origin."""
    d = trial.user_attrs.get(RECORD_KEY)
    if d is None:
        return TrialRecord(origin=trial.user_attrs.get("origin", "search"))
    names = {f.name for f in dataclasses.fields(TrialRecord)}
    return TrialRecord(**{k: v for k, v in d.items() if k in names})


def constraint_values(names: list[str]) -> Callable:
    """Optuna's constraints_func over the study's constraint names (feasible when every value <= 0)."""
    def values(frozen) -> tuple[float, ...]:
        rec = read_record(frozen)
        ex = rec.relative or rec.excess  # a study from before relative values: the raw excess
        return tuple(float(ex.get(n, 1e9 if i == 0 else 0.0)) for i, n in enumerate(names))

    return values


def recipe_hash(steps) -> str:
    return hashlib.sha1(json.dumps(recipe_dict(steps), sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Planner:
    """A trial's choices -> its recipe: the sensitivity allocation's per-group ratios (cached per
    ratio) and the depth scan's block order are written into the steps, so the recipe replays."""

    model: nn.Module
    space: Any
    curves: dict | None
    block_order: list[str]
    xshape: tuple[int, ...]
    cache: dict = dataclasses.field(default_factory=dict)

    def layer_ratios(self, params: dict) -> dict | None:
        from .space import full_policy

        p = full_policy(params, self.space)
        if p["prune_ratio"] <= 0 or p["allocation"] != "sensitivity" or not self.curves:
            return None
        r = float(p["prune_ratio"])
        if r not in self.cache:
            self.cache[r] = allocate(self.model, self.curves, r, self.xshape)
        return self.cache[r]

    def steps(self, params: dict, space=None) -> list:
        from .space import build_steps

        return build_steps(params, space or self.space, layer_ratios=self.layer_ratios(params),
                           block_order=self.block_order)


def allocate(model, curves, ratio: float, xshape) -> dict[str, float]:
    """Per-group ratios from the sensitivity curves, at the MACs the uniform ratio reaches."""
    import copy

    import torch

    from ..core.errors import UsageError
    from ..pruning.importance import Magnitude
    from ..pruning.sensitivity import allocate as allocate_ratios
    from ..pruning.structured import macs_of, prune_once

    example = torch.randn(xshape, generator=torch.Generator().manual_seed(0))
    m = copy.deepcopy(model)
    prune_once(m, example, ratio=ratio, importance=Magnitude(1))
    target = macs_of(m, example) / macs_of(model, example)
    try:
        return allocate_ratios(model, curves, min(0.999, target), example=example, max_ratio=0.9)
    except UsageError:
        return {}


def untrained(steps: list) -> list:
    """The recipe without training: the architecture and the format, cheaply (Config.untrained)."""
    return [u for s in steps if (u := s.untrained()) is not None]


@dataclasses.dataclass
class TrialRunner:
    """Runs one Optuna trial end to end; ``__call__`` is the study's objective."""

    model: nn.Module
    planner: Planner
    data: Any
    evaluator: Evaluator
    constraints: list[Constraint]
    clock: Clock
    tracker: Any  # outputs.BestTracker
    store: Any  # store.Store: identical recipes measured by other processes
    work: Path
    seed: int = 0
    objective: str = "size"
    pareto: bool = False
    log: Callable[[str], None] = print
    batches: list = dataclasses.field(default_factory=list)  # validation batches for the early checks
    margins: tuple[float, float] = (3.0, 6.0)  # points under the SLA that stop a trial: before export, between epochs

    def __post_init__(self):
        import copy

        self.teacher = copy.deepcopy(self.model).eval()
        self.measured: dict[str, TrialRecord] = self.store.measured()
        self.architectures: dict[str, Measurement] = {}  # recipe hash -> its untrained measurement
        self.who = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def sla(self) -> float:
        return self.constraints[0].sla

    def values(self, m: Measurement):
        if self.pareto:
            return m.score, float(m.size_bytes), float(m.latency_ms)
        return float(m.size_bytes if self.objective == "size" else m.latency_ms)

    def record(self, trial, rec: TrialRecord, **excess: float) -> None:
        """Save ``rec`` with these constraint values (the others: 0, not measured, no verdict)."""
        from .strategies import native_constraints

        rec.excess = {c.name: float(excess.get(c.name, 0.0)) for c in self.constraints}
        rec.relative = {c.name: round(rec.excess[c.name] / c.scale(rec.figures), 6) for c in self.constraints}
        rec.save(trial)
        if native_constraints():
            for name, v in rec.relative.items():
                trial.set_constraint(name, v)

    def __call__(self, trial):
        import optuna

        rec = read_record(trial)
        try:
            return self.run(trial, rec)
        except OutOfTime as e:
            rec.unfinished, rec.reason = True, str(e)
            rec.save(trial)
            self.log(f"{head(rec, trial)} | unfinished: {e}")
            raise optuna.TrialPruned(str(e)) from None
        except TrainingDiverged as e:  # no usable model: infeasible (its score counted as 0), not a failure
            rec.diverged, rec.reason = True, e.message
            self.record(trial, rec, accuracy_sla=max(float(self.sla), 1.0))
            self.log(f"{head(rec, trial)} | infeasible: {e.message}")
            raise optuna.TrialPruned(e.message) from None
        except optuna.TrialPruned as e:
            rec.reason = str(e)
            rec.save(trial)
            self.log(f"{head(rec, trial)} | stopped early: {e}")
            raise
        except EdgeslimError as e:
            rec.error = e.message
            rec.save(trial)
            raise
        except Exception as e:  # noqa: BLE001 - recorded, the search goes on
            rec.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            rec.save(trial)
            raise

    def run(self, trial, rec: TrialRecord):
        t0 = time.monotonic()
        params = suggest(trial, self.planner.space, self.model)
        steps = self.planner.steps(params)
        rec.trial = trial.number
        rec.policy = describe(params, self.planner.space, self.planner.block_order)
        rec.recipe, rec.hash, rec.worker = recipe_dict(steps, seed=self.seed), recipe_hash(steps), self.who
        rec.save(trial)
        reused = self.reuse(trial, rec)
        if reused is not None:
            return reused
        self.precheck(trial, rec, steps)
        res = self.build(trial, rec, steps)
        path = self.evaluator.export(res.model, self.evaluator.artifact(self.work, f"trial-{trial.number}"))
        m = self.evaluator.measure(path, res.float_model)
        from ..output import layer_policy

        rec.measurement, rec.feasible = m.to_dict(), feasible(self.constraints, m)
        rec.layers, rec.seconds = layer_policy(self.model, res), round(time.monotonic() - t0, 1)
        for c in self.constraints:
            rec.figures.update(c.figures(m))
        self.record(trial, rec, **excesses(self.constraints, m))
        self.measured[rec.hash] = rec
        self.clock.measured(rec.seconds)
        self.tracker.offer(trial.number, rec, res, steps, path, self.seed)
        self.log(f"{head(rec, trial)} | {measured_text(rec, self.constraints)} | {rec.seconds:.0f}s | "
                 f"best: {self.tracker.summary()}")
        if self.tracker.best_trial != trial.number:
            _remove(path)
        return self.values(m)

    def reuse(self, trial, rec: TrialRecord):
        """An identical recipe measured before (here, or by another process on the same study)."""
        if rec.hash not in self.measured and self.store.shared:
            self.measured.update(self.store.measured())
        old = self.measured.get(rec.hash)
        if old is None:
            return None
        for k in ("measurement", "feasible", "figures", "layers"):
            setattr(rec, k, getattr(old, k))
        rec.cached_from = old.trial
        self.record(trial, rec, **old.excess)
        self.log(f"{head(rec, trial)} | same recipe as trial {rec.cached_from}: reused")
        return self.values(rec.m)

    def precheck(self, trial, rec: TrialRecord, steps) -> None:
        """Constraints that can judge an untrained architecture (latency) do so before any training."""
        import optuna

        def arch() -> Measurement:
            if rec.hash not in self.architectures:
                self.architectures[rec.hash] = self.architecture(steps, str(trial.number))
            return self.architectures[rec.hash]

        for c in self.constraints:
            check = c.precheck(arch)
            if check is None:
                continue
            rec.figures.update(check.figures)
            if check.stop:
                self.record(trial, rec, **{c.name: check.excess})
                raise optuna.TrialPruned(check.stop)
        rec.save(trial)

    def architecture(self, steps, name: str) -> Measurement:
        """The measurement of the policy's architecture built without training."""
        res = run_steps(self.model, untrained(steps), data=self.data, input_shape=self.evaluator.input_shape,
                        seed=self.seed)
        path = self.evaluator.artifact(self.work, f"latency-probe-{name}")
        try:
            return self.evaluator.architecture(self.evaluator.export(res.model, path))
        finally:
            _remove(path)

    def build(self, trial, rec: TrialRecord, steps) -> Compressed:
        """Run the recipe, float steps first. Between fine-tuning epochs and after the float steps, the
        float score on a few validation batches stops a clearly infeasible trial: mid-way when it is
        more than ``margins[1]`` points under the SLA, before quantization and measurement when more
        than ``margins[0]`` under. The search's clock is checked at the same points."""
        from ..train.loop import on_epoch_end

        check = EarlyStop(self, trial, rec)
        float_steps = [s for s in steps if not getattr(s, "final", False)]
        q_steps = steps[len(float_steps):]
        kw = dict(data=self.data, input_shape=self.evaluator.input_shape, teacher=self.teacher, seed=self.seed)
        with self.clock.guard(), on_epoch_end(check.between_epochs):
            res = run_steps(self.model, float_steps, **kw)
        if float_steps:
            check.after_float(res.model)
        self.clock.check("before quantization and measurement")
        if q_steps:
            with self.clock.guard():
                q = run_steps(res.model, q_steps, **kw)
            res = Compressed(q.model, res.model, True, list(steps), res.details + q.details)
        return res


@dataclasses.dataclass
class EarlyStop:
    """The float score of a running trial, reported to Optuna; clearly infeasible trials stop."""

    runner: TrialRunner
    trial: Any
    rec: TrialRecord
    reports: int = 0

    def score(self, model) -> float:
        from .strategies import quick_accuracy

        return quick_accuracy(model, self.runner.batches, self.runner.evaluator.scorer)

    def report(self, acc: float, margin: float, where: str, *, use_pruner: bool = False) -> None:
        import optuna

        self.trial.report(acc, self.reports)
        self.reports += 1
        out = acc < self.runner.sla - margin
        if use_pruner and not self.runner.pareto:
            out = self.trial.should_prune()  # the study's ThresholdPruner (sla - margins[0])
        if out:
            self.runner.record(self.trial, self.rec, accuracy_sla=self.runner.sla - acc)
            n = sum(len(y) for _, y in self.runner.batches)
            metric = getattr(self.runner.constraints[0], "metric", "top1")
            raise optuna.TrialPruned(f"float {what(metric)} {value_text(metric, acc)} on {n} validation images "
                                     f"{where} is more than {margin:g} points under the SLA")

    def between_epochs(self, epoch: int, model) -> None:
        acc = self.score(model)
        self.rec.figures["epoch_val_sample"] = self.rec.figures.get("epoch_val_sample", []) + [acc]
        self.report(acc, self.runner.margins[1], f"after fine-tuning epoch {epoch}")
        self.runner.clock.check(f"after fine-tuning epoch {epoch}", self.runner.clock.measure_s)

    def after_float(self, model) -> None:
        acc = self.score(model)
        self.rec.figures["float_val_sample"] = acc
        self.report(acc, self.runner.margins[0], "before quantization", use_pruner=True)


def _remove(path: Path) -> None:
    from ..runtimes import artifact_files

    for f in artifact_files(path):
        f.unlink(missing_ok=True)


def head(rec: TrialRecord, trial) -> str:
    return f"trial {trial.number} [{rec.origin}] {rec.policy}"


def measured_text(rec: TrialRecord, constraints) -> str:
    m = rec.m
    sla = constraints[0]
    lim = rec.figures.get("latency_limit_ms")
    size = f"{m.size_bytes / 1e6:.2f} MB" if m.size_bytes >= 1e6 else f"{m.size_bytes / 1e3:.1f} kB"
    metric = getattr(sla, "metric", "top1")
    return (f"val {named(metric, m.score)} (-{m.margin:.2f} at {sla.confidence:g}: {m.bound:.2f}; SLA {sla.sla:.2f}) | "
            f"{size} | {m.latency_ms:.3f} ms{'' if lim is None else f' (limit {lim:.3f})'} | {(m.macs or 0) / 1e6:.2f} MMACs | "
            + ("feasible" if rec.feasible else "infeasible"))
