"""Setting a fresh study up (the baseline measured, the SLA set, the scans that steer the search run
once and stored) or reading the state of one that exists (resume, worker)."""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import torch

from ..core.errors import DataError, EdgeslimError, UsageError
from .config import AutoConfig
from .. import metrics
from .confidence import kind_of, pack, rule_text
from .evaluator import Evaluator
from .scoring import named, study_metric, value_text, what
from .space import SearchSpace, blocks_removed, load_space
from .store import Store, StudyState, redact
from .strategies import make_sampler
from .trial import constraint_values


def sampler_and_pruner(pareto: bool, sla: float, seed: int | None, names: list[str], margin: float):
    import optuna

    values = constraint_values(names)
    if pareto:  # multi-objective: no intermediate values, infeasible trials are stopped by the trial runner
        return make_sampler("nsga2", seed=seed, constraints=values), optuna.pruners.NopPruner()
    return make_sampler("tpe", seed=seed, constraints=values), optuna.pruners.ThresholdPruner(lower=sla - margin)


def constraint_names(state_or_cfg) -> list[str]:
    """The names of the study's constraints, in constraints_of's order (Optuna's constraint values)."""
    from .constraints import constraints_of

    return [c.name for c in constraints_of(state_or_cfg)]


def fresh(model, data, cfg: AutoConfig, store: Store, ev: Evaluator, work: Path, end: float,
          log: Callable[[str], None]) -> StudyState:
    """Measure the baseline, set the SLA, scan depth and sensitivity, create the study with its state."""
    space, order = depth_scan(model, data, runtime_formats(load_space(cfg.space), cfg.runtime, log), ev.xshape, log)
    base, per_sample, timing = ev.baseline(model, ev.artifact(work, "baseline"))
    name = ev.scorer.name
    if base.score is None:
        raise DataError(f"metric {name} gave no value for the baseline on the validation split (no labels or no "
                        "ground truth there)", hint="the search needs labelled validation data")
    t_eval = sum(timing.values())
    timing["render_s"] = time_render(work)
    if end - time.monotonic() < 1.2 * t_eval:  # not even one export + validation fits
        raise UsageError(f"the budget ({cfg.budget}) is too short for one trial: measuring one artifact takes "
                         f"about {t_eval:.0f}s here", hint=f"give --budget {max(2, math.ceil(10 * t_eval / 60))}m or more")
    drop = cfg.drop
    if drop is not None and drop >= base.score and name in metrics.names():  # registered: 0..100 points
        raise UsageError(f"--max-drop {drop:g} is at or above the baseline's validation {what(name)} "
                         f"({value_text(name, base.score)}): every model, even one that guesses, would meet it",
                         hint=f"give a drop below {base.score:.2f} points (e.g. 0.5)")
    sla = base.score - drop if drop is not None else float(cfg.min_accuracy)
    packed = pack(per_sample)
    rule = rule_text(cfg.confidence, drop is not None, kind_of(packed))
    over = f", over {len(per_sample)} validation images" if per_sample is not None else ""
    log(f"baseline (fp32 {ev.runtime}): val {named(name, base.score)} | {base.size_bytes / 1e3:.1f} kB | "
        f"{base.latency_ms:.3f} ms -> SLA: val {what(name)} >= {value_text(name, sla)}"
        + (f" (baseline - {drop:g} points)" if drop is not None else "") + (f", {rule}{over}" if rule else ""))
    curves = sensitivity_scan(model, data, space, ev.xshape, log, ev.scorer)
    state = StudyState(sla=sla, baseline={"val_accuracy": base.score, "size_bytes": base.size_bytes,
                                          "latency_ms": base.latency_ms},
                       baseline_correct=packed, objective=cfg.objective, pareto=cfg.pareto,
                       space=space.to_dict(), block_order=tuple(order), sensitivity=curves, max_drop=drop,
                       min_accuracy=cfg.min_accuracy, max_latency=cfg.limit_text,
                       max_memory=None if cfg.max_memory is None else str(cfg.max_memory), confidence=cfg.confidence,
                       val_batches=cfg.val_batches, seed=cfg.seed, timing=timing, metric=name,
                       runtime=cfg.runtime, prune_margin=cfg.prune_margin, epoch_prune_margin=cfg.epoch_prune_margin,
                       trial_estimate_s=round(trial_estimate(model, data, space, t_eval, cfg.seed), 1))
    store.create(state, *sampler_and_pruner(cfg.pareto, sla, cfg.seed, constraint_names(state), cfg.prune_margin))
    return state


def existing(cfg: AutoConfig, store: Store, log: Callable[[str], None], metric=None) -> StudyState:
    """The state of the study in the storage; where this run's options differ, the study's win, except
    the metric: ``metric`` (this run's, resolved, or None) other than the study's is refused."""
    state = store.load(wait=cfg.worker)
    study_metric(metric, state.metric)
    if cfg.max_latency is not None and cfg.limit_text != state.max_latency:
        log(f"latency limit: the study's ({state.max_latency or 'none'}), not {cfg.max_latency}")
    if state.val_batches != cfg.val_batches:
        log(f"validation cap: the study's ({state.val_batches or 'whole split'}), not {cfg.val_batches or 'whole split'},"
            f" so that every trial is scored on the images the SLA was set on")
    study = store.study
    # the sampler and pruner are not stored with the study: set them up as the first run did (a worker
    # draws from its own random stream, or it would propose what the first run proposes)
    study.sampler, study.pruner = sampler_and_pruner(state.pareto, state.sla, None if cfg.worker else
                                                     state.seed + len(study.trials), constraint_names(state), state.prune_margin)
    log(f"{'joining' if cfg.worker else 'resuming'} the search in {redact(store.url)}: SLA val "
        f"{'' if state.metric == 'top1' else state.metric + ' '}>= {value_text(state.metric, state.sla)}, "
        f"objective {'pareto' if state.pareto else state.objective}, {len(study.trials)} trial(s) so far")
    return state


def runtime_formats(space: SearchSpace, runtime: str, log) -> SearchSpace:
    """The space's formats that the runtime deploys (``Runtime.weight_bits``): a 4-bit choice on a
    runtime whose int8 path takes 8-bit weights only is dropped, with a line saying so."""
    from .. import runtimes

    allowed = getattr(runtimes.get(runtime), "weight_bits", None)
    if allowed is None:
        return space
    bits = tuple(b for b in space.bits if b == "float" or int(b) in allowed)
    if bits != tuple(space.bits):
        log(f"formats: {runtime} deploys integer weights of {', '.join(map(str, allowed))} bits: "
            f"the space's {', '.join(str(b) for b in space.bits if b not in bits)}-bit choice is dropped")
    return dataclasses.replace(space, bits=bits or ("float",))


def trial_estimate(model, data, space: SearchSpace, t_eval: float, seed: int) -> float:
    """The cheapest trial: export, validate and time one artifact, plus fine-tuning when every policy does
    (one fine-tuning step timed here)."""
    from ..train import fit

    probe = copy.deepcopy(model)
    t = time.monotonic()
    fit(probe, data, epochs=1, max_batches=2, progress=False, seed=seed)
    t_step = (time.monotonic() - t) / 2
    return t_eval * 1.2 + min(space.finetune_epochs) * (space.finetune_batches or len(data.train)) * t_step


def sensitivity_scan(model, data, space: SearchSpace, xshape, log, metric=None) -> dict | None:
    """Per-group pruning sensitivity, coarse on purpose (3 ratios, 2 batches): it ranks groups for the
    sensitivity allocation, the trials measure the result."""
    if "sensitivity" not in space.allocation or not any(r > 0 for r in space.prune_ratio):
        return None
    from ..pruning.sensitivity import analyze

    t = time.monotonic()
    try:
        c = analyze(model, data, example_shape=xshape, importance=space.importance, ratios=(0.25, 0.5, 0.75),
                    max_batches=2, metric=metric)
    except EdgeslimError as e:
        log(f"sensitivity scan unavailable ({e.message}); the sensitivity allocation falls back to uniform")
        return None
    log(f"sensitivity scan of {len(c['layers'])} channel groups: {time.monotonic() - t:.0f}s")
    return {"layers": c["layers"], "ratios": c["ratios"], "rows": c["rows"], "baseline": c["baseline"]}


def depth_scan(model, data, space: SearchSpace, xshape, log) -> tuple[SearchSpace, list[str]]:
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


def time_render(work: Path) -> float:
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


def check_data(model, data, xshape) -> None:
    from ..core.errors import DataError
    from ..measure import check_fits_data

    if data is None or getattr(data, "meta", None) is None:
        raise DataError("auto needs data (a DataBundle with train and validation splits)", hint="pass --data D")
    if not data.meta.labelled:
        raise DataError(f"auto needs labelled data to check the accuracy SLA; {data.meta.name} has no labels",
                        hint="use a labelled dataset (fashion-mnist, imagefolder:PATH)")
    if data.val is None:
        raise DataError("auto needs a validation split: the search is steered by validation accuracy and the "
                        "test split is kept for the final figure", hint="use a val fraction > 0 (--val-fraction 0.1)")
    check_fits_data(model, xshape[1:], data)


def reference_for(state: StudyState, model, ev: Evaluator, work: Path) -> Path | None:
    """A speed-up limit times the baseline alongside each candidate: its artifact (a worker with its
    own --out exports it)."""
    from .config import latency_spec

    if state.max_latency is None or latency_spec(state.max_latency)[1] is None:
        return None
    path = ev.artifact(work, "baseline")
    if not path.is_file():  # the runtime's export writes atomically
        ev.export(model, path)
    return path

