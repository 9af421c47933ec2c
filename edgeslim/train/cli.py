"""`edgeslim train`: train a model and write a checkpoint with its test accuracy in the sidecar."""
from __future__ import annotations

import argparse

from ..cli_common import (add_data_args, emit, input_paths, load_data, load_model, nonneg_float, nonneg_int, out_dir,
                          positive_float, positive_int, torch_device)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and save a checkpoint")
    p.add_argument("--model", required=True, help="zoo name or spec, or a checkpoint to continue from")
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--in-channels", type=positive_int)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    add_data_args(p, required=True)
    p.add_argument("--epochs", type=positive_float, default=3)
    p.add_argument("--lr", type=positive_float, help="learning rate (default 0.05 for sgd, 1e-3 for adam)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--weight-decay", type=nonneg_float, default=5e-4)
    p.add_argument("--warmup-steps", type=nonneg_int, metavar="N",
                   help="linear learning-rate warm-up steps (default: 5%% of the steps, at most 100; 0: none)")
    p.add_argument("--clip-grad", type=nonneg_float, default=5.0, metavar="NORM",
                   help="clip the gradient norm to NORM (default 5; 0: no clipping)")
    p.add_argument("--device", type=torch_device, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoint + report)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import UsageError
    from ..core.report import Report, figures
    from ..measure import count_macs, count_params
    from ..models import save
    from ..output import staged
    from . import evaluate, fit, fit_stats, seed_everything

    data = load_data(args)
    if not data.meta.labelled:
        raise UsageError(f"{args.data} has no labels to train on", hint="use fashion-mnist or imagefolder:PATH")
    seed_everything(args.seed)  # a fresh model's initial weights come from --seed too: one command, one model
    model, info = load_model(args, data)
    log = None if args.json else (lambda s: print(s, flush=True))
    fit(model, data, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, clip_grad=args.clip_grad, device=args.device, seed=args.seed,
        progress=not args.json, log=log)
    stats = fit_stats(model)
    model = model.cpu().eval()
    val = evaluate(model, data.val, max_batches=args.max_batches) if data.val is not None else {"top1": None}
    test = evaluate(model, data.test, max_batches=args.max_batches)
    out = Path(args.out)
    metrics = {"test_top1": test["top1"], "val_top1": val["top1"], "epochs": args.epochs, "data": args.data}
    shape = (1, *info["input_shape"])
    report = Report(command="train", model=args.model, data=args.data,
                    result=figures(params=count_params(model), macs=count_macs(model, shape)[0],
                                   accuracy=test["top1"], batch=1, input_shape=list(shape),
                                   artifact="checkpoint/model.safetensors"),
                    details={"split": "test", "val_top1": val["top1"], "epochs": args.epochs, "lr": args.lr,
                             "optimizer": args.optimizer, "seed": args.seed, "warmup_steps": stats.warmup_steps,
                             "clip_grad": stats.clip_grad, "clipped_steps": stats.clipped_steps, "steps": stats.steps,
                             "bn_recalibration": stats.bn_recalibration, "bn_stale_weight": stats.bn_stale_weight})
    with staged(out_dir(args), input_paths(args)) as (_, work):  # DIR changes all at once
        save(model, work / "checkpoint", spec=info["spec"], build=info["build"], input_shape=info["input_shape"],
             classes=data.meta.classes, metrics=metrics)
        report.write(work)
    emit(args, {"checkpoint": str(out / "checkpoint"), "test_top1": test["top1"], "val_top1": val["top1"]},
         f"test top-1 {test['top1']:.2f}% (val {val['top1'] if val['top1'] is None else round(val['top1'], 2)}%)\n"
         f"checkpoint: {out / 'checkpoint'}\nreport: {out / 'report.md'}")
    return 0
