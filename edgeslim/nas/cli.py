"""`edgeslim nas`: architecture search for the target runtime.

    edgeslim nas [MODEL] --space mobilenet|resnet|FILE --data D --max-latency 0.08 --runtime onnxruntime
        --threads 1 --strategy evolution|nsga2|rl|darts|random --budget 45m --out DIR
"""
from __future__ import annotations

import sys

from ..agent.cli import add_agent_args, check_agent_args
from ..cli_common import (add_data_args, add_output_args, deploy_runtimes, emit, float_range, load_data, out_dir,
                          percent, positive_int, thread_count)
from .config import STRATEGY_NAMES


def register(sub) -> None:
    p = sub.add_parser("nas", help="architecture search: a weight-sharing supernet searched against runtime latency",
                       description="Train one weight-sharing supernet, search its subnets under a latency / size / "
                                   "accuracy limit with latency from a lookup table measured in the runtime, time the "
                                   "finalists whole, fine-tune the winner and write it (a plain `nasnet` checkpoint, "
                                   "its runtime file, the report). MODEL (optional) is the reference; a zoo "
                                   "mobilenetv2_tiny or CIFAR ResNet becomes the supernet when no --space is given.")
    p.add_argument("model", metavar="MODEL", nargs="?", help="reference model (zoo name or checkpoint), optional")
    p.add_argument("--num-classes", type=positive_int, help="classes of a freshly built reference (default: --data)")
    p.add_argument("--in-channels", type=positive_int, help="input channels of a freshly built reference")
    p.add_argument("--spec", help="architecture of a bare state_dict .pt reference")
    add_data_args(p, required=True)
    add_output_args(p, out_required=True)
    p.add_argument("--space", metavar="NAME|YAML", help="mobilenet, resnet or a YAML file (default: MODEL's own "
                                                        "space when it has one, else mobilenet)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="change the space: stages.1.depth=[1,2], head.out=256 (repeatable)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="evolution")
    p.add_argument("--max-latency", type=_checked("latency"), metavar="MS|Nx",
                   help="latency limit in the runtime: milliseconds (0.08) or a speed-up over MODEL (2x)")
    p.add_argument("--max-size", type=_checked("size"), metavar="BYTES", help="fp32 file size limit (300kB)")
    sla = p.add_mutually_exclusive_group()
    sla.add_argument("--min-accuracy", type=percent, help="validation floor in the metric's points")
    sla.add_argument("--max-drop", type=float_range(0, 100, hi_open=True), help="points below MODEL's validation score")
    p.add_argument("--metric", metavar="NAME|package.module:function", help="top1 (default), top5 or your function")
    p.add_argument("--runtime", choices=deploy_runtimes(), default="onnxruntime")
    p.add_argument("--threads", type=thread_count, default=1)
    p.add_argument("--budget", type=_checked("budget"), default="45m", help="wall time of the whole run (45m)")
    p.add_argument("--evaluations", type=positive_int, help="at most this many subnets scored")
    p.add_argument("--supernet-epochs", type=float, default=6.0)
    p.add_argument("--supernet-rule", choices=("sandwich", "spos"), default="sandwich")
    p.add_argument("--supernet-batches", type=positive_int, help="cap supernet batches per epoch (smoke runs)")
    p.add_argument("--finetune-epochs", type=float, default=2.0)
    p.add_argument("--finetune-batches", type=positive_int, help="cap fine-tuning batches per epoch (smoke runs)")
    p.add_argument("--no-distill", action="store_true", help="fine-tune on the labels only")
    p.add_argument("--finalists", type=positive_int, default=5, help="best subnets timed whole (default 5)")
    p.add_argument("--val-batches", type=positive_int, default=10, help="validation batches per scored subnet")
    p.add_argument("--runs", type=positive_int, default=100, help="timed runs of the final comparison")
    add_agent_args(p)
    p.set_defaults(func=run)


def _checked(kind: str):
    def parse(text: str) -> str:
        import argparse

        from ..core.errors import UsageError
        from ..search.config import latency_spec, memory_spec, parse_budget

        try:
            {"latency": latency_spec, "size": memory_spec, "budget": parse_budget}[kind](text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(f"{e.message} ({e.hint})" if e.hint else e.message) from None
        return text

    return parse


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args) -> int:
    from ..cli_common import load_model
    from ..search.cli import metric_arg
    from .engine import nas

    metric = metric_arg(args.metric)
    given = check_agent_args(args)
    data = load_data(args)
    model = load_model(args, data)[0] if args.model else None
    res = nas(data, model=model, space=args.space, space_overrides=tuple(args.override), strategy=args.strategy,
              budget=args.budget, evaluations=args.evaluations, max_latency=args.max_latency, max_size=args.max_size,
              min_accuracy=args.min_accuracy, max_drop=args.max_drop, metric=metric, runtime=args.runtime,
              threads=args.threads, supernet_epochs=args.supernet_epochs, supernet_rule=args.supernet_rule,
              supernet_batches=args.supernet_batches, finetune_epochs=args.finetune_epochs,
              finetune_batches=args.finetune_batches, distill=not args.no_distill, finalists=args.finalists,
              val_batches=args.val_batches, final_runs=args.runs, seed=args.seed, out=out_dir(args),
              agent=given and given[0], agent_token_file=given and given[1], log=_log)
    r = res.report
    t = r.details["time_s"]
    split = ", ".join(f"{k[:-2]} {v:.0f}s" for k, v in t.items() if k != "total")
    head = "" if res.feasible else "the winner does NOT meet every limit on the final measurement (see the notes)\n\n"
    emit(args, {**r.to_dict(), "feasible": res.feasible},
         head + r.table() + f"\n\ntime: {t['total'] / 60:.1f} min ({split})"
         + f"\nlookup-table latency error on the finalists: median {r.details['latency_table']['median_abs_error']:.1%}"
         + f"\n\nreport: {res.out}/report.html  model: {res.out}/{r.result.get('artifact')}  "
           f"checkpoint: {res.out}/checkpoint")
    return 0 if res.feasible else 1
