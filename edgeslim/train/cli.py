"""`edgeslim train`: train a model and write a checkpoint with its test accuracy in the sidecar."""
from __future__ import annotations

import argparse

from ..cli_common import add_data_args, emit, load_data, load_model


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and save a checkpoint")
    p.add_argument("--model", required=True, help="zoo name or spec, or a checkpoint to continue from")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-channels", type=int)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    add_data_args(p, required=True)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, help="learning rate (default 0.05 for sgd, 1e-3 for adam)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoint + report)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import UsageError
    from ..core.report import Report, figures
    from ..measure import count_macs, count_params
    from ..models import save
    from . import evaluate, fit

    if args.epochs <= 0:
        raise UsageError(f"--epochs must be positive, got {args.epochs}")
    data = load_data(args)
    if not data.meta.labelled:
        raise UsageError(f"{args.data} has no labels to train on", hint="use fashion-mnist or imagefolder:PATH")
    model, info = load_model(args, data)
    log = None if args.json else (lambda s: print(s, flush=True))
    fit(model, data, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        device=args.device, seed=args.seed, progress=not args.json, log=log)
    model = model.cpu().eval()
    val = evaluate(model, data.val, max_batches=args.max_batches) if data.val is not None else {"top1": None}
    test = evaluate(model, data.test, max_batches=args.max_batches)
    out = Path(args.out)
    metrics = {"test_top1": test["top1"], "val_top1": val["top1"], "epochs": args.epochs, "data": args.data}
    save(model, out / "checkpoint", spec=info["spec"], build=info["build"], input_shape=info["input_shape"],
         classes=data.meta.classes, metrics=metrics)
    shape = (1, *info["input_shape"])
    report = Report(command="train", model=args.model, data=args.data,
                    result=figures(params=count_params(model), macs=count_macs(model, shape)[0],
                                   accuracy=test["top1"], batch=1, input_shape=list(shape),
                                   artifact="checkpoint/model.safetensors"),
                    details={"split": "test", "val_top1": val["top1"], "epochs": args.epochs, "lr": args.lr,
                             "optimizer": args.optimizer, "seed": args.seed})
    report.write(out)
    emit(args, {"checkpoint": str(out / "checkpoint"), "test_top1": test["top1"], "val_top1": val["top1"]},
         f"test top-1 {test['top1']:.2f}% (val {val['top1'] if val['top1'] is None else round(val['top1'], 2)}%)\n"
         f"checkpoint: {out / 'checkpoint'}\nreport: {out / 'report.md'}")
    return 0
