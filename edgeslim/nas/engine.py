"""``edgeslim.nas``: train one weight-sharing supernet, search its subnets against latency measured on
the deployment runtime, fine-tune the winner, and write it like every other result.

    supernet     the space's (or the given zoo model converted: elastic depth and width), trained once
                 with SPOS or the sandwich rule, resumable (train.py)
    latency      a per-block lookup table measured in the runtime (latency.py), checked on the
                 finalists against their whole-subnet measurement
    search       evolution | nsga2 | rl | darts | random over the supernet (strategies.py): every subnet's
                 BatchNorm statistics recalibrated, then scored on the validation split; each score is a
                 trial in DIR/study.db (store.py)
    finalists    the best subnets extracted as plain networks, exported, timed whole, scored on the
                 whole validation split; the best one that meets every limit on those measurements wins
    winner       fine-tuned (distilled from the largest subnet), written to DIR with checkpoint/ (a
                 `nasnet`: loads without supernet code), nas.yaml, report and search plot; DIR changes
                 all at once, study.db and .work carry over (resume)
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.errors import DataError, UsageError
from ..core.outdir import check_out
from ..core.shapes import batched
from ..search.config import latency_spec, memory_spec
from . import space as spaces
from .candidate import Budget, Candidate
from .config import NasConfig, nas_config
from .convert import convertible, space_of
from .scorer import Limits, Scorer
from .supernet import Supernet, extract, from_model
from .train import SupernetTraining, train_supernet

CARRIED = ("study.db", ".work")


@dataclasses.dataclass
class NasResult:
    model: nn.Module  # the fine-tuned winner (a plain nasnet)
    report: Any
    arch: dict
    feasible: bool  # every limit met on the winner's measured file and fine-tuned validation score
    out: Path
    history: list[Candidate]


def nas(data: Any, config: NasConfig | None = None, *, model: nn.Module | None = None,
        log: Callable[[str], None] | None = None, **options: Any) -> NasResult:
    """Architecture search (see the module docstring). ``data``: a DataBundle or a dataset name with
    labelled train and validation splits; ``model``: optional, a trained classifier that is the
    reference (the baseline of the report, of ``max_drop`` and of an 'Nx' latency limit) and, when it
    is a zoo mobilenetv2_tiny or CIFAR ResNet and no ``space`` is given, the supernet's start."""
    return Run(data, nas_config(config, options), model, log).run()


class Run:
    def __init__(self, data, cfg: NasConfig, model, log):
        from .. import metrics, runtimes

        self.t0 = time.monotonic()
        self.cfg, self.log = cfg, log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.end = self.t0 + cfg.budget_s
        runtimes.get(cfg.runtime)
        self.metric = metrics.resolve(cfg.metric) if cfg.metric is not None else metrics.get("top1")
        self.agent = cfg.agent_client()  # its token read now: a missing file fails before any work
        ms, speedup = latency_spec(cfg.max_latency) if cfg.max_latency is not None else (None, None)
        if (speedup is not None or cfg.max_drop is not None) and model is None:
            raise UsageError("a speed-up limit ('Nx') and --max-drop are relative to a reference model: give MODEL",
                             hint="or give --max-latency in ms and --min-accuracy in points")
        self.limit_ms, self.speedup = ms, speedup
        self.max_size = memory_spec(cfg.max_size) if cfg.max_size is not None else None
        if cfg.space is not None or model is None:
            spaces.load(cfg.space if cfg.space is not None else "mobilenet", cfg.space_overrides)  # a bad space: now
        if isinstance(data, str):
            from .. import data as es_data

            data = es_data.load(data, seed=cfg.seed)
        self.data = _checked_data(data)
        self.shape = tuple(data.meta.input_shape)
        self.model = None if model is None else copy.deepcopy(_checked_model(model, data, self.shape)).eval()
        self.space, self.converted = self.resolve_space()
        self.out = check_out(cfg.out)
        self.timings: dict[str, float] = {}

    def resolve_space(self) -> tuple[spaces.Space, bool]:
        cfg = self.cfg
        if cfg.space is None and self.model is not None and convertible(self.model):
            return spaces.load(space_of(self.model), cfg.space_overrides), True
        if cfg.space is None and self.model is not None:
            self.log(f"{type(self.model).__name__} has no elastic form: searching the mobilenet space, with the "
                     "model as the reference")
        sp = spaces.load(cfg.space if cfg.space is not None else "mobilenet", cfg.space_overrides)
        return spaces.for_input(sp, min(self.shape[1:])), False

    def run(self) -> NasResult:
        work = self.out / ".work"
        work.mkdir(parents=True, exist_ok=True)
        net = self.supernet()
        ft_reserve = self.finetune_estimate(net)
        with self.timed("supernet_s"):
            cfg = self.cfg
            training = SupernetTraining(epochs=cfg.supernet_epochs, rule=cfg.supernet_rule,
                                        max_batches=cfg.supernet_batches, seed=cfg.seed)
            stats = train_supernet(net, self.data, training, work=work, log=self.log,
                                   deadline=self.end - ft_reserve - 0.15 * cfg.budget_s)
        ref = self.reference(work)  # timed now, beside the table's measurements (not before the long training)
        with self.timed("latency_table_s"):
            table = self.table(work)
        scorer = self.scorer(net, table, ref, work, training)
        with self.timed("search_s"):
            history = self.search(net, table, scorer, ft_reserve)
        with self.timed("finalists_s"):
            finals, judged = scorer.finalists(history, self.cfg.finalists, work, ref, self.speedup)
        winner = finals[0]
        teacher = scorer.subnet(self.space.largest(), batches=scorer.calib)
        with self.timed("finetune_s"):
            model = self.finetune(winner["model"], teacher)
        from .outputs import write_outputs

        return write_outputs(self, model, winner, finals, history, table, scorer, stats, ref, teacher, judged)

    @contextlib.contextmanager
    def timed(self, key: str):
        t = time.monotonic()
        try:
            yield
        finally:
            self.timings[key] = round(time.monotonic() - t, 1)

    def reference(self, work: Path) -> dict | None:
        """The given model's fp32 file: validation score and latency (the base of 'Nx' and --max-drop)."""
        if self.model is None:
            return None
        from .. import runtimes
        from ..measure import latency
        from ..metrics import torch_runner

        rt = runtimes.get(self.cfg.runtime)
        path = work / f"reference{rt.suffix}"
        rt.export(self.model, path, torch.zeros(batched(self.shape)))
        ms = latency(path, batched(self.shape), threads=self.cfg.threads, warmup=5, runs=self.cfg.latency_runs,
                     agent=self.agent)["median_ms"]
        score = self.metric.evaluate(torch_runner(self.model), self.data.val).value
        self.log(f"reference {type(self.model).__name__}: val {self.metric.name} {score:.2f}, {ms:.3f} ms "
                 f"({self.cfg.runtime}, {self.cfg.threads} thread(s)), {rt.size(path) / 1e3:.1f} kB")
        return {"val_score": score, "latency_ms": ms, "size_bytes": rt.size(path), "path": str(path)}

    def supernet(self) -> Supernet:
        torch.manual_seed(self.cfg.seed)
        c, k = self.shape[0], self.data.meta.num_classes
        if self.converted:
            self.log(f"supernet: {type(self.model).__name__} made elastic ({self.space.size():,} subnets, the model "
                     "is the largest)")
            return from_model(self.model, self.space, k, c)
        self.log(f"supernet: the {self.space.name} space ({self.space.size():,} subnets)")
        return Supernet(self.space, k, c)

    def finetune_estimate(self, net: Supernet) -> float:
        """Seconds kept at the end: fine-tuning the largest subnet (two steps timed) plus the finalists'
        and the final measurement."""
        from ..train import fit

        if self.cfg.finetune_epochs <= 0:
            return 60.0
        probe = extract(net, self.space.largest()).train()
        t = time.monotonic()
        fit(probe, self.data, epochs=1, max_batches=2, progress=False, bn_recalibration="off")
        per_step = (time.monotonic() - t) / 2
        batches = self.cfg.finetune_batches or len(self.data.train)
        return per_step * batches * self.cfg.finetune_epochs * 1.1 + 20 * self.cfg.finalists + 60

    def table(self, work: Path):
        from . import latency

        return latency.build(self.space, self.shape, runtime=self.cfg.runtime, threads=self.cfg.threads,
                             runs=self.cfg.latency_runs, agent=self.agent, cache=work / "latency.json",
                             num_classes=self.data.meta.num_classes, log=self.log)

    def scorer(self, net, table, ref, work: Path, training: SupernetTraining) -> Scorer:
        cfg = self.cfg
        limit = self.limit_ms if self.limit_ms is not None else (ref["latency_ms"] / self.speedup if self.speedup
                                                                 else None)
        sla = cfg.min_accuracy if cfg.min_accuracy is not None else (
            ref["val_score"] - cfg.max_drop if cfg.max_drop is not None else None)
        limits = Limits(latency_ms=limit, size_bytes=self.max_size, min_score=sla)
        self.log(f"limits: {limits.text(self.metric.name)}")
        fingerprint = {"space": self.space.to_dict(), "training": training.record(), "calib": cfg.calib_batches,
                       "val_batches": cfg.val_batches, "runtime": cfg.runtime, "threads": cfg.threads,
                       "limits": dataclasses.asdict(limits), "metric": self.metric.name, "seed": cfg.seed,
                       "timed_on": cfg.agent}
        return Scorer(net, self.data, self.shape, limits, self.metric, cfg, work, fingerprint, table, self.log,
                      self.agent)

    def search(self, net, table, scorer: Scorer, reserve: float) -> list[Candidate]:
        from . import strategies

        cfg = self.cfg
        budget = Budget(deadline=self.end - reserve, evaluations=cfg.evaluations)
        if time.monotonic() >= budget.deadline:
            self.log("search: no time left in the budget after training the supernet; scoring the largest and "
                     "smallest subnets only")
            return [scorer(self.space.largest()), scorer(self.space.smallest())]
        self.log(f"search: {cfg.strategy}, {max(0.0, budget.deadline - time.monotonic()) / 60:.1f} min"
                 + (f", at most {cfg.evaluations} subnets" if cfg.evaluations else "")
                 + (f" ({scorer.store.resumed} already in the study)" if scorer.store.resumed else ""))
        scfg = strategies.StrategyConfig(seed=cfg.seed)
        extra = {}
        if cfg.strategy == "darts":
            extra = dict(supernet=net, batches=scorer.val_batches_list(), table=table,
                         limit_ms=scorer.limits.latency_ms, log=self.log)
        found = strategies.run(cfg.strategy, self.space, scorer, budget, scfg, **extra)
        history = scorer.store.history()
        self.log(f"search: {len(found)} proposals, {budget.used} subnets scored, "
                 f"{sum(c.feasible for c in history)} of {len(history)} in the study meet the limits")
        return history

    def finetune(self, model: nn.Module, teacher: nn.Module) -> nn.Module:
        from ..train import fit
        from ..train.kd import kd_loss_fn

        cfg = self.cfg
        if cfg.finetune_epochs <= 0:
            return model
        self.log(f"fine-tuning the winner for {cfg.finetune_epochs:g} epoch(s)"
                 + (" distilled from the largest subnet" if cfg.distill else ""))
        return fit(model, self.data, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, seed=cfg.seed, progress=False,
                   max_batches=cfg.finetune_batches, loss_fn=kd_loss_fn(teacher) if cfg.distill else None)


def _checked_data(data):
    if data is None or getattr(data, "meta", None) is None:
        raise DataError("nas needs data (a DataBundle with train and validation splits)", hint="pass --data D")
    if not data.meta.labelled:
        raise DataError(f"nas needs labelled data; {data.meta.name} has no labels",
                        hint="use a labelled dataset (fashion-mnist, imagefolder:PATH)")
    if getattr(data.meta, "task", "classification") != "classification":
        raise DataError(f"nas searches classifiers; {data.meta.name} is {data.meta.task} data",
                        hint="use classification data (fashion-mnist, imagefolder:PATH)")
    if data.val is None:
        raise DataError("nas needs a validation split: subnets are scored on it and the test split is kept for "
                        "the final figure", hint="use a val fraction > 0 (--val-fraction 0.1)")
    return data


def _checked_model(model, data, shape):
    from ..measure import check_fits_data

    if not isinstance(model, nn.Module):
        raise UsageError(f"nas's model must be a torch.nn.Module, got {type(model).__name__}")
    check_fits_data(model, shape, data)
    return model

