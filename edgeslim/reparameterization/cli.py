"""`edgeslim reparam MODEL --out DIR`: fold RepVGG branches and Conv+BN pairs, verify, report.

Writes DIR/model.onnx (folded, verified in ONNX Runtime), DIR/baseline.onnx, DIR/checkpoint/
and DIR/report.json + report.md, whose details list every fold and the max abs difference
between the folded and the original model in PyTorch.
"""
from __future__ import annotations

from ..cli_common import (add_data_args, add_measure_args, add_model_args, add_output_args, emit, input_paths,
                          input_shape, load_data, load_model, out_dir, output_options, positive_float, wrote_line)


def register(sub) -> None:
    p = sub.add_parser("reparam", help="fold BatchNorm and RepVGG branches into plain convolutions",
                       description="Apply every fold that applies (RepVGG multi-branch blocks, Conv+BN), verify "
                                   "the folded model equals the original, export ONNX and report both side by side.")
    add_model_args(p)
    add_data_args(p)
    add_output_args(p)
    add_measure_args(p)
    p.add_argument("--no-repvgg", action="store_true", help="leave RepVGG blocks multi-branch")
    p.add_argument("--no-conv-bn", action="store_true", help="leave Conv+BN pairs unfolded")
    p.add_argument("--atol", type=positive_float, default=1e-4, help="max abs difference allowed between the forms (default 1e-4)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..core.errors import EdgeslimError
    from ..core.registry import Context
    from . import Reparam, reparam

    cfg = Reparam(repvgg=not args.no_repvgg, conv_bn=not args.no_conv_bn)
    data = load_data(args)
    model, info = load_model(args, data)
    model.eval()
    shape = input_shape(args, info, model)
    torch.set_num_threads(args.threads)
    ctx = Context(progress=not args.json)
    folded = reparam(model, cfg, ctx=ctx)
    details = ctx.details
    g = torch.Generator().manual_seed(0)
    x = torch.randn(max(4, shape[0]), *shape[1:], generator=g)
    with torch.no_grad():
        diff = float((folded(x) - model(x)).abs().max())
    details["max_abs_diff_folded_vs_original"] = diff
    details["config"] = cfg.to_dict()
    if diff > args.atol:
        raise EdgeslimError(f"the folded model differs from the original by {diff:.3g} (> {args.atol:g})",
                            hint="a fold was not exact; rerun with --debug and report it")
    from ..output import single_step, staged, write_result

    opts = output_options(args, info, metrics={**(info.get("metrics") or {}), "reparam": details["notes"][-1]})
    with staged(out_dir(args), input_paths(args)) as (out, stage):  # the whole DIR at once
        report = write_result(stage, model, single_step(folded, cfg), opts, data=data, input_shape=shape,
                              extra_details=details)
    base, result = report.baseline, report.result
    d = report.to_dict()
    lines = [details["notes"][-1],
             f"max abs difference folded vs original: {diff:.2e}",
             f"ONNX Runtime latency {base['latency_ms']:.3f} -> {result['latency_ms']:.3f} ms "
             f"({d['ratios']['latency']:.2f}x), params {base['params']:,} -> {result['params']:,}"]
    lines += wrote_line(out, info)
    emit(args, d, "\n".join(lines))
    return 0
