"""`edgeslim factorize MODEL --method svd|tucker|cp --target-macs 0.5 [--data D --finetune-epochs N] --out DIR`

Writes DIR/checkpoint/, DIR/model.onnx (verified in ONNX Runtime), DIR/baseline.onnx and
DIR/report.json + report.md with the per-layer table (ranks, MACs, single-layer ONNX Runtime
latency before/after, and which layers stayed original and why).
"""
from __future__ import annotations

from ..cli_common import (score_change, add_runtime_arg, add_data_args, add_measure_args, add_model_args, add_output_args, emit, input_paths,
                          input_shape, load_data, load_model, nonneg_float, nonneg_int, out_dir, output_options,
                          positive_float, positive_int, wrote_line)


def register(sub) -> None:
    p = sub.add_parser("factorize", help="low-rank decomposition: SVD (Linear), Tucker-2 or CP (Conv2d)",
                       description="Factorize layers, keep only those that are faster in ONNX Runtime, optionally "
                                   "fine-tune, export ONNX and report both models side by side.")
    add_model_args(p)
    add_data_args(p)
    add_output_args(p)
    add_measure_args(p)
    add_runtime_arg(p)
    p.add_argument("--method", choices=["svd", "tucker", "cp"], default="tucker", help="default tucker")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rank", type=positive_int, help="fixed rank for every selected layer")
    g.add_argument("--energy", type=float, help="keep this fraction of the squared singular values (0-1]")
    g.add_argument("--target-macs", type=float, metavar="FRACTION",
                   help="whole-model MACs ratio result/original (default 0.5 = 2x fewer)")
    g.add_argument("--target-params", type=float, metavar="FRACTION", help="whole-model params ratio result/original")
    g.add_argument("--vbmf", action="store_true", help="ranks by variational Bayesian matrix factorization")
    p.add_argument("--allocation", choices=["energy", "uniform"], default="energy",
                   help="with a target ratio: one kept-energy fraction for all layers (default) or the same "
                        "cost fraction per layer")
    p.add_argument("--bn-batches", type=nonneg_int, default=50,
                   help="with --data: re-estimate BatchNorm statistics on this many batches (default 50, 0 = off)")
    p.add_argument("--include", action="append", default=[], metavar="REGEX", help="only these layers (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX", help="keep these layers (repeatable)")
    p.add_argument("--no-latency-check", action="store_true",
                   help="keep every factorized layer, even where the runtime runs it slower")
    p.add_argument("--min-speedup", type=positive_float, default=1.0,
                   help="per-layer speed-up needed to keep it (default 1.0)")
    p.add_argument("--finetune-epochs", type=nonneg_float, default=0.0, help="fine-tuning epochs after factorizing")
    p.add_argument("--lr", type=positive_float, help="fine-tuning learning rate (default 0.01)")
    p.add_argument("--distill", action="store_true", help="fine-tune with KD from the original model")
    p.set_defaults(func=run)


def build_config(args):
    from ..core.config import config_type

    kw = dict(rank=args.rank, energy=args.energy, target_macs=args.target_macs, target_params=args.target_params,
              vbmf=args.vbmf, allocation=args.allocation, bn_batches=args.bn_batches,
              include=tuple(args.include), exclude=tuple(args.exclude),
              check_latency=not args.no_latency_check, min_speedup=args.min_speedup, threads=args.threads, runtime=args.runtime,
              finetune_epochs=args.finetune_epochs, lr=args.lr, finetune_distill=args.distill)
    return config_type(args.method)(**kw)


def run(args) -> int:
    import torch

    from ..core.errors import DataError
    from ..core.registry import Context, run as run_config

    cfg = build_config(args)  # validate before loading anything big
    data = load_data(args)
    if args.finetune_epochs and (data is None or not data.meta.labelled):
        raise DataError("--finetune-epochs needs labelled --data")
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)
    torch.set_num_threads(args.threads)
    result_model, details = run_config(model, cfg, Context(data=data, input_shape=shape[1:], seed=args.seed,
                                                           progress=not args.json))
    details["config"] = cfg.to_dict()
    from ..output import single_step, staged, write_result

    opts = output_options(args, info, metrics={"factorized": cfg.to_dict()})
    with staged(out_dir(args), input_paths(args)) as (out, stage):  # the whole DIR at once
        report = write_result(stage, model, single_step(result_model, cfg), opts, data=data, input_shape=shape,
                              extra_details=details)
    base, result = report.baseline, report.result
    d = report.to_dict()
    r = d["ratios"]
    lines = [details["notes"][0],
             f"latency {base['latency_ms']:.3f} -> {result['latency_ms']:.3f} ms "
             f"({r['latency']:.2f}x), params {base['params']:,} -> {result['params']:,}"]
    lines += [n for n in details["notes"][1:]]
    if d["accuracy_drop"] is not None:
        lines.append(score_change(d, base["accuracy"], result["accuracy"], tail=f" (drop {d['accuracy_drop']:.2f})"))
    lines += wrote_line(out, info, report)
    if out is not None:
        lines.append(f"per-layer table: {out}/report.md")
    emit(args, d, "\n".join(lines))
    return 0
