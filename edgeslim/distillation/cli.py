"""`edgeslim distill --teacher T --student S --data D --epochs N --temperature 4 --alpha 0.9
[--features t.layer3:s.layer3] [--attention t.layer2:s.layer2] --out DIR`

Writes DIR/checkpoint/ (the student), DIR/model.onnx (the student, verified in ONNX Runtime),
DIR/baseline.onnx (the teacher) and DIR/report.json + report.md with baseline = teacher.
"""
from __future__ import annotations

import argparse

from ..cli_common import (score_change, add_runtime_arg, add_data_args, add_measure_args, add_output_args, emit, input_paths, load_data,
                          nonneg_float, out_dir, output_options, positive_float, positive_int, unit, wrote_line)


def register(sub) -> None:
    p = sub.add_parser("distill", help="train a student from a teacher (soft targets, hints, attention)",
                       description="Knowledge distillation: soft targets (Hinton) + hard labels, optional FitNets "
                                   "hints and attention transfer; unlabelled data is distilled from the teacher.")
    p.add_argument("--teacher", required=True, metavar="MODEL", help="trained teacher: checkpoint/out DIR or spec")
    p.add_argument("--student", required=True, metavar="MODEL", help="student: zoo name/spec (fresh) or checkpoint")
    p.add_argument("--num-classes", type=positive_int, help="classes of a fresh student (default: from --data / the teacher)")
    p.add_argument("--in-channels", type=positive_int)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    add_data_args(p, required=True)
    add_output_args(p)
    add_measure_args(p)
    add_runtime_arg(p)
    p.add_argument("--epochs", type=positive_float, default=1, help="training epochs, > 0 (default 1)")
    p.add_argument("--temperature", type=positive_float, default=4.0)
    p.add_argument("--alpha", type=unit, default=0.9, help="weight of the soft-target loss (default 0.9)")
    p.add_argument("--features", action="append", default=[], metavar="t.LAYER:s.LAYER",
                   help="FitNets hint pair (repeatable); 1x1/linear adapters are added where shapes differ")
    p.add_argument("--feature-weight", type=nonneg_float, default=1.0)
    p.add_argument("--attention", action="append", default=[], metavar="t.LAYER:s.LAYER",
                   help="attention-transfer pair (repeatable)")
    p.add_argument("--attention-weight", type=nonneg_float, default=1000.0)
    p.add_argument("--lr", type=positive_float, help="learning rate (default 0.05 sgd)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--train-batches", type=positive_int, help="cap training batches per epoch")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..core.registry import Context, run as run_config
    from ..measure import check_input
    from ..models import resolve
    from . import KD

    cfg = KD(temperature=args.temperature, alpha=args.alpha, epochs=args.epochs, lr=args.lr,
             optimizer=args.optimizer, features=tuple(args.features), feature_weight=args.feature_weight,
             attention=tuple(args.attention), attention_weight=args.attention_weight, max_batches=args.train_batches)
    data = load_data(args)
    in_ch = args.in_channels or data.meta.input_shape[0]
    teacher, t_info = resolve(args.teacher, in_channels=in_ch,
                              num_classes=data.meta.num_classes if data.meta.labelled else None)
    num_classes = args.num_classes or (data.meta.num_classes if data.meta.labelled else None)
    if num_classes is None:  # unlabelled data: the student predicts what the teacher predicts
        with torch.no_grad():
            num_classes = teacher.eval()(torch.zeros(1, *data.meta.input_shape)).shape[-1]
    student, s_info = resolve(args.student, num_classes=num_classes, in_channels=in_ch, spec=args.spec)
    shape = (1, *data.meta.input_shape)
    check_input(teacher, shape, args.teacher)
    check_input(student, shape, args.student)
    torch.set_num_threads(args.threads)
    ctx = Context(data=data, teacher=teacher, seed=args.seed, progress=not args.json)
    result_model, details = run_config(student, cfg, ctx)
    result_model = result_model.cpu().eval()
    details["teacher"] = args.teacher
    details["student"] = args.student
    details["baseline_is"] = "teacher"
    details["config"] = cfg.to_dict()
    from ..output import single_step, staged, write_result

    # the student does not derive from the teacher layer by layer: no per-layer policy table
    opts = output_options(args, s_info, model_name=args.student, layer_table=False,
                          metrics={"distilled_from": args.teacher, "epochs": args.epochs, "data": args.data})
    with staged(out_dir(args), input_paths(args)) as (out, stage):  # the whole DIR at once
        report = write_result(stage, teacher.cpu().eval(), single_step(result_model, cfg), opts, data=data,
                              input_shape=shape, extra_details=details)
    base, result = report.baseline, report.result
    d = report.to_dict()
    lines = [details["notes"][-1],
             f"teacher params {base['params']:,}, student {result['params']:,}; latency "
             f"{base['latency_ms']:.3f} -> {result['latency_ms']:.3f} ms"]
    if d["accuracy_drop"] is not None:
        lines.append(score_change(d, base["accuracy"], result["accuracy"], roles=("teacher ", "student "),
                                  tail=f" (drop {d['accuracy_drop']:.2f})"))
    lines += wrote_line(out, s_info, report)
    emit(args, d, "\n".join(lines))
    return 0
