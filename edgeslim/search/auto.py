"""``edgeslim.auto``: the smallest (or fastest) deployable model whose accuracy meets an SLA.

    minimize Size(policy) (or Latency(policy))  subject to  val_accuracy(policy) >= SLA

One loop on an Optuna study:

1. measure the baseline (fp32 ONNX: validation accuracy, size, latency) -> SLA = baseline - max_drop
   (or ``min_accuracy``); scan per-group pruning sensitivity once (it steers the "sensitivity"
   allocation and the greedy pass) and the order in which residual blocks would go (depth);
2. greedy pass (fresh study only): cheap no-fine-tune probes pick the first policies, enqueued;
3. TPE (one objective, SLA as a constraint) or NSGA-II (``pareto``: accuracy, size, latency);
   each trial builds a recipe, runs it, reports the float accuracy after fine-tuning to a pruner
   (clearly infeasible trials stop there), exports the artifact and MEASURES it: accuracy of the
   ONNX file on the validation split, bytes on disk, ONNX Runtime latency, MACs alongside. A trial
   is feasible when a lower confidence bound of its validation accuracy clears the SLA (paired with
   the baseline's per-image results for a drop SLA; ``confidence``, see search/confidence.py) and,
   with ``max_latency``, when its latency is within the limit. Under a limit each trial's
   architecture is first timed untrained and stopped before training when clearly too slow.
   Identical recipes are measured once (hash of the recipe);
4. every new best feasible trial is written at once, atomically: DIR/model.onnx, DIR/winner.yaml,
   DIR/checkpoint (float results), DIR/best.json;
5. the winner is measured again against the baseline, side by side, on the TEST split (which never
   steers the search): report.json / .md / .html with the Pareto plot. When nothing is feasible
   the baseline is kept, and the closest miss (the measured trial nearest the SLA, within the
   latency limit) is named in the report with its recipe in DIR/closest.yaml.

The study lives in SQLite (DIR/study.db) unless ``storage`` says otherwise, so a killed search
resumes (``resume=True``) without losing a finished trial, and PostgreSQL lets several machines
work on one study (``worker=True``).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.errors import DataError, EdgeslimError, UsageError
from ..core.io import atomic_path, atomic_write_text, write_json
from ..core.outdir import check_out
from ..train import TrainingDiverged
from .recipe import Compressed, export_artifact, layer_policy, recipe_dict, recipe_yaml, run_steps, write_outputs
from .confidence import DEFAULT_CONFIDENCE, margin as accuracy_margin, pack, rule_text, unpack
from .space import SearchSpace, blocks_removed, build_steps, describe, full_policy, load_space, suggest
from .strategies import first_batches, greedy_seeds, make_sampler, proxy_runner, quick_accuracy
from ..core.shapes import batched, unbatched

STUDY_NAME = "edgeslim-auto"
CARRIED = ("study.db", ".work")  # search state an out DIR keeps across runs (resume), not part of the result
PRUNE_MARGIN = 3.0  # points under the SLA at which a trial is stopped before export
EPOCH_PRUNE_MARGIN = 6.0  # ... and between fine-tuning epochs
LATENCY_PRUNE_SLACK = 1.1  # a trial whose architecture runs slower than this times the limit stops before training
SETUP_WAIT_S = 60.0  # a worker that joins a study still being set up waits this long for its SLA
FINAL_SLACK = 1.25  # the final comparison's estimate: this times the baseline's measured costs ...
FINAL_FIXED_S = 1.5  # ... plus the plots' time measured at the setup, plus this for the rest of the out DIR


def parse_budget(budget: Any) -> float:
    """'30m', '90s', '1h30m', '45' (minutes) or a number of seconds -> seconds."""
    if budget is None:
        return math.inf
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        if budget <= 0:
            raise UsageError(f"budget must be positive, got {budget!r}")
        return float(budget)
    text = str(budget).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|min|s|sec)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|m|min|s|sec)", "", text).strip():
        raise UsageError(f"cannot read budget {budget!r}", hint="use e.g. 30m, 90s, 1h30m")
    secs = sum(float(v) * {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1}[u] for v, u in parts)
    if secs <= 0:
        raise UsageError(f"budget must be positive, got {budget!r}")
    return secs


PG_CONNECT_TIMEOUT = 10  # seconds: an unreachable PostgreSQL host fails fast instead of after the OS's TCP timeout


def open_storage(url: str, *, heartbeat: bool):
    """An Optuna RDBStorage for ``url``; any failure to reach it is one EdgeslimError (exit 1)."""
    import optuna

    given = url
    url, engine_kw = _engine_args(url)
    try:
        kw: dict = {}
        if heartbeat:  # workers: a trial whose process died is failed after the grace period and retried
            import warnings

            from optuna import storages

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
                    kw = dict(heartbeat_stale_trial_callback=storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
                else:
                    kw = dict(failed_trial_callback=storages.RetryFailedTrialCallback(max_retry=1))
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kw, heartbeat_interval=30,
                                                  grace_period=90, **kw)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kw)
    except Exception as e:  # noqa: BLE001 - sqlalchemy / driver errors of every kind
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "check the URL, that the server is up and reachable, and the credentials"
        if isinstance(e, ImportError) or "No module named" in msg or "Failed to import DB" in msg:
            msg = "no database driver for this URL"
            hint = "install the database driver (PostgreSQL: pip install psycopg2-binary, or psycopg[binary])"
        raise EdgeslimError(f"cannot open the study storage {_redact(given)}: {_redact(msg)}", hint=hint) from None


def _engine_args(url: str) -> tuple[str, dict | None]:
    """PostgreSQL: when the URL names no driver, use whichever is installed (psycopg2, else psycopg 3;
    SQLAlchemy's default differs between versions), and give up on an unreachable host after
    PG_CONNECT_TIMEOUT seconds unless the URL sets its own connect_timeout."""
    import importlib.util

    scheme, rest = url.split("://", 1) if "://" in url else (url, "")
    if not scheme.lower().startswith("postgres"):
        return url, None
    if scheme.lower() in ("postgresql", "postgres"):
        driver = next((d for d in ("psycopg2", "psycopg") if importlib.util.find_spec(d) is not None), None)
        url = f"postgresql+{driver}://{rest}" if driver else f"postgresql://{rest}"
    if "connect_timeout" in url:
        return url, None
    return url, {"connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT}}


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


@dataclasses.dataclass
class AutoResult:
    model: nn.Module  # the winner (a quantization simulation when int8), or the baseline
    report: Any  # edgeslim.Report (test-split figures)
    feasible: bool
    out: Path
    best_trial: int | None
    recipe: dict | None


def _hash(steps) -> str:
    return hashlib.sha1(json.dumps(recipe_dict(steps), sort_keys=True).encode()).hexdigest()[:16]


def _fmt_size(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def auto(model: nn.Module, data: Any, *, max_drop: float | None = None, min_accuracy: float | None = None,
         objective: str = "size", budget: Any = "30m", trials: int | None = None, storage: str | None = None,
         resume: bool = False, worker: bool = False, out: str | os.PathLike = "runs/auto",
         space: Any = None, pareto: bool = False, greedy: bool = True, seed: int = 0, spec: str | None = None,
         build: dict | None = None, model_name: str | None = None, input_shape=None, threads: int = 2,
         val_batches: int | None = None, latency_runs: int = 30, final_runs: int = 50,
         confidence: float = DEFAULT_CONFIDENCE, max_latency: Any = None,
         log: Callable[[str], None] | None = None) -> AutoResult:
    """Search compression policies for ``model`` under an accuracy SLA; see the module docstring.

    ``data``: a DataBundle (or a dataset name) with labelled train and validation splits.
    ``max_drop`` (points below the baseline's validation accuracy, default 0.5) or ``min_accuracy``.
    ``budget``: wall time for this call ('30m'); ``trials``: finished trials for the whole study.
    ``confidence``: a candidate is feasible when a one-sided lower bound of its validation accuracy
    at this confidence clears the SLA (see ``edgeslim.search.confidence``; 0 turns the margin off).
    ``max_latency``: a second constraint, the candidate's ONNX Runtime latency in ms (0.2, '0.2ms')
    or a speed-up over the fp32 baseline ('3x': at most a third of the baseline's latency, the
    baseline timed alongside each candidate).
    Writes ``out`` (see docs/auto.md) and returns an AutoResult; ``feasible`` is False when no
    policy met the SLA (the baseline is kept and written as the result).
    """
    import optuna

    t_start = time.monotonic()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not isinstance(model, nn.Module):
        raise UsageError(f"auto expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(data, str):
        from .. import data as es_data

        data = es_data.load(data, seed=seed)
    if objective not in ("size", "latency"):
        raise UsageError(f"unknown objective {objective!r}", hint="use size or latency")
    if max_drop is not None and min_accuracy is not None:
        raise UsageError("give max_drop or min_accuracy, not both")
    if max_drop is None and min_accuracy is None:
        max_drop = 0.5
    if max_drop is not None and max_drop < 0:
        raise UsageError(f"max_drop must be >= 0 points, got {max_drop}")
    if trials is not None and trials < 1:
        raise UsageError(f"trials must be >= 1, got {trials}")
    budget_s = parse_budget(budget)
    rule_text(confidence, True)  # validates it
    if max_latency is not None:
        latency_spec(max_latency)  # validates it before anything is measured
    if data is None or getattr(data, "meta", None) is None:
        raise DataError("auto needs data (a DataBundle with train and validation splits)", hint="pass --data D")
    if not data.meta.labelled:
        raise DataError(f"auto needs labelled data to check the accuracy SLA; {data.meta.name} has no labels",
                        hint="use a labelled dataset (fashion-mnist, imagefolder:PATH)")
    if data.val is None:
        raise DataError("auto needs a validation split: the search is steered by validation accuracy and the "
                        "test split is kept for the final figure", hint="use a val fraction > 0 (--val-fraction 0.1)")
    space = load_space(space)
    shape = unbatched(input_shape if input_shape is not None else data.meta.input_shape)
    xshape = batched(shape)
    model = copy.deepcopy(model).eval()
    _check_model(model, xshape, data)

    out = check_out(out)  # before any work: a DIR that would lose the user's files is refused
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    work.mkdir(exist_ok=True)
    storage_url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    store = open_storage(storage_url, heartbeat=worker or not storage_url.startswith("sqlite"))
    existing = optuna.get_all_study_names(store)

    if worker and STUDY_NAME not in existing:
        raise UsageError(f"there is no study to join in {_redact(storage_url)}",
                         hint="start the search once without --worker (it creates the study), then the workers")
    if STUDY_NAME in existing and not (resume or worker):
        n = len(optuna.load_study(study_name=STUDY_NAME, storage=store).trials)
        raise UsageError(f"{_redact(storage_url)} already holds a search ({n} trials)",
                         hint="pass --resume to continue it, --worker to join it, or choose another --out / --storage")

    # -- baseline, SLA, sensitivity (stored in the study so resumes and workers reuse them) ----------
    fresh = STUDY_NAME not in existing
    if not fresh:
        study = optuna.load_study(study_name=STUDY_NAME, storage=store)
        attrs = study.user_attrs
        waited = time.monotonic()
        while worker and "setup_done" not in attrs and time.monotonic() - waited < SETUP_WAIT_S:
            time.sleep(0.5)  # joined between create_study and the attributes written right after it
            attrs = study.user_attrs
        if "sla" not in attrs:
            raise EdgeslimError("the study in the storage was not finished setting up (no SLA recorded)",
                                hint="start a fresh search with another --out / --storage")
        sla, base = attrs["sla"], attrs["baseline"]
        if max_latency is not None and str(max_latency) != attrs.get("max_latency"):
            log(f"latency limit: the study's ({attrs.get('max_latency') or 'none'}), not {max_latency}")
        confidence = float(attrs.get("confidence", 0.0))
        base_correct = unpack(attrs["baseline_correct"]) if attrs.get("baseline_correct") else None
        if "val_batches" in attrs and attrs["val_batches"] != val_batches:
            log(f"validation cap: the study's ({attrs['val_batches'] or 'whole split'}), not {val_batches or 'whole split'},"
                f" so that every trial is scored on the images the SLA was set on")
            val_batches = attrs["val_batches"]
        objective, pareto = attrs["objective"], attrs["pareto"]
        # the sampler and pruner are not stored with the study: set them up as the first run did (a
        # worker draws from its own random stream, or it would propose what the first run proposes)
        study.sampler, study.pruner = _sampler_and_pruner(pareto, sla, None if worker else
                                                          int(attrs.get("seed", seed)) + len(study.trials))
        space = load_space(attrs["space"])
        block_order = list(attrs.get("block_order") or [])
        curves = attrs.get("sensitivity")
        t_trial_est = attrs.get("trial_estimate_s", 0)
        log(f"{'joining' if worker else 'resuming'} the search in {_redact(storage_url)}: SLA val >= {sla:.2f}%, "
            f"objective {'pareto' if pareto else objective}, {len(study.trials)} trial(s) so far")
    else:
        space, block_order = _depth_scan(model, data, space, xshape, log)
        study, sla, base, curves, t_trial_est, base_correct = _setup(
            model, data, space, xshape, work, store, storage_url, max_drop, min_accuracy, objective, pareto, seed,
            threads, val_batches, latency_runs, confidence, log, deadline=(t_start + budget_s, budget),
            block_order=block_order, max_latency=max_latency)
    limit = LatencyLimit.of(study.user_attrs.get("max_latency"), work / "baseline.onnx", model, xshape, threads,
                            latency_runs)
    if limit is not None and fresh:
        log(f"latency limit: {limit.text()} (fp32 baseline {base['latency_ms']:.3f} ms at the start)")
    paired = base_correct if study.user_attrs.get("max_drop") is not None else None
    clock = _Clock.of(study.user_attrs, t_start + budget_s, t_trial_est, data, val_batches, latency_runs, final_runs)
    if clock.left() < t_trial_est:
        elapsed = time.monotonic() - t_start
        raise UsageError(f"the budget ({budget}) is too short for one trial: setting up took {elapsed:.0f}s, a trial "
                         f"takes at least about {t_trial_est:.0f}s here and the final comparison about "
                         f"{clock.final_s:.0f}s", hint=f"give --budget "
                         f"{max(2, math.ceil((elapsed + 3 * t_trial_est + clock.final_s) / 60))}m or more")

    shared = worker or not storage_url.startswith("sqlite")
    if resume and not shared:  # on a shared storage RUNNING trials may be other processes' live ones:
        _recover_killed(study, log)  # the heartbeat fails the dead ones there (after the grace period)

    # -- the trial ----------------------------------------------------------------------------------
    sens_cache: dict[float, dict] = {}

    def layer_ratios_for(params: dict) -> dict | None:
        p = full_policy(params, space)
        if p["prune_ratio"] <= 0 or p["allocation"] != "sensitivity" or not curves:
            return None
        r = float(p["prune_ratio"])
        if r not in sens_cache:
            sens_cache[r] = _allocate(model, curves, r, xshape, space)
        return sens_cache[r]

    state = _BestTracker(out, study, objective, pareto, sla, spec, build, data, shape, log)
    too_slow: dict[str, tuple[float, float]] = {}  # recipe hash -> (untrained latency, limit) over the limit
    measured = _measured(study)
    who = f"{socket.gethostname()}:{os.getpid()}"  # which process measured a trial (a study has several)
    val_loader = data.val
    prune_batches = first_batches(data.val, 4)
    teacher = copy.deepcopy(model).eval()
    if greedy and fresh:
        t_g = time.monotonic()
        probe = proxy_runner(model, space, data=data, input_shape=shape, batches=prune_batches,
                             layer_ratios_for=layer_ratios_for, block_order=block_order)
        def fits_limit(params: dict) -> bool:
            steps = build_steps(params, space, layer_ratios=layer_ratios_for(params), block_order=block_order)
            lat, lat_max = _architecture_latency(model, steps, data, shape, work, limit, seed, "greedy")
            return lat <= lat_max
        seeds = greedy_seeds(model, space, sla=sla, batches=prune_batches, run_proxy=probe, log=log,
                             fast_enough=fits_limit if limit is not None else None,
                             deadline=clock.trial_end - t_trial_est)  # leaves time for one trial
        for p in seeds:
            study.enqueue_trial(p, user_attrs={"origin": "greedy"})
        log(f"greedy pass: {len(seeds)} policies queued first ({time.monotonic() - t_g:.0f}s)")

    def objective_fn(trial):
        t0 = time.monotonic()
        params = suggest(trial, space, model)
        origin = trial.user_attrs.get("origin", "search")
        steps = build_steps(params, space, layer_ratios=layer_ratios_for(params), block_order=block_order)
        h = _hash(steps)
        policy_text = describe(params, space, block_order)
        trial.set_user_attr("policy", policy_text)
        trial.set_user_attr("recipe", recipe_dict(steps, seed=seed))
        trial.set_user_attr("hash", h)
        trial.set_user_attr("origin", origin)
        trial.set_user_attr("worker", who)
        if h not in measured and shared:  # measured meanwhile by another process on the same study?
            measured.update(_measured(study))
        if h in measured:
            m = measured[h]
            for k in ("val_accuracy", "val_margin", "size_bytes", "latency_ms", "macs", "params", "feasible",
                      "constraint", "latency_limit_ms", "latency_excess", "layers"):
                if k in m:
                    trial.set_user_attr(k, m[k])
            trial.set_user_attr("cached_from", m.get("trial", None))
            _set_constraint(trial, m["constraint"], m.get("latency_excess"))
            log(f"trial {trial.number} [{origin}] {policy_text} | same recipe as trial {m.get('trial')}: reused")
            return _values(m, objective, pareto)
        if limit is not None:
            if h in too_slow:  # the same recipe was timed over the limit in this process
                lat, lat_max = too_slow[h]
                trial.set_user_attr("cached_from", "latency pre-check")
                _stop_too_slow(trial, lat, lat_max)
            try:
                _latency_precheck(trial, model, steps, data, shape, work, limit, seed)
            except optuna.TrialPruned:
                too_slow[h] = (trial.user_attrs["latency_probe_ms"], trial.user_attrs["latency_limit_ms"])
                raise
        res = _run_trial(trial, model, teacher, steps, data, shape, seed, sla, pareto, prune_batches,
                         0.0 if limit is not None else None, clock=clock)
        onnx_path = work / f"trial-{trial.number}.onnx"
        export_artifact(res, onnx_path, xshape)
        from ..measure import artifact_size, count_macs, latency, onnx_accuracy

        scored = onnx_accuracy(onnx_path, val_loader, max_batches=val_batches, threads=threads, per_image=True)
        val = scored["top1"]
        margin = accuracy_margin(scored["correct"], paired, confidence=confidence)
        size = artifact_size(onnx_path)
        if limit is None:
            lat, lat_max = latency(onnx_path, xshape, threads=threads, warmup=5, runs=latency_runs)["median_ms"], None
        else:
            lat, lat_max = limit.measure(onnx_path)
        macs = count_macs(res.float_model, xshape)[0]
        m = {"trial": trial.number, "val_accuracy": val, "size_bytes": size, "latency_ms": lat, "macs": macs,
             "params": sum(p.numel() for p in res.float_model.parameters()), "val_margin": round(margin, 4),
             "feasible": val - margin >= sla and (lat_max is None or lat <= lat_max),
             "constraint": sla - (val - margin), "layers": layer_policy(model, res),
             "seconds": round(time.monotonic() - t0, 1)}
        if lat_max is not None:
            m["latency_limit_ms"], m["latency_excess"] = round(lat_max, 5), round(lat - lat_max, 5)
        for k, v in m.items():
            trial.set_user_attr(k, v)
        _set_constraint(trial, m["constraint"], m.get("latency_excess"))
        measured[h] = {**m, "hash": h}
        clock.measured(m["seconds"])
        state.offer(trial.number, m, res, steps, onnx_path, policy_text, seed)
        log(f"trial {trial.number} [{origin}] {policy_text} | val {val:.2f}% (-{margin:.2f} at {confidence:g}: "
            f"{val - margin:.2f}; SLA {sla:.2f}) | {_fmt_size(size)} | "
            f"{lat:.3f} ms{'' if lat_max is None else f' (limit {lat_max:.3f})'} | {macs / 1e6:.2f} MMACs | {'feasible' if m['feasible'] else 'infeasible'} | "
            f"{m['seconds']:.0f}s | best: {state.summary()}")
        if onnx_path.exists() and state.best_trial != trial.number:
            onnx_path.unlink()
        return _values(m, objective, pareto)

    n_done = lambda: sum(1 for t in study.get_trials(deepcopy=False)  # noqa: E731
                         if t.state.name in ("COMPLETE", "PRUNED") and not t.user_attrs.get("unfinished"))
    fails = [0]

    def stop_cb(st, frozen):
        fails[0] = fails[0] + 1 if frozen.state.name == "FAIL" else 0
        if frozen.state.name == "FAIL":
            log(f"trial {frozen.number} failed: {frozen.user_attrs.get('error', 'see --debug')}")
        if trials is not None and n_done() >= trials:
            st.stop()
        elif fails[0] >= 3:
            log("three trials in a row failed: stopping the search")
            st.stop()
        elif not clock.room_for_trial():
            log(clock.no_room_text())
            st.stop()

    def wrapped(trial):
        try:
            return objective_fn(trial)
        except _OutOfTime as e:
            _stop_unfinished(trial, str(e), log)
        except TrainingDiverged as e:
            _stop_diverged(trial, e.message, sla, limit is not None, log)
        except optuna.TrialPruned as e:
            trial.set_user_attr("reason", str(e))
            log(f"{_trial_head(trial)} | stopped early: {e}")
            raise
        except EdgeslimError as e:
            trial.set_user_attr("error", e.message)
            raise
        except Exception as e:  # noqa: BLE001 - recorded, the search goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise

    if trials is not None and n_done() >= trials:
        log(f"the study already has {n_done()} finished trials (>= {trials}): nothing to run")
    elif not clock.room_for_trial():
        log(clock.no_room_text())
    else:
        log(f"searching: {clock.left() / 60:.1f} min left for trials ({clock.final_s:.0f}s kept for the final "
            f"comparison)" + (f", trials {n_done()}/{trials}" if trials else "")
            + f", objective {'pareto' if pareto else objective}")
        study.optimize(wrapped, timeout=max(0.01, clock.left()), callbacks=[stop_cb], catch=(Exception,),
                       gc_after_trial=True)
    if n_done() == 0 and not state.has_best():
        raise EdgeslimError(f"no trial finished within the budget ({budget})",
                            hint="raise --budget (one trial here takes about "
                                 f"{max(t_trial_est, 1):.0f}s plus fine-tuning)")
    return _finish(model, study, state, data, shape, sla, base, objective, pareto, out, spec, build, model_name,
                   threads, final_runs, storage_url, budget, trials, time.monotonic() - t_start, seed, space, log)


# -- pieces of the loop ------------------------------------------------------------------------------
def _check_model(model, xshape, data) -> None:
    from ..measure import check_fits_data

    check_fits_data(model, xshape[1:], data)


def _values(m: dict, objective: str, pareto: bool):
    if pareto:
        return m["val_accuracy"], float(m["size_bytes"]), float(m["latency_ms"])
    return float(m["size_bytes"] if objective == "size" else m["latency_ms"])


def _architecture_latency(model, steps, data, shape, work: Path, limit: "LatencyLimit", seed, name) -> tuple[float, float]:
    """Latency depends on the architecture and the format, not on the weights: (latency, limit) of
    the policy's architecture built without training (quantized without AdaRound, on one
    calibration batch)."""
    from .recipe import family

    quick = []
    for s in steps:
        fam = family(s)
        if fam in ("prune", "lowrank"):
            quick.append(dataclasses.replace(s, bn_batches=0) if hasattr(s, "bn_batches") else s)
        elif fam == "quant":
            quick.append(dataclasses.replace(s, adaround=False, calib_batches=1) if s.kind == "ptq" else s)
    res = run_steps(model, quick, data=data, input_shape=shape, seed=seed)
    path = work / f"latency-probe-{name}.onnx"
    try:
        export_artifact(res, path, (1, *shape))
        return limit.measure(path)
    finally:
        path.unlink(missing_ok=True)


def _latency_precheck(trial, model, steps, data, shape, work: Path, limit: "LatencyLimit", seed) -> None:
    """Time the trial's untrained architecture; stop it before fine-tuning when it is clearly over
    the latency limit."""
    lat, lat_max = _architecture_latency(model, steps, data, shape, work, limit, seed, str(trial.number))
    if lat > LATENCY_PRUNE_SLACK * lat_max:
        _stop_too_slow(trial, lat, lat_max)
    trial.set_user_attr("latency_probe_ms", round(lat, 5))
    trial.set_user_attr("latency_limit_ms", round(lat_max, 5))  # replaced by the trained artifact's measurement


def _stop_too_slow(trial, lat: float, lat_max: float) -> None:
    import optuna

    trial.set_user_attr("latency_probe_ms", round(lat, 5))
    trial.set_user_attr("constraint", 0.0)  # accuracy not measured: no verdict
    trial.set_user_attr("latency_limit_ms", round(lat_max, 5))
    trial.set_user_attr("latency_excess", round(lat - lat_max, 5))
    _set_constraint(trial, 0.0, lat - lat_max)
    raise optuna.TrialPruned(f"its architecture runs in {lat:.3f} ms untrained, over the latency limit "
                             f"{lat_max:.3f} ms (x{LATENCY_PRUNE_SLACK:g})")


class _OutOfTime(Exception):
    """Raised inside a trial when the search's time is up: the trial is recorded as unfinished."""


@dataclasses.dataclass
class _Clock:
    """The search's time. Trials must be measured by ``trial_end``: the budget's end less ``final_s``,
    what the final side-by-side comparison takes (estimated from the baseline's measurement at the
    setup). A running trial checks it between fine-tuning epochs, and no optimizer step of a trial
    (AdaRound's too, which has no epochs) runs after it; a new trial starts only while the cheapest
    trial measured so far still fits."""

    trial_end: float
    final_s: float
    measure_s: float  # export, validation and timing of one artifact
    cheapest_s: float  # the cheapest measured trial (the setup's estimate before the first)

    @classmethod
    def of(cls, attrs: dict, end: float, t_trial: float, data, val_batches, latency_runs, final_runs) -> "_Clock":
        t = attrs.get("timing")
        if not t:  # a study set up before timings were stored
            return cls(end - t_trial, t_trial, t_trial, t_trial)
        n_val = _n_batches(data.val) if val_batches is None else min(_n_batches(data.val), val_batches)
        n_test = _n_batches(data.test if data.test is not None else data.val)
        per_run = t["latency_s"] / (latency_runs + 5)  # the setup timed latency_runs + 5 warm-up runs
        final = FINAL_SLACK * (t["export_s"] + 2 * t["val_s"] * n_test / n_val
                               + 2 * per_run * (final_runs + 10)) + t.get("render_s", 0.0) + FINAL_FIXED_S
        return cls(end - final, final, 1.2 * (t["export_s"] + t["val_s"] + t["latency_s"]), t_trial)

    def left(self) -> float:
        return self.trial_end - time.monotonic()

    def check(self, where: str, need: float = 0.0) -> None:
        if self.left() < need:
            raise _OutOfTime(f"the search's time ran out {where}")

    @contextlib.contextmanager
    def guard(self):
        """Inside the block, an optimizer step after ``trial_end`` raises _OutOfTime."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def hook(*_):
            if time.monotonic() > self.trial_end:
                raise _OutOfTime("the search's time ran out while it was training or quantizing")

        handle = register_optimizer_step_post_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def room_for_trial(self) -> bool:
        return self.left() >= self.cheapest_s

    def measured(self, seconds: float) -> None:
        self.cheapest_s = min(self.cheapest_s, seconds)

    def no_room_text(self) -> str:
        return (f"{max(0.0, self.left()):.0f}s left before the final comparison, less than the cheapest trial "
                f"({self.cheapest_s:.0f}s): no new trial")


def _n_batches(loader) -> int:
    try:
        return max(1, len(loader))
    except TypeError:  # an iterable loader of unknown length
        return 1


def _trial_head(trial) -> str:
    return f"trial {trial.number} [{trial.user_attrs.get('origin', 'search')}] {trial.user_attrs.get('policy')}"


def _stop_unfinished(trial, why: str, log) -> None:
    """The search's time ran out inside the trial: pruned, marked unfinished, never a result."""
    import optuna

    trial.set_user_attr("unfinished", True)
    trial.set_user_attr("reason", why)
    log(f"{_trial_head(trial)} | unfinished: {why}")
    raise optuna.TrialPruned(why) from None


def _stop_diverged(trial, why: str, sla: float, has_limit: bool, log) -> None:
    """A fine-tuning whose loss became NaN/inf leaves no usable model: an infeasible trial (its
    accuracy counted as 0, so that the constrained sampler learns from it), not a failure."""
    import optuna

    short = max(float(sla), 1.0)
    trial.set_user_attr("diverged", True)
    trial.set_user_attr("reason", why)
    trial.set_user_attr("constraint", short)
    if has_limit:
        trial.set_user_attr("latency_excess", 0.0)  # latency not measured: no verdict
    _set_constraint(trial, short, 0.0 if has_limit else None)
    log(f"{_trial_head(trial)} | infeasible: {why}")
    raise optuna.TrialPruned(why) from None


def _run_trial(trial, model, teacher, steps, data, shape, seed, sla, pareto, batches, latency_excess=None, *,
               clock: "_Clock | None" = None) -> Compressed:
    """Run the recipe. Between fine-tuning epochs, and after the last float step, the float accuracy
    on a few validation batches is reported, so that a clearly infeasible trial stops early: mid-way
    when it is more than EPOCH_PRUNE_MARGIN points under the SLA (the remaining epochs, at a lower
    learning rate, rarely win that back), before quantization, export and full validation when it
    is more than PRUNE_MARGIN under. With a ``clock``, the search's time is checked at the same
    points (``_OutOfTime``: the trial is unfinished)."""
    import optuna

    from ..train.loop import on_epoch_end

    n_images = sum(len(y) for _, y in batches)
    reports = [0]

    def report(acc: float, margin: float, where: str, *, use_pruner: bool = False) -> None:
        trial.report(acc, reports[0])
        reports[0] += 1
        out = acc < sla - margin
        if use_pruner and not pareto:
            out = trial.should_prune()  # the study's ThresholdPruner (sla - PRUNE_MARGIN)
        if out:
            trial.set_user_attr("constraint", sla - acc)
            if latency_excess is not None:
                trial.set_user_attr("latency_excess", latency_excess)
            _set_constraint(trial, sla - acc, latency_excess)  # latency: not measured (0 = no verdict)
            raise optuna.TrialPruned(f"float accuracy {acc:.2f}% on {n_images} validation images {where} is more "
                                     f"than {margin:g} points under the SLA")

    def between_epochs(epoch: int, m) -> None:
        acc = quick_accuracy(m, batches)
        trial.set_user_attr("epoch_val_sample", trial.user_attrs.get("epoch_val_sample", []) + [acc])
        report(acc, EPOCH_PRUNE_MARGIN, f"after fine-tuning epoch {epoch}")
        if clock is not None:  # the rest of the trial (its measurement at least) must still fit
            clock.check(f"after fine-tuning epoch {epoch}", clock.measure_s)

    float_steps = [s for s in steps if s.kind not in ("ptq", "qat")]
    q_steps = steps[len(float_steps):]
    guarded = lambda: clock.guard() if clock is not None else contextlib.nullcontext()  # noqa: E731
    with guarded(), on_epoch_end(between_epochs):
        res = run_steps(model, float_steps, data=data, input_shape=shape, teacher=teacher, seed=seed)
    if float_steps:
        acc = quick_accuracy(res.model, batches)
        trial.set_user_attr("float_val_sample", acc)
        report(acc, PRUNE_MARGIN, "before quantization", use_pruner=True)
    if clock is not None:
        clock.check("before quantization and measurement")
    if q_steps:
        with guarded():
            q = run_steps(res.model, q_steps, data=data, input_shape=shape, teacher=teacher, seed=seed)
        res = Compressed(q.model, res.model, True, list(steps), res.details + q.details)
    return res


def _setup(model, data, space, xshape, work, store, storage_url, max_drop, min_accuracy, objective, pareto, seed,
           threads, val_batches, latency_runs, confidence, log, deadline=(math.inf, None), block_order=(),
           max_latency=None):
    import optuna

    from ..export import onnx as export_onnx
    from ..measure import artifact_size, latency, onnx_accuracy
    from ..train import fit

    ts = [time.monotonic()]
    b_path = work / "baseline.onnx"
    export_onnx(model, b_path, input_shape=xshape)
    ts.append(time.monotonic())
    scored = onnx_accuracy(b_path, data.val, max_batches=val_batches, threads=threads, per_image=True)
    b_val, b_correct = scored["top1"], scored["correct"]
    b_size = artifact_size(b_path)
    ts.append(time.monotonic())
    b_lat = latency(b_path, xshape, threads=threads, warmup=5, runs=latency_runs)["median_ms"]
    ts.append(time.monotonic())
    t_eval = ts[-1] - ts[0]
    timing = {k: round(b - a, 3) for k, a, b in zip(("export_s", "val_s", "latency_s"), ts, ts[1:])}
    timing["render_s"] = _time_render(work)
    if deadline[0] - time.monotonic() < 1.2 * t_eval:  # not even one export + validation fits
        raise UsageError(f"the budget ({deadline[1]}) is too short for one trial: measuring one artifact takes "
                         f"about {t_eval:.0f}s here", hint=f"give --budget {max(2, math.ceil(10 * t_eval / 60))}m or more")
    sla = b_val - max_drop if max_drop is not None else float(min_accuracy)
    if max_drop is not None and max_drop >= b_val:
        raise UsageError(f"--max-drop {max_drop:g} is at or above the baseline's validation accuracy ({b_val:.2f}%): "
                         "every model, even one that guesses, would meet it",
                         hint=f"give a drop below {b_val:.2f} points (e.g. 0.5)")
    base = {"val_accuracy": b_val, "size_bytes": b_size, "latency_ms": b_lat}
    log(f"baseline (fp32 ONNX): val {b_val:.2f}% | {_fmt_size(b_size)} | {b_lat:.3f} ms -> SLA: val accuracy >= "
        f"{sla:.2f}%" + (f" (baseline - {max_drop:g} points)" if max_drop is not None else "")
        + (f", {rule}, over {len(b_correct)} validation images" if (rule := rule_text(confidence, max_drop is not None))
           else ""))
    # one fine-tuning step, timed, to size a trial
    probe = copy.deepcopy(model)
    t1 = time.monotonic()
    fit(probe, data, epochs=1, max_batches=2, progress=False, seed=seed)
    t_step = (time.monotonic() - t1) / 2
    curves = None
    if "sensitivity" in space.allocation and any(r > 0 for r in space.prune_ratio):
        from ..pruning.sensitivity import analyze

        t2 = time.monotonic()
        try:
            # coarse on purpose (3 ratios, 2 batches): it ranks groups, the trials measure the result
            c = analyze(model, data, example_shape=xshape, importance=space.importance, ratios=(0.25, 0.5, 0.75),
                        max_batches=2)
            curves = {"layers": c["layers"], "ratios": c["ratios"], "rows": c["rows"], "baseline": c["baseline"]}
            log(f"sensitivity scan of {len(c['layers'])} channel groups: {time.monotonic() - t2:.0f}s")
        except EdgeslimError as e:
            log(f"sensitivity scan unavailable ({e.message}); the sensitivity allocation falls back to uniform")
    # the cheapest trial exports, validates and times one artifact (plus fine-tuning when every policy does)
    min_ft = min(space.finetune_epochs)
    t_trial = t_eval * 1.2 + min_ft * (space.finetune_batches or len(data.train)) * t_step
    sampler, pruner = _sampler_and_pruner(pareto, sla, seed)
    directions = ["maximize", "minimize", "minimize"] if pareto else ["minimize"]
    try:
        study = optuna.create_study(study_name=STUDY_NAME, storage=store, directions=directions, sampler=sampler,
                                    pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:  # another run created it while this one set up
        raise UsageError(f"{_redact(storage_url)} already holds a search (started while this run set up)",
                         hint="pass --worker to join it, or choose another --out / --storage") from None
    for k, v in {"sla": sla, "baseline": base, "objective": objective, "pareto": pareto, "space": space.to_dict(),
                 "sensitivity": curves, "trial_estimate_s": round(t_trial, 1), "timing": timing, "max_drop": max_drop,
                 "min_accuracy": min_accuracy, "seed": seed, "confidence": confidence, "val_batches": val_batches,
                 "baseline_correct": pack(b_correct), "block_order": list(block_order),
                 "max_latency": None if max_latency is None else str(max_latency).strip().lower(),
                 "setup_done": True}.items():  # last: a joining worker waits for it
        study.set_user_attr(k, v)
    return study, sla, base, curves, t_trial, b_correct


def _time_render(work: Path) -> float:
    """Seconds an (empty) Pareto plot takes, drawn once after matplotlib is loaded: it loads now
    (seconds on a busy machine), not in the time kept for the end."""
    from ..report import pareto_plot

    p = work / "render-probe.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        t = time.monotonic()
        pareto_plot([], p, sla=0.0)
    except Exception:  # noqa: BLE001 - a plot must not stop the search; the final one reports its error
        return 0.0
    finally:
        p.unlink(missing_ok=True)
    return round(time.monotonic() - t, 3)


def _depth_scan(model, data, space: SearchSpace, xshape, log) -> tuple[SearchSpace, list[str]]:
    """The order in which depth pruning removes residual blocks (least loss increase first, on a
    few training batches), once per study; a model without removable blocks drops the dimension."""
    if not any(r > 0 for r in space.block_ratio):
        return space, []
    from ..pruning.depth import removal_order, residual_blocks
    from ..pruning.importance import calibration_batches

    t = time.monotonic()
    example = torch.randn(xshape, generator=torch.Generator().manual_seed(0))
    cands = residual_blocks(model, example)  # before reading any data: no blocks, no batches drawn
    order = [o["block"] for o in removal_order(model, example, calibration_batches(data, 8), candidates=cands)] \
        if cands else []
    if not order:
        log("depth: no removable residual block in this model; block_ratio is fixed at 0")
        return dataclasses.replace(space, block_ratio=(0.0,)), []
    log(f"depth scan: {len(order)} removable residual blocks, removal order {', '.join(order)} "
        f"({time.monotonic() - t:.0f}s)")
    # ratios that remove the same blocks are one policy: keep the first of each count, so that neither
    # TPE nor the greedy latency walk meets one architecture twice (eighths of 7 blocks: 0.5 and 0.625)
    by_count: dict[int, float] = {}
    for r in space.block_ratio:
        by_count.setdefault(len(blocks_removed(r, order)), r)
    return dataclasses.replace(space, block_ratio=tuple(by_count.values())), order


def _measured(study) -> dict[str, dict]:
    from optuna.trial import TrialState

    return {t.user_attrs["hash"]: dict(t.user_attrs) for t in study.get_trials(deepcopy=False,
                                                                                 states=(TrialState.COMPLETE,))
            if "hash" in t.user_attrs and "constraint" in t.user_attrs}


def _sampler_and_pruner(pareto: bool, sla: float, seed: int | None):
    import optuna

    if pareto:  # multi-objective: no intermediate values, infeasible trials are stopped by _run_trial
        return make_sampler("nsga2", seed=seed, constraints=_constraints), optuna.pruners.NopPruner()
    return (make_sampler("tpe", seed=seed, constraints=_constraints),
            optuna.pruners.ThresholdPruner(lower=sla - PRUNE_MARGIN))


def _set_constraint(trial, value: float, latency_excess: float | None = None) -> None:
    """Constraints for the sampler (feasible when <= 0): the accuracy bound's shortfall in points and,
    when the study has a latency limit, the latency over it in ms."""
    from .strategies import native_constraints

    if native_constraints():
        trial.set_constraint("accuracy_sla", float(value))
        if latency_excess is not None:
            trial.set_constraint("max_latency", float(latency_excess))


def _constraints(frozen) -> tuple[float, ...]:
    a = frozen.user_attrs
    acc = (float(a.get("constraint", 1e9)),)
    return acc + ((float(a["latency_excess"]),) if "latency_excess" in a else ())


def latency_spec(spec: Any) -> tuple[float | None, float | None]:
    """(milliseconds, None) for '0.2' / '0.2ms', (None, N) for 'Nx' (a speed-up over the baseline)."""
    text = str(spec).strip().lower()
    try:
        v = float(text[:-1] if text.endswith("x") else text[:-2] if text.endswith("ms") else text)
        if not v > 0 or not math.isfinite(v):
            raise ValueError
    except ValueError:
        raise UsageError(f"cannot read the latency limit {spec!r}",
                         hint="give milliseconds (0.12, 0.12ms) or a speed-up over the fp32 baseline (3x)") from None
    return (None, v) if text.endswith("x") else (v, None)


@dataclasses.dataclass
class LatencyLimit:
    """The study's latency constraint. A speed-up ('3x') is checked against the fp32 baseline timed
    alongside each candidate (the same rounds of fresh sessions), not against one figure from the
    start: on a shared machine both drift, their ratio much less."""

    spec: str
    ms: float | None
    speedup: float | None
    baseline: Path
    xshape: tuple
    threads: int
    runs: int

    @classmethod
    def of(cls, spec, baseline: Path, model, xshape, threads: int, runs: int) -> "LatencyLimit | None":
        if spec is None:
            return None
        ms, speedup = latency_spec(spec)
        if speedup is not None and not baseline.is_file():  # a worker with its own --out
            from ..export import onnx as export_onnx

            with atomic_path(baseline) as tmp:
                export_onnx(model, tmp, input_shape=xshape)
        return cls(str(spec), ms, speedup, baseline, tuple(xshape), threads, runs)

    def text(self) -> str:
        return (f"ONNX Runtime latency <= {self.ms:.3f} ms" if self.ms is not None else
                f"at least {self.speedup:g}x faster than the fp32 baseline, timed alongside each candidate")

    def measure(self, path: Path) -> tuple[float, float]:
        """(latency of ``path`` in ms, the limit in ms for it)."""
        from ..measure import bench, latency

        if self.ms is not None:
            return latency(path, self.xshape, threads=self.threads, warmup=5, runs=self.runs)["median_ms"], self.ms
        b, c = bench([self.baseline, path], self.xshape, threads=self.threads, warmup=5, runs=self.runs, rounds=3)
        return c["median_ms"], b["median_ms"] / self.speedup


def _allocate(model, curves, ratio: float, xshape, space: SearchSpace) -> dict[str, float]:
    """Per-group ratios from the sensitivity curves, at the MACs the uniform ratio reaches."""
    from ..pruning.importance import Magnitude
    from ..pruning.sensitivity import allocate
    from ..pruning.structured import macs_of, prune_once

    example = torch.randn(xshape, generator=torch.Generator().manual_seed(0))
    m = copy.deepcopy(model)
    prune_once(m, example, ratio=ratio, importance=Magnitude(1))
    target = macs_of(m, example) / macs_of(model, example)
    try:
        return allocate(model, curves, min(0.999, target), example=example, max_ratio=0.9)
    except UsageError:
        return {}


def _recover_killed(study, log) -> None:
    """Trials left RUNNING by a killed process: mark them failed and queue their policy again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"origin": "resumed"})
        log(f"trial {t.number} was interrupted: queued its policy again")


class _BestTracker:
    """Keeps the best feasible trial of this process on disk at every moment, in DIR/.work/best (search
    state, not the result: DIR itself changes only when the search finishes, all at once)."""

    def __init__(self, out: Path, study, objective, pareto, sla, spec, build, data, shape, log):
        self.dir = out / ".work" / "best"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.objective, self.pareto, self.sla = objective, pareto, sla
        self.spec, self.build, self.data, self.shape, self.log = spec, build, data, shape, log
        self.best_trial: int | None = None
        self.best: dict | None = None
        self.result: Compressed | None = None
        self.steps = None
        bj = self.dir / "best.json"
        if bj.is_file():  # resumed: the artifact of the previous best is already there
            try:
                b = json.loads(bj.read_text())
                self.best_trial, self.best = b["trial"], b["metrics"]
            except (OSError, ValueError, KeyError):
                pass

    def key(self, m: dict):
        primary = m["size_bytes"] if self.objective == "size" else m["latency_ms"]
        return (primary, -m["val_accuracy"])

    def has_best(self) -> bool:
        return self.best is not None

    def summary(self) -> str:
        if self.best is None:
            return "none feasible yet"
        return (f"trial {self.best_trial} {_fmt_size(self.best['size_bytes'])} {self.best['latency_ms']:.3f} ms "
                f"val {self.best['val_accuracy']:.2f}%")

    def offer(self, number, m, res: Compressed, steps, onnx_path: Path, policy_text, seed) -> None:
        if not m["feasible"] or (self.best is not None and self.key(m) >= self.key(self.best)):
            return
        self.best_trial, self.best, self.result, self.steps = number, dict(m), res, steps
        with atomic_path(self.dir / "model.onnx") as tmp:
            shutil.copyfile(onnx_path, tmp)
        atomic_write_text(self.dir / "winner.yaml", _winner_yaml(steps, seed, number, m, policy_text))
        _swap_checkpoint(self.dir, res, self.spec, self.build, self.data, self.shape)
        write_json(self.dir / "best.json", {"trial": number, "policy": policy_text,
                                            "metrics": {k: v for k, v in m.items() if k != "layers"},
                                            "recipe": recipe_dict(steps, seed=seed)})


def _winner_yaml(steps, seed, number, m, policy_text) -> str:
    head = (f"# edgeslim auto winner: trial {number}, {policy_text}\n"
            f"# validation accuracy {m['val_accuracy']:.2f}%, {m['size_bytes']} bytes, {m['latency_ms']:.3f} ms\n"
            f"# replay: edgeslim compress MODEL --recipe winner.yaml --data D --out DIR\n")
    return head + recipe_yaml(steps, seed=seed)


def _swap_checkpoint(out: Path, res: Compressed, spec, build, data, shape) -> None:
    """DIR/checkpoint holds the float winner; replaced as a whole (build aside, then rename)."""
    final = out / "checkpoint"
    if res.quantized or not spec:
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        return
    from .. import models

    tmp = out / ".checkpoint.new"
    shutil.rmtree(tmp, ignore_errors=True)
    models.save(res.model, tmp, spec=spec, input_shape=shape, build=build,
                classes=list(data.meta.classes) if data.meta.labelled else None, extra={"command": "auto"})
    old = out / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(), "origin": a.get("origin"),
                     "policy": a.get("policy"), "val_accuracy": a.get("val_accuracy"), "val_margin": a.get("val_margin"),
                     "float_val_sample": a.get("float_val_sample"), "size_bytes": a.get("size_bytes"),
                     "latency_ms": a.get("latency_ms"), "latency_probe_ms": a.get("latency_probe_ms"),
                     "latency_limit_ms": a.get("latency_limit_ms"),
                     "macs": a.get("macs"), "feasible": a.get("feasible"),
                     "seconds": a.get("seconds"), "error": a.get("error"), "reason": a.get("reason"),
                     "diverged": a.get("diverged", False), "unfinished": a.get("unfinished", False),
                     "worker": a.get("worker")})
    return rows


def _finish(model, study, state: _BestTracker, data, shape, sla, base, objective, pareto, out: Path, spec, build,
            model_name, threads, final_runs, storage_url, budget, trials, seconds, seed, space, log) -> AutoResult:
    rows = _trial_rows(study)
    feasible = [r for r in rows if r["state"] == "complete" and r["feasible"]]
    best_row = min(feasible, key=lambda r: ((r["size_bytes"] if objective == "size" else r["latency_ms"]),
                                            -r["val_accuracy"])) if feasible else None
    details: dict[str, Any] = {
        "split": "test", "search_split": "val", "sla": {"min_val_accuracy": sla, "baseline_val_accuracy":
                                                         base["val_accuracy"], "max_drop": study.user_attrs.get("max_drop"),
                                                         "min_accuracy": study.user_attrs.get("min_accuracy"),
                                                         "confidence": study.user_attrs.get("confidence", 0.0),
                                                         "max_latency": study.user_attrs.get("max_latency"),
                                                         "rule": rule_text(float(study.user_attrs.get("confidence", 0.0)),
                                                                           study.user_attrs.get("max_drop") is not None)},
        "objective": "pareto (accuracy, size, latency)" if pareto else objective,
        "strategy": ("greedy + " if any(r["origin"] == "greedy" for r in rows) else "")
                    + ("NSGA-II" if pareto else "TPE"),
        "storage": _redact(storage_url), "budget": str(budget), "trials_budget": trials,
        "search_seconds": round(seconds, 1), "baseline_search": base, "trials": rows,
        "space": space.to_dict(), "notes": [],
    }
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in ("complete", "pruned", "fail", "waiting")}
    counts.update({k: sum(1 for r in rows if r[k]) for k in ("diverged", "unfinished")})
    conf = float(study.user_attrs.get("confidence", 0.0))
    rule = rule_text(conf, study.user_attrs.get("max_drop") is not None)
    bound = f", {rule}" if rule else ""
    limit_spec = study.user_attrs.get("max_latency")
    if limit_spec is not None:
        bound += f"; latency limit {limit_spec}"
    details["notes"].append(f"{len(rows)} trials: {counts['complete']} measured, "
                            f"{counts['pruned'] - counts['diverged'] - counts['unfinished']} stopped early by the "
                            f"pruner, {counts['diverged']} diverged (infeasible), {counts['unfinished']} unfinished "
                            f"when the time ran out, {counts['fail']} failed"
                            + (f", {counts['waiting']} queued but not run" if counts["waiting"] else "")
                            + f"; {len(feasible)} met the SLA on the validation split")
    from ..core.outdir import OutDir

    with OutDir(out, carry=CARRIED) as stage:  # DIR changes all at once; the study and its cache carry over
        return _write_final(model, study, state, data, shape, sla, base, out, stage, spec, build, model_name,
                            threads, final_runs, seed, details, rows, best_row, bound, limit_spec, log)


def _write_final(model, study, state, data, shape, sla, base, out, stage, spec, build, model_name, threads,
                 final_runs, seed, details, rows, best_row, bound, limit_spec, log) -> AutoResult:
    """Everything of the result into ``stage`` (swapped in as ``out`` afterwards)."""
    if best_row is None:
        details["notes"].insert(0, f"no policy met the SLA (validation accuracy >= {sla:.2f}%{bound}): the baseline is kept")
        from .recipe import Compressed as C

        res = C(model, model, False, [], [])
        closest = _closest_miss(study, rows, sla)
        if closest is not None:
            details["closest"] = closest
            atomic_write_text(stage / "closest.yaml", _closest_yaml(closest))
            details["notes"].insert(1, closest_text(closest) + f"; its recipe: {out}/closest.yaml")
        report = write_outputs(model, res, stage, data=data, input_shape=shape, spec=spec, build=build,
                               model_name=model_name, command="auto", threads=threads, runs=final_runs,
                               extra_details=details)
        _render(report, rows, sla, stage, None, log)
        log(f"no policy met the SLA (val >= {sla:.2f}%{bound}): kept the baseline in {out}/model.onnx")
        if closest is not None:
            log(closest_text(closest) + f"; replay it with: edgeslim compress MODEL --recipe {out}/closest.yaml")
        return AutoResult(model, report, False, out, None, None)
    number = best_row["trial"]
    trial = study.trials[number]
    recipe = trial.user_attrs["recipe"]
    if state.best_trial == number and state.result is not None:
        res = state.result
    else:  # found by another worker or a killed run: rebuild it from its recipe (deterministic)
        from .recipe import load_recipe

        log(f"rebuilding the winner (trial {number}) from its recipe")
        steps, _ = load_recipe(recipe)
        res = run_steps(model, steps, data=data, input_shape=shape, seed=seed)
        p = out / ".work" / f"trial-{number}.onnx"
        export_artifact(res, p, (1, *shape))
        m = {k: trial.user_attrs[k] for k in ("val_accuracy", "size_bytes", "latency_ms", "macs", "feasible")}
        state.best, state.best_trial = None, None
        state.offer(number, m, res, steps, p, trial.user_attrs.get("policy", ""), seed)
    details.update({"best_trial": number, "policy": trial.params, "policy_text": trial.user_attrs.get("policy"),
                    "recipe": recipe, "val_accuracy": trial.user_attrs.get("val_accuracy")})
    shutil.copyfile(state.dir / "winner.yaml", stage / "winner.yaml")
    report = write_outputs(model, res, stage, data=data, input_shape=shape, spec=spec, build=build,
                           model_name=model_name, command="auto", threads=threads, runs=final_runs,
                           extra_details=details, artifact=state.dir / "model.onnx")
    test_acc = report.result.get("accuracy")
    base_test = (report.baseline or {}).get("accuracy")
    if test_acc is not None and base_test is not None:
        within = test_acc >= base_test - (study.user_attrs.get("max_drop") or 0) if study.user_attrs.get("max_drop") is not None \
            else test_acc >= sla
        report.details["test_within_sla"] = bool(within)
        report.details["notes"].append(
            f"test split (never seen by the search): {test_acc:.2f}% vs baseline {base_test:.2f}% -> "
            + ("within" if within else "OUTSIDE") + " the SLA")
        report.write(stage)
    final_lat, final_base = report.result.get("latency_ms"), (report.baseline or {}).get("latency_ms")
    if limit_spec is not None and final_lat and final_base:
        ms, speedup = latency_spec(limit_spec)
        ok = final_lat <= ms if ms is not None else final_base / final_lat >= speedup
        report.details["latency_within_limit"] = bool(ok)
        report.details["notes"].append(
            f"latency limit {limit_spec} (checked on each trial's own measurement): the final side-by-side "
            f"comparison measured {final_lat:.3f} ms against the baseline's {final_base:.3f} ms "
            f"({final_base / final_lat:.2f}x) -> " + ("within" if ok else "OUTSIDE") + " the limit")
        report.write(stage)
    _render(report, rows, sla, stage, number, log)
    log(f"winner: trial {number} {trial.user_attrs.get('policy')} -> {out}/model.onnx")
    return AutoResult(res.model, report, True, out, number, recipe)


def _closest_miss(study, rows: list[dict], sla: float) -> dict | None:
    """When nothing is feasible: the measured trial whose validation accuracy (its lower bound, with
    a confidence rule) came nearest the SLA, among those within their latency limit where the study
    has one, so that a user sees what the SLA costs and can replay it (DIR/closest.yaml)."""
    cands = [r for r in rows if r["state"] == "complete" and r["val_accuracy"] is not None
             and (r["latency_limit_ms"] is None or (r["latency_ms"] is not None and r["latency_ms"] <= r["latency_limit_ms"]))]
    if not cands:
        return None
    short = lambda r: sla - (r["val_accuracy"] - (r["val_margin"] or 0.0))  # noqa: E731
    r = min(cands, key=lambda r: (short(r), r["size_bytes"] or 0))
    return {**{k: r[k] for k in ("trial", "policy", "val_accuracy", "val_margin", "size_bytes", "latency_ms",
                                 "latency_limit_ms")},
            "points_under_sla": round(short(r), 3), "recipe": study.trials[r["trial"]].user_attrs.get("recipe")}


def closest_text(c: dict) -> str:
    margin = f" (lower bound {c['val_accuracy'] - c['val_margin']:.2f}%)" if c.get("val_margin") else ""
    return (f"closest: trial {c['trial']}, {c['policy']}: validation {c['val_accuracy']:.2f}%{margin}, "
            f"{c['points_under_sla']:.2f} points under the SLA, {c['size_bytes']:,} bytes, {c['latency_ms']:.3f} ms")


def _closest_yaml(c: dict) -> str:
    import yaml

    return (f"# edgeslim auto: no policy met the SLA; {closest_text(c)}\n"
            "# replay: edgeslim compress MODEL --recipe closest.yaml --data D --out DIR\n"
            + yaml.safe_dump(c["recipe"], sort_keys=False))


def _render(report, rows, sla, out: Path, best, log) -> None:
    from ..report import pareto_plot, write_html

    try:
        png = pareto_plot(rows, out / "pareto.png", sla=sla, best=best)
        report.details["pareto_plot"] = png.name
    except Exception as e:  # noqa: BLE001 - a plot must not lose the search
        log(f"could not draw the Pareto plot: {e}")
    report.write(out)
    from ..report import write_markdown

    write_markdown(report, out / "report.md")
    write_html(report, out / "report.html")
