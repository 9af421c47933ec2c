"""`edgeslim compress` (run a recipe) and `edgeslim auto` (the SLA search).

    edgeslim compress MODEL --recipe r.yaml --data D --out DIR [--json]
    edgeslim auto MODEL --data D --max-drop 0.5 --objective size|latency [--max-latency 3x] --budget 30m [--trials N]
        [--storage sqlite:///DIR/study.db] [--resume] [--worker] [--pareto] [--space FILE] --out DIR
"""
from __future__ import annotations

import sys

from .confidence import DEFAULT_CONFIDENCE
from .scoring import summary_line
from ..agent.cli import add_agent_args, agent_from_args, check_agent_args
from ..cli_common import (add_data_args, add_model_args, add_runtime_arg, deploy_runtimes, add_output_args, emit, float_range, fraction, input_paths,
                          input_shape, load_data, load_model, out_dir, percent, positive_int, text_file, thread_count)


def register(sub) -> None:
    c = sub.add_parser("compress", help="run a recipe: a list of technique configs from YAML, in order",
                       description="Run the steps of a YAML recipe (steps: [{type: channel_prune, ratio: 0.5}, "
                                   "{type: ptq, bits: 8}]) and write model.onnx, checkpoint/ (float results) and "
                                   "the report, the input model's fp32 ONNX measured side by side.")
    add_model_args(c)
    add_data_args(c)
    add_output_args(c, out_required=True)
    c.add_argument("--recipe", required=True, type=text_file, metavar="YAML",
                   help="recipe file (e.g. an auto run's winner.yaml)")
    c.add_argument("--threads", type=thread_count, default=2)
    c.add_argument("--runs", type=positive_int, default=50, help="timed latency runs (default 50)")
    add_runtime_arg(c)
    c.set_defaults(func=run_compress)

    a = sub.add_parser("auto", help="smallest / fastest model that meets an accuracy SLA (search)",
                       description="Search pruning, quantization, low-rank and distillation policies under an "
                                   "accuracy SLA, measuring every candidate in ONNX Runtime.")
    add_model_args(a)
    add_data_args(a, required=True)
    add_output_args(a, out_required=True)
    sla = a.add_mutually_exclusive_group()
    sla.add_argument("--max-drop", type=float_range(0, 100, hi_open=True),
                     help="how much of the baseline's validation score the result may lose, in the metric's points "
                          "(top-1: percentage points), in [0, 100) (default 0.5)")
    sla.add_argument("--min-accuracy", type=percent,
                     help="an absolute validation floor instead, in the metric's points (top-1: percent), in [0, 100]")
    a.add_argument("--metric", metavar="NAME|package.module:function",
                   help="what every candidate is scored with on the validation split (the report: the test split): "
                        "top1 (default for classifiers), top5, map, miou, or your function (predict, loader) -> "
                        "float | per-sample values, imported because you name it here")
    a.add_argument("--confidence", type=fraction, default=DEFAULT_CONFIDENCE,
                   help="a candidate meets the SLA when a one-sided lower bound of its validation accuracy at this "
                        "confidence does (paired with the baseline per image); 0 = plain check (default %(default)s)")
    a.add_argument("--objective", choices=["size", "latency"], default="size")
    a.add_argument("--max-latency", type=_latency, metavar="MS|Nx",
                   help="also require ONNX Runtime latency <= this: milliseconds (0.12) or a speed-up over the fp32 "
                        "baseline (3x)")
    a.add_argument("--runtime", choices=deploy_runtimes(), default="onnxruntime",
                   help="the runtime every candidate is exported to, timed and scored in; the winner is its file "
                        "(default onnxruntime)")
    a.add_argument("--max-memory", type=_memory, metavar="BYTES",
                   help="also require the peak memory of running the artifact <= this (8MB, 512kB; measured in a "
                        "fresh process per candidate)")
    a.add_argument("--pareto", action="store_true", help="NSGA-II over accuracy, size and latency (default TPE)")
    a.add_argument("--budget", type=_budget, default="30m", help="wall time for this run: 30m, 90s, 1h (default 30m)")
    a.add_argument("--trials", type=positive_int, help="stop when the study has this many finished trials")
    a.add_argument("--storage", help="Optuna storage URL (default sqlite:///DIR/study.db; postgresql://... for workers)")
    a.add_argument("--resume", action="store_true", help="continue the study in the storage")
    a.add_argument("--worker", action="store_true", help="join a running study (shared --storage) as one more worker")
    a.add_argument("--space", type=text_file, metavar="YAML", help="policy space overrides (see docs/auto.md)")
    a.add_argument("--no-greedy", action="store_true", help="skip the sensitivity-guided greedy pass")
    a.add_argument("--val-batches", type=positive_int, help="cap validation batches per trial (quick runs)")
    a.add_argument("--threads", type=thread_count, default=2)
    a.add_argument("--runs", type=positive_int, default=50, help="timed runs of the final comparison (default 50)")
    add_agent_args(a)
    a.set_defaults(func=run_auto)


def _budget(text: str) -> str:
    import argparse

    from ..core.errors import UsageError
    from .config import parse_budget

    try:
        seconds = parse_budget(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(f"{e.message} ({e.hint})" if e.hint else e.message) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be a positive wall time such as 30m, 90s or 1h30m, got {text!r}")
    return text


def _spec_type(check):
    """An argparse type that keeps the text when ``check`` reads it (a latency or memory limit)."""
    def parse(text: str) -> str:
        import argparse

        from ..core.errors import UsageError

        try:
            check(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(f"{e.message} ({e.hint})" if e.hint else e.message) from None
        return text

    return parse


def _latency(text: str) -> str:
    from .config import latency_spec

    return _spec_type(latency_spec)(text)


def _memory(text: str) -> str:
    from .config import memory_spec

    return _spec_type(memory_spec)(text)


def _check_study(args) -> None:
    """Before anything is loaded: an unreachable --storage fails, and --resume / --worker need a study to
    continue (checked without creating a database where there is none)."""
    from pathlib import Path

    import optuna

    from ..core.errors import UsageError
    from .store import STUDY_NAME, open_storage

    if not (args.resume or args.worker):
        if args.storage:
            open_storage(args.storage, heartbeat=False).engine.dispose()
        return
    flag = "--worker" if args.worker else "--resume"
    url = args.storage or f"sqlite:///{(Path(args.out) / 'study.db').resolve()}"
    where = f"--storage {args.storage}" if args.storage else f"{args.out}"
    db = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
    if db is not None and not db.is_file():  # opening it would create an empty database
        raise UsageError(f"{flag}: there is no study to continue in {where} ({db} does not exist)",
                         hint=f"run without {flag} to start one, or give the --out / --storage of the earlier run")
    store = open_storage(url, heartbeat=False)
    try:
        names = optuna.get_all_study_names(store)
    finally:
        store.engine.dispose()
    if STUDY_NAME not in names:
        raise UsageError(f"{flag}: {where} holds no edgeslim study to continue",
                         hint=f"run without {flag} to start one, or give the --out / --storage of the earlier run")


def metric_arg(text: str | None):
    """The Metric ``--metric`` names (None: the data's default), resolved now: the user typed it, so a
    package.module:function is imported here; an unknown name or a missing module is a UsageError."""
    if text is None:
        return None
    from .. import metrics

    return metrics.resolve(text)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_compress(args) -> int:
    from ..output import OutputOptions, staged, write_result
    from .recipe import load_recipe, run_steps

    data = load_data(args)
    model, info = load_model(args, data)
    steps, extra = load_recipe(args.recipe)
    from ..runtimes import check_exportable

    check_exportable(steps[-1] if steps else None, args.runtime)  # the runtime deploys the format, before any step
    shape = input_shape(args, info, model)[1:]
    seed = int(extra.get("seed", args.seed))
    res = run_steps(model, steps, data=data, input_shape=shape, seed=seed, log=_log)
    from .recipe import recipe_dict

    opts = OutputOptions(command="compress", spec=info.get("spec"), build=info.get("build"), model_name=args.model,
                         threads=args.threads, runs=args.runs, max_batches=args.max_batches, runtime=args.runtime)
    with staged(out_dir(args), input_paths(args)) as (_, stage):  # model, checkpoint and report replace DIR's together
        report = write_result(stage, model, res, opts, data=data, input_shape=shape,
                              extra_details={"recipe": recipe_dict(steps, seed=seed)})
    emit(args, report.to_dict(),
         report.table() + f"\n\nreport: {out_dir(args)}/report.md  model: {out_dir(args)}/{report.result['artifact']}")
    return 0


def run_auto(args) -> int:
    from .auto import auto
    from .outputs import closest_text

    metric = metric_arg(args.metric)  # a bad --metric fails first: one line, exit 2
    _check_study(args)  # an unreachable storage, or --resume with nothing to resume, fails before any loading
    given, agent = check_agent_args(args), agent_from_args(args)
    if agent is not None:
        agent.info()  # an unreachable agent, or a wrong token, fails before any loading
        _log(f"agent {agent.url}: every candidate, the baseline and the final comparison's latency and memory are "
             f"measured there; accuracy is scored here on the same files")
    data = load_data(args)
    model, info = load_model(args, data)
    res = auto(model, data, max_drop=args.max_drop, min_accuracy=args.min_accuracy, objective=args.objective,
               budget=args.budget, trials=args.trials, storage=args.storage, resume=args.resume, worker=args.worker,
               out=out_dir(args), space=args.space, pareto=args.pareto, greedy=not args.no_greedy, seed=args.seed,
               spec=info.get("spec"), build=info.get("build"), model_name=args.model,
               input_shape=tuple(info["input_shape"]), threads=args.threads, val_batches=args.val_batches,
               final_runs=args.runs, confidence=args.confidence, max_latency=args.max_latency,
               max_memory=args.max_memory, runtime=args.runtime, agent=given and given[0],
               agent_token_file=given and given[1], metric=metric, log=_log)
    obj = {**res.report.to_dict(), "feasible": res.feasible, "best_trial": res.best_trial}
    closest = res.report.details.get("closest")
    head = ("" if res.feasible else "no policy met the SLA: the baseline is kept\n"
            + (f"{closest_text(closest)}\n  recipe: {res.out}/closest.yaml\n" if closest else "") + "\n")
    if res.report.details.get("test_disagrees"):
        head += f"NOTE: {res.report.details['test_disagrees']}\n\n"
    report = res.report
    line = summary_line(report.metric, (report.baseline or {}).get("accuracy"), report.result.get("accuracy"),
                        report.details.get("split") or "test")
    emit(args, obj, head + report.table() + (f"\n\n{line}" if line else "") + f"\n\nreport: {res.out}/report.html  model: {res.out}/{res.report.result.get('artifact')}"
         + (f"  recipe: {res.out}/winner.yaml" if res.feasible else ""))
    return 0 if res.feasible else 1
