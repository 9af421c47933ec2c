"""`edgeslim prune` and `edgeslim sensitivity`.

    edgeslim prune MODEL --granularity channel --ratio 0.5 --importance taylor --data D \
        --finetune-epochs 2 --out DIR [--json]
    edgeslim prune MODEL --granularity block --ratio 0.5 --data D --finetune-epochs 4 --distill --out DIR
    edgeslim prune vit-ckpt --granularity heads --ratio 0.34 --mlp 0.5 --embed 0.25 --data D --out DIR
    edgeslim prune vit-ckpt --granularity tokens --tokens 32 --out DIR    # token merging (or --target-macs)
    edgeslim sensitivity MODEL --data D --out DIR [--target-macs 0.5]

prune writes DIR/checkpoint/ (loads with edgeslim.models.load(DIR)), DIR/model.onnx (the
pruned model, verified in ONNX Runtime), DIR/baseline.onnx, DIR/report.json + report.md
(baseline and result measured side by side in this run). sensitivity writes
DIR/sensitivity.csv, DIR/sensitivity.md, DIR/sensitivity.png, DIR/report.json + report.md,
and with --target-macs DIR/recipe.yaml (a ChannelPrune config with the per-layer ratios).
"""
from __future__ import annotations


from ..cli_common import (score_change, add_runtime_arg, add_data_args, add_measure_args, add_model_args, add_output_args, emit, input_paths,
                          input_shape, load_data, load_model, nonneg_float, nonneg_int, out_dir, output_options,
                          parse_shape, positive_float, positive_int, thread_count, wrote_line)
from ..output import single_step, staged, write_result
from .importance import IMPORTANCE_NAMES
from .schedule import SCHEDULES

GRANULARITIES = ("channel", "heads", "tokens", "block", "fine", "vector", "kernel", "nm")


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune channels or residual blocks (smaller dense model) or weights (sparse masks)",
                       description="Prune a model, fine-tune it, export ONNX and report both models side by side.")
    add_model_args(p)
    add_data_args(p)
    add_output_args(p)
    add_measure_args(p)
    add_runtime_arg(p)
    p.add_argument("--granularity", choices=GRANULARITIES, default="channel", help="default channel")
    p.add_argument("--ratio", type=float, default=0.5,
                   help="fraction removed, in [0, 1) (default 0.5); block: of the removable residual blocks, in [0, 1]")
    p.add_argument("--nm", default="2:4", help="N:M pattern for --granularity nm (default 2:4)")
    p.add_argument("--mlp", type=nonneg_float, default=0.0, help="heads: fraction of each MLP's hidden units removed")
    p.add_argument("--embed", type=nonneg_float, default=0.0, help="heads: fraction of the embedding width removed")
    p.add_argument("--tokens", type=nonneg_int, default=16, help="tokens: tokens merged over all blocks (default 16)")
    p.add_argument("--merge-schedule", choices=("constant", "decreasing"), default="constant",
                   help="tokens: how the merged tokens spread over the blocks (default constant)")
    p.add_argument("--importance", choices=IMPORTANCE_NAMES, default="l1", help="default l1")
    p.add_argument("--schedule", choices=SCHEDULES, default="oneshot", help="default oneshot")
    p.add_argument("--steps", type=positive_int, default=3, help="prune steps for iterative / agp (default 3)")
    p.add_argument("--global", dest="global_ranking", action="store_true", help="rank across layers, not per layer")
    p.add_argument("--round-to", type=positive_int, default=1, help="keep channel counts a multiple of this (e.g. 8)")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                   help="layer names to keep whole (repeatable); the classifier head is always kept")
    p.add_argument("--exclude-type", action="append", default=[], metavar="TYPE",
                   help="layer type names to keep whole, e.g. Linear (repeatable)")
    p.add_argument("--target-macs", type=float, metavar="FRACTION",
                   help="channel: keep at most this fraction of the MACs (0.5 = 2x fewer); overrides --ratio")
    p.add_argument("--allocation", choices=["uniform", "sensitivity"], default=None,
                   help="with --target-macs: one ratio for all layers, or per-layer ratios from a sensitivity "
                        "scan (default: sensitivity when --data has labels)")
    p.add_argument("--finetune-epochs", type=nonneg_float, default=0.0,
                   help="fine-tuning epochs after pruning (default 0)")
    p.add_argument("--lr", type=positive_float, help="fine-tuning learning rate (default 0.05 sgd)")
    p.add_argument("--train-batches", type=positive_int, help="cap fine-tuning batches per epoch")
    p.add_argument("--calib-batches", type=nonneg_int, default=4, help="batches for taylor/activation/apoz (default 4)")
    p.add_argument("--distill", action="store_true", help="fine-tune with distillation from the unpruned model")
    p.add_argument("--bn-batches", type=nonneg_int, default=50,
                   help="channel: re-estimate BatchNorm statistics on this many training batches after pruning "
                        "(0 = off; default 50; needs --data)")
    p.set_defaults(func=run)

    s = sub.add_parser("sensitivity", help="per-layer accuracy-vs-pruning-ratio curves (table + plot)",
                       description="Prune each layer alone at several ratios and measure accuracy.")
    add_model_args(s)
    add_data_args(s, required=True)
    add_output_args(s, out_required=True)
    s.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W", help="default: the data's")
    s.add_argument("--ratios", default="0.2,0.4,0.6,0.8", help="comma-separated ratios (default 0.2,0.4,0.6,0.8)")
    s.add_argument("--importance", choices=IMPORTANCE_NAMES, default="l1")
    s.add_argument("--exclude", action="append", default=[], metavar="REGEX")
    s.add_argument("--exclude-type", action="append", default=[], metavar="TYPE")
    s.add_argument("--eval-batches", type=positive_int, default=8, help="validation batches per point (default 8)")
    s.add_argument("--target-macs", type=float, metavar="FRACTION",
                   help="also allocate per-layer ratios keeping at most this fraction of the MACs")
    s.add_argument("--round-to", type=positive_int, default=1)
    s.add_argument("--threads", type=thread_count, default=2, help="torch intra-op threads (default 2)")
    s.set_defaults(func=run_sensitivity)


def build_config(args):
    from .depth import BlockPrune
    from .heads import HeadPrune
    from .structured import ChannelPrune
    from .tokens import TokenMerge
    from .unstructured import SparsePrune

    common = dict(importance=args.importance, global_ranking=args.global_ranking, exclude=tuple(args.exclude),
                  exclude_types=tuple(args.exclude_type), schedule=args.schedule, steps=args.steps,
                  finetune_epochs=args.finetune_epochs, lr=args.lr, max_batches=args.train_batches,
                  calibration_batches=args.calib_batches, distill=args.distill)
    from ..core.errors import UsageError

    if args.granularity == "heads":
        return HeadPrune(heads=args.ratio, mlp=args.mlp, embed=args.embed, importance=args.importance,
                         calibration_batches=args.calib_batches, finetune_epochs=args.finetune_epochs, lr=args.lr,
                         max_batches=args.train_batches, distill=args.distill)
    if args.granularity == "tokens":
        return TokenMerge(tokens=args.tokens, target_macs=args.target_macs, schedule=args.merge_schedule)
    if args.granularity == "block":
        if args.target_macs is not None or args.round_to != 1:
            raise UsageError("--target-macs and --round-to apply to channel pruning only",
                             hint="block pruning removes whole residual blocks: --ratio is the fraction of them")
        return BlockPrune(ratio=args.ratio, calibration_batches=args.calib_batches, bn_batches=args.bn_batches,
                          finetune_epochs=args.finetune_epochs, lr=args.lr, max_batches=args.train_batches,
                          distill=args.distill)
    if args.granularity == "channel":
        labelled = getattr(args, "_labelled", False)
        allocation = args.allocation or ("sensitivity" if labelled and args.target_macs else "uniform")
        return ChannelPrune(ratio=args.ratio, round_to=args.round_to, target_macs=args.target_macs,
                            allocation=allocation, bn_batches=args.bn_batches, **common)
    if args.target_macs is not None:
        raise UsageError("--target-macs applies to channel pruning only",
                         hint="mask-based pruning leaves the dense MACs unchanged")
    if args.round_to != 1:
        raise UsageError("--round-to applies to channel pruning only")
    return SparsePrune(granularity=args.granularity, ratio=args.ratio, nm=args.nm, **common)


def run(args) -> int:
    import torch

    from ..core.errors import DataError
    from ..core.registry import Context, run as run_config

    data = load_data(args)
    args._labelled = bool(data is not None and data.meta.labelled)
    cfg = build_config(args)  # validate options before loading anything big
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)
    if getattr(cfg, "finetune_epochs", 0) and (data is None or not data.meta.labelled):
        raise DataError("--finetune-epochs needs labelled --data")
    torch.set_num_threads(args.threads)
    pruned, details = run_config(model, cfg, Context(data=data, input_shape=shape[1:], progress=not args.json))
    details["config"] = cfg.to_dict()
    if cfg.kind == "sparse_prune":
        details["onnx_is_dense"] = True
    opts = output_options(args, info, metrics={"pruned": cfg.to_dict()})
    with staged(out_dir(args), input_paths(args)) as (out, stage):  # the whole DIR at once
        report = write_result(stage, model, single_step(pruned, cfg, details), opts, data=data, input_shape=shape,
                              extra_details=details)
    base, result = report.baseline, report.result
    d = report.to_dict()
    r = d["ratios"]
    lines = [f"{cfg.kind}: params {base['params']:,} -> {result['params']:,}, MACs {base['macs']:,} -> "
             f"{result['macs']:,} ({_x(r['macs'])} fewer), latency {base['latency_ms']:.3f} -> "
             f"{result['latency_ms']:.3f} ms ({_x(r['latency'])})"]
    if cfg.kind == "sparse_prune":
        lines.append(f"sparsity {details['sparsity']:.3f}; sparse encoding {details['sparse_size_bytes']:,} bytes vs "
                     f"dense {details['dense_size_bytes']:,} (the ONNX file stays dense: {result['size_bytes']:,} bytes)")
    if d["accuracy_drop"] is not None:
        lines.append(score_change(d, base["accuracy"], result["accuracy"], tail=f" (drop {d['accuracy_drop']:.2f})"))
    lines += wrote_line(out, info, report)
    emit(args, d, "\n".join(lines))
    return 0


def _x(v) -> str:
    return "–" if v is None else f"{v:.2f}x"


def run_sensitivity(args) -> int:
    import torch

    from ..core.errors import DataError, UsageError
    from ..core.io import atomic_write_text
    from ..core.report import Report, figures
    from ..measure import count_params
    from .sensitivity import allocate, analyze, layer_ratio_regexes, plot, table_csv, table_markdown
    from ..graph import output_shape
    from .structured import ChannelPrune, exclusions, macs_of

    try:
        ratios = tuple(float(v) for v in args.ratios.split(","))
    except ValueError:
        raise UsageError(f"bad --ratios {args.ratios!r}", hint="e.g. 0.2,0.4,0.6,0.8") from None
    torch.set_num_threads(args.threads)
    data = load_data(args)
    if not data.meta.labelled:
        raise DataError(f"{args.data} has no labels; sensitivity needs accuracy", hint="use labelled data")
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)
    curves = analyze(model, data, example_shape=shape, ratios=ratios, importance=args.importance,
                     exclude=tuple(args.exclude), exclude_types=tuple(args.exclude_type),
                     max_batches=args.eval_batches, progress=not args.json)
    with staged(out_dir(args), input_paths(args)) as (final, out):  # the whole DIR at once
        atomic_write_text(out / "sensitivity.csv", table_csv(curves))
        atomic_write_text(out / "sensitivity.md", table_markdown(curves))
        plot(curves, out / "sensitivity.png")
        details = {"ratios": curves["ratios"], "importance": args.importance, "eval_images": curves["eval_images"],
                   "split": "val", "layers": curves["rows"],
                   "files": ["sensitivity.csv", "sensitivity.md", "sensitivity.png"]}
        baseline = figures(params=count_params(model), macs=curves["baseline_macs"], accuracy=curves["baseline"],
                           batch=shape[0], input_shape=list(shape))
        result = dict(baseline)
        if args.target_macs is not None:
            example = torch.randn(shape)
            excl = exclusions(model, example, tuple(args.exclude), tuple(args.exclude_type), output_shape(model, example))[0]
            alloc = allocate(model, curves, args.target_macs, example=example, exclude=excl, round_to=args.round_to)
            cfg = ChannelPrune(ratio=0.0, layer_ratios=layer_ratio_regexes(alloc), round_to=args.round_to,
                               exclude=tuple(args.exclude), exclude_types=tuple(args.exclude_type))
            atomic_write_text(out / "recipe.yaml", cfg.to_yaml())
            from ..core.registry import Context, run as run_config

            small, _ = run_config(model, cfg, Context(input_shape=shape[1:]))
            from .sensitivity import _eval_batches, _scorer

            result = figures(params=count_params(small), macs=macs_of(small, example),
                             accuracy=_scorer(small, None)(small, _eval_batches(data, args.eval_batches)),
                             batch=shape[0], input_shape=list(shape))
            details["allocation"] = {"target_macs": args.target_macs, "ratios": alloc,
                                     "macs_kept": result["macs"] / baseline["macs"],
                                     "accuracy_without_finetuning": result["accuracy"]}
            details["files"].append("recipe.yaml")
            details["notes"] = [f"target_macs = fraction of the original MACs kept; allocation keeps "
                                f"{result['macs'] / baseline['macs']:.3f}. Replay: edgeslim prune with this recipe "
                                f"(recipe.yaml) and fine-tune."]
        report = Report(command="sensitivity", model=args.model, data=args.data, baseline=baseline, result=result,
                        details=details)
        report.write(out)
    out = final
    text = table_markdown(curves) + f"\nwrote {out}/sensitivity.csv, sensitivity.md, sensitivity.png, report.json"
    if args.target_macs is not None:
        text += f"\nallocation (MACs kept {details['allocation']['macs_kept']:.3f}): " + \
                ", ".join(f"{k}={v:.2f}" for k, v in details["allocation"]["ratios"].items())
    emit(args, report.to_dict(), text)
    return 0
