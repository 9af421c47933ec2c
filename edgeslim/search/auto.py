"""``edgeslim.auto``: the smallest (or fastest) deployable model whose accuracy meets an SLA.

    minimize Size(policy) (or Latency(policy))  subject to  every constraint (the accuracy SLA, a latency limit)

A short entry that wires the parts of the search, each in its own file:

- config.py       AutoConfig: every option, one frozen config (round-trips through YAML);
- store.py        the Optuna study (SQLite, PostgreSQL) and its StudyState record: resume, workers;
- setup.py        a fresh study: the baseline measured (SLA = baseline - max_drop, or min_accuracy),
                  the depth and sensitivity scans run once and stored;
- evaluator.py    one Measurement of an artifact through the Runtime and Metric seams: validation
                  score with its confidence margin, bytes on disk, latency, MACs;
- constraints.py  the accuracy SLA and the latency limit behind one protocol;
- strategies.py   the greedy pass that queues the first policies, then TPE / NSGA-II;
- trial.py        one trial: policy -> reuse -> pre-checks -> build and train -> measure -> record;
- clock.py        the budget: trials stop in time for the final comparison;
- outputs.py      the best-so-far on disk, the trial table, the final side-by-side comparison on the
                  TEST split (which never steers the search), the closest miss when nothing is feasible.

The whole out DIR changes at once at the end (core.outdir.OutDir); the study (DIR/study.db) and the
search's work (DIR/.work) carry over, so a killed search resumes without losing a finished trial.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..core.errors import EdgeslimError, UsageError
from ..core.outdir import OutDir, check_out
from ..core.shapes import batched, unbatched
from . import setup
from .clock import Clock
from .config import AutoConfig, auto_config, parse_budget
from .confidence import unpack
from .constraints import constraints_of, verdict_text
from .evaluator import Evaluator
from .outputs import BestTracker, Final, checkpoint_writer, closest_text, counts_note, trial_rows
from .scoring import study_metric
from .space import load_space
from .store import STUDY_NAME, Store, redact
from .strategies import first_batches, greedy_seeds, proxy_runner
from .trial import Planner, TrialRunner, read_record

CARRIED = ("study.db", ".work")  # search state an out DIR keeps across runs (resume), not part of the result

__all__ = ["AutoConfig", "AutoResult", "CARRIED", "STUDY_NAME", "auto", "closest_text", "parse_budget"]


@dataclasses.dataclass
class AutoResult:
    model: nn.Module  # the winner (a quantization simulation when int8), or the baseline
    report: Any  # edgeslim.Report (test-split figures)
    feasible: bool
    out: Path
    best_trial: int | None
    recipe: dict | None


def auto(model: nn.Module, data: Any, config: AutoConfig | None = None, *, log: Callable[[str], None] | None = None,
         **options: Any) -> AutoResult:
    """Search compression policies for ``model`` under an accuracy SLA (see the module docstring).

    ``data``: a DataBundle (or a dataset name) with labelled train and validation splits.
    Options (an AutoConfig, or its fields as keywords): ``max_drop`` (points below the baseline's
    validation accuracy, default 0.5) or ``min_accuracy``; ``objective`` size | latency, or
    ``pareto``; ``max_latency`` ('0.2ms', '3x'); ``confidence`` (a candidate is feasible when a
    one-sided lower bound of its validation accuracy at this confidence clears the SLA; 0 turns the
    margin off); ``budget`` ('30m': wall time of this call) and ``trials`` (finished trials of the
    whole study); ``storage`` / ``resume`` / ``worker``; ``out``; ``space``; ``greedy``; ``seed``;
    ``spec`` / ``build`` / ``model_name`` (how the checkpoint rebuilds the model); ``input_shape``;
    ``threads``, ``val_batches``, ``latency_runs``, ``final_runs``; ``runtime``; ``metric``: a registered
    name (top1, the default for classifiers; top5; map; miou), ``"package.module:function"``, a callable
    ``(predict, loader) -> float | per-sample values`` or a Metric, every artifact scored with it on the
    validation split (the test split for the report); ``max_drop`` / ``min_accuracy`` are in its points.
    The study records its name: resume with the same metric (a callable is passed again).
    Writes ``out`` (see docs/auto.md); ``feasible`` is False when no policy met the SLA (the baseline
    is kept and written as the result).
    """
    return Search(model, data, auto_config(config, options), log).run()


class Search:
    """One call of ``auto``: the parts wired together."""

    def __init__(self, model, data, cfg: AutoConfig, log):
        import optuna

        from .. import metrics, runtimes

        self.t_start = time.monotonic()
        self.cfg, self.log = cfg, log or (lambda s: print(s, file=sys.stderr, flush=True))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not isinstance(model, nn.Module):
            raise UsageError(f"auto expects a torch.nn.Module, got {type(model).__name__}")
        runtimes.get(cfg.runtime)  # an unknown name fails before any work, and so does the metric: a
        # package.module:function text the caller gave is imported here (never one read from the study)
        self.given = None if cfg.metric is None else metrics.resolve(cfg.metric)
        if isinstance(data, str):
            from .. import data as es_data

            data = es_data.load(data, seed=cfg.seed)
        load_space(cfg.space)  # a bad space fails before any work
        self.data = data
        meta_shape = getattr(getattr(data, "meta", None), "input_shape", None)
        self.shape = unbatched(cfg.input_shape if cfg.input_shape is not None else meta_shape)
        self.model = copy.deepcopy(model).eval()
        setup.check_data(self.model, data, batched(self.shape))
        task = getattr(data.meta, "task", "classification")
        self.metric = self.given if self.given is not None else metrics.get(metrics.default_for(task))
        metrics.check_task(self.metric, task, getattr(data.meta, "name", "the data"))
        self.end = self.t_start + cfg.budget_s

    def run(self) -> AutoResult:
        cfg = self.cfg
        self.out = check_out(cfg.out)  # before any work: a DIR that would lose the user's files is refused
        self.work = self.out / ".work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.storage_url, shared=cfg.shared)
        self.store.check_mode(resume=cfg.resume, worker=cfg.worker)
        fresh = not self.store.exists
        ev = Evaluator(self.data, self.shape, threads=cfg.threads, val_batches=cfg.val_batches,
                       latency_runs=cfg.latency_runs, confidence=cfg.confidence, runtime=cfg.runtime, metric=self.metric,
                       agent=cfg.agent_client())
        self.state = (setup.fresh(self.model, self.data, cfg, self.store, ev, self.work, self.end, self.log) if fresh
                      else setup.existing(cfg, self.store, self.log, self.given))
        self.metric = study_metric(self.metric if fresh or self.given is not None else None, self.state.metric)
        self.ev = self.evaluator(ev)
        self.constraints = constraints_of(self.state)
        if fresh and len(self.constraints) > 1:
            self.log(f"constraints: {verdict_text(self.constraints)} (fp32 baseline "
                     f"{self.state.baseline['latency_ms']:.3f} ms at the start)")
        self.clock = self.make_clock()
        if cfg.resume:
            self.store.recover_killed(self.log)
        runner = self.runner()
        if cfg.greedy and fresh:
            self.greedy(runner)
        self.optimize(runner)
        if self.store.finished() == 0 and not runner.tracker.has_best():
            raise EdgeslimError(f"no trial finished within the budget ({cfg.budget})",
                                hint=f"raise --budget (one trial here takes about "
                                     f"{max(self.state.trial_estimate_s, 1):.0f}s plus fine-tuning)")
        return self.finish(runner)

    def evaluator(self, ev: Evaluator) -> Evaluator:
        """The evaluator as the study says: its validation cap and confidence, paired with the
        baseline's per-sample results for a drop SLA, the baseline timed alongside for a speed-up."""
        st = self.state
        paired = unpack(st.baseline_correct) if st.max_drop is not None and st.baseline_correct else None
        ev = dataclasses.replace(ev, val_batches=st.val_batches, confidence=st.confidence, paired=paired,
                                 runtime=st.runtime, metric=self.metric, memory=st.max_memory is not None)
        return dataclasses.replace(ev, reference=setup.reference_for(st, self.model, ev, self.work))

    def make_clock(self) -> Clock:
        clock = Clock.of(self.state, self.end, self.data, val_batches=self.state.val_batches,
                         latency_runs=self.cfg.latency_runs, final_runs=self.cfg.final_runs)
        t_trial = self.state.trial_estimate_s
        if clock.left() < t_trial:
            elapsed = time.monotonic() - self.t_start
            raise UsageError(f"the budget ({self.cfg.budget}) is too short for one trial: setting up took "
                             f"{elapsed:.0f}s, a trial takes at least about {t_trial:.0f}s here and the final "
                             f"comparison about {clock.final_s:.0f}s", hint=f"give --budget "
                             f"{max(2, math.ceil((elapsed + 3 * t_trial + clock.final_s) / 60))}m or more")
        return clock

    def runner(self) -> TrialRunner:
        st, cfg = self.state, self.cfg
        space = load_space(st.space)
        planner = Planner(self.model, space, st.sensitivity, list(st.block_order), batched(self.shape))
        tracker = BestTracker(self.out, st.objective, checkpoint_writer(cfg.spec, cfg.build, self.data, self.shape),
                              artifact=self.ev.artifact(Path("."), "model").name, metric=self.metric.name)
        return TrialRunner(self.model, planner, self.data, self.ev, self.constraints, self.clock, tracker, self.store,
                           self.work, seed=cfg.seed, objective=st.objective, pareto=st.pareto, log=self.log,
                           batches=first_batches(self.data.val, 4), margins=(st.prune_margin, st.epoch_prune_margin))

    def greedy(self, runner: TrialRunner) -> None:
        """Cheap probes pick the first policies, queued before TPE / NSGA-II take over."""
        t = time.monotonic()
        planner = runner.planner
        probe = proxy_runner(self.model, planner.space, data=self.data, input_shape=self.shape, batches=runner.batches,
                             layer_ratios_for=planner.layer_ratios, block_order=planner.block_order,
                             metric=self.metric)
        judged = self.constraints[1:]

        def fast_enough(params: dict) -> bool:
            arch = functools.lru_cache(None)(lambda: runner.architecture(planner.steps(params), "greedy"))
            return all((p := c.precheck(arch)) is None or p.excess <= 0 for c in judged)

        seeds = greedy_seeds(self.model, planner.space, sla=self.state.sla, batches=runner.batches, run_proxy=probe,
                             log=self.log, fast_enough=fast_enough if judged else None,
                             deadline=self.clock.trial_end - self.state.trial_estimate_s,  # leaves one trial's time
                             metric=self.metric.name)
        for p in seeds:
            self.store.study.enqueue_trial(p, user_attrs={"origin": "greedy"})
        self.log(f"greedy pass: {len(seeds)} policies queued first ({time.monotonic() - t:.0f}s)")

    def optimize(self, runner: TrialRunner) -> None:
        cfg, clock, store = self.cfg, self.clock, self.store
        fails = [0]

        def stop(study, frozen):
            failed = frozen.state.name == "FAIL"
            fails[0] = fails[0] + 1 if failed else 0
            if failed:
                self.log(f"trial {frozen.number} failed: {read_record(frozen).error or 'see --debug'}")
            if cfg.trials is not None and store.finished() >= cfg.trials:
                study.stop()
            elif fails[0] >= 3:
                self.log("three trials in a row failed: stopping the search")
                study.stop()
            elif not clock.room_for_trial():
                self.log(clock.no_room_text())
                study.stop()

        if cfg.trials is not None and store.finished() >= cfg.trials:
            self.log(f"the study already has {store.finished()} finished trials (>= {cfg.trials}): nothing to run")
        elif not clock.room_for_trial():
            self.log(clock.no_room_text())
        else:
            self.log(f"searching: {clock.left() / 60:.1f} min left for trials ({clock.final_s:.0f}s kept for the final "
                     f"comparison)" + (f", trials {store.finished()}/{cfg.trials}" if cfg.trials else "")
                     + f", objective {'pareto' if self.state.pareto else self.state.objective}")
            store.study.optimize(runner, timeout=max(0.01, clock.left()), callbacks=[stop], catch=(Exception,),
                                 gc_after_trial=True)

    def details(self, rows: list[dict], n_feasible: int) -> dict:
        st, cfg = self.state, self.cfg
        sla = self.constraints[0]
        return {
            "split": "test", "search_split": "val",
            "sla": {"min_val_accuracy": st.sla, "baseline_val_accuracy": st.baseline["val_accuracy"],
                    "max_drop": st.max_drop, "min_accuracy": st.min_accuracy, "confidence": st.confidence,
                    "max_latency": st.max_latency, "max_memory": st.max_memory, "rule": sla.rule(),
                    "metric": st.metric},
            "constraints": [c.text() for c in self.constraints],
            "objective": "pareto (accuracy, size, latency)" if st.pareto else st.objective,
            "strategy": ("greedy + " if any(r["origin"] == "greedy" for r in rows) else "")
                        + ("NSGA-II" if st.pareto else "TPE"),
            "runtime": st.runtime, "storage": redact(self.store.url), "budget": str(cfg.budget),
            "trials_budget": cfg.trials, "search_seconds": round(time.monotonic() - self.t_start, 1),
            "baseline_search": st.baseline, "trials": rows, "space": st.space, "notes": [counts_note(rows, n_feasible)],
        }

    def finish(self, runner: TrialRunner) -> AutoResult:
        from ..output import OutputOptions, write_result

        cfg, study = self.cfg, self.store.study
        rows = trial_rows(study)
        ok = [r for r in rows if r["state"] == "complete" and r["feasible"]]
        primary = "size_bytes" if self.state.objective == "size" else "latency_ms"
        best = min(ok, key=lambda r: (r[primary], -r["val_accuracy"])) if ok else None
        details = self.details(rows, len(ok))
        opts = OutputOptions(command="auto", spec=cfg.spec, build=cfg.build, model_name=cfg.model_name,
                             threads=cfg.threads, runs=cfg.final_runs, runtime=self.state.runtime,
                             agent=self.ev.agent, metric=self.metric, keep_baseline=True)

        def write(original, res, stage, **kw):
            return write_result(stage, original, res, opts, data=self.data, input_shape=self.shape, **kw)

        final = Final(self.model, self.data, self.shape, self.constraints, write, self.log)
        with OutDir(self.out, carry=CARRIED) as stage:  # DIR changes all at once; the study and its cache carry over
            if best is None:
                report = final.keep_baseline(stage, self.out, study, rows, details)
                return AutoResult(self.model, report, False, self.out, None, None)
            number = best["trial"]
            rec = read_record(study.trials[number])
            res = self.winner(runner, number, rec)
            details.update({"best_trial": number, "policy": study.trials[number].params, "policy_text": rec.policy,
                            "recipe": rec.recipe, "val_accuracy": rec.measurement["score"]})
            report = final.winner(stage, res, runner.tracker.artifact, rows, number, details)
        self.log(f"winner: trial {number} {rec.policy} -> {self.out}/{opts.artifact}")
        return AutoResult(res.model, report, True, self.out, number, rec.recipe)

    def winner(self, runner: TrialRunner, number: int, rec):
        """The winner's result: this process's best, or rebuilt from its recipe (deterministic) when
        another worker or a killed run found it."""
        tracker = runner.tracker
        if tracker.best_trial == number and tracker.result is not None:
            return tracker.result
        from .recipe import load_recipe, run_steps

        self.log(f"rebuilding the winner (trial {number}) from its recipe")
        steps, _ = load_recipe(rec.recipe)
        res = run_steps(self.model, steps, data=self.data, input_shape=self.shape, seed=self.cfg.seed)
        path = self.ev.export(res.model, self.ev.artifact(self.work, f"trial-{number}"))
        tracker.best, tracker.best_trial = None, None
        tracker.offer(number, rec, res, steps, path, self.cfg.seed)
        return res
