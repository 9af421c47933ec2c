"""`edgeslim train`: train a model and write a checkpoint with its test score in the sidecar.

The data's task decides what is trained and how it is scored: classifiers (top-1), detectors (the
training loss, and mAP when the ``map`` metric is there) and segmenters (loss, and mean IoU)."""
from __future__ import annotations

import argparse

from ..cli_common import (add_data_args, emit, input_paths, load_data, nonneg_float, nonneg_int, out_dir,
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
    from ..models import save
    from ..output import staged
    from . import fit, fit_stats, seed_everything

    data = load_data(args)
    if not data.meta.labelled:
        raise UsageError(f"{args.data} has no labels to train on",
                         hint="use fashion-mnist, fashion-mnist-detect, fashion-mnist-seg or imagefolder:PATH")
    task = getattr(data.meta, "task", "classification")
    seed_everything(args.seed)  # a fresh model's initial weights come from --seed too: one command, one model
    model, info = _load_model(args, data, task)
    log = None if args.json else (lambda s: print(s, flush=True))
    fit(model, data, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, clip_grad=args.clip_grad, device=args.device, seed=args.seed,
        progress=not args.json, log=log, task=task)
    model = model.cpu().eval()
    scores = _scores(model, data, args, task)
    report = _report(args, model, info, task, scores, fit_stats(model))
    out = Path(args.out)
    with staged(out_dir(args), input_paths(args)) as (_, work):  # DIR changes all at once
        save(model, work / "checkpoint", spec=info["spec"], build=info["build"], input_shape=info["input_shape"],
             classes=data.meta.classes, metrics=scores["metrics"])
        report.write(work)
    emit(args, {"checkpoint": str(out / "checkpoint"), **scores["summary"]},
         f"{scores['text']}\ncheckpoint: {out / 'checkpoint'}\nreport: {out / 'report.md'}")
    return 0


def _load_model(args, data, task: str):
    """(model, info) for the data, built as every command builds a model (classes, channels and image
    size from the data), then checked: the model's task is the data's, and it takes the images and
    predicts the classes."""
    from ..measure import check_fits_data
    from ..models import resolve
    from .task import resolve_task

    meta = data.meta
    model, info = resolve(args.model, num_classes=args.num_classes or meta.num_classes,
                          in_channels=args.in_channels or meta.input_shape[0], spec=args.spec,
                          input_size=tuple(meta.input_shape[1:]))
    info["input_shape"] = list(meta.input_shape)
    name = info.get("spec") or args.model
    resolve_task(model, data, task)  # a model declaring another task: one line saying so
    if task == "classification":
        check_fits_data(model, info["input_shape"], data, name)
    else:
        _check_dense(model, meta, task, name)
    return model, info


def _check_dense(model, meta, task: str, name: str) -> None:
    """A detector or segmenter takes the data's images and predicts its classes; else one DataError."""
    import torch

    from ..core.errors import DataError
    from ..measure import shape_problem

    shape = (1, *meta.input_shape)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except RuntimeError as e:
        problem = shape_problem(e, shape, name)
        raise DataError(problem[0] if problem else f"{name} cannot take the data's input shape {list(shape)}: "
                        f"{str(e).splitlines()[0]}", hint="choose data that matches the model") from None
    if task == "segmentation" and not (isinstance(out, torch.Tensor) and out.ndim == 4):
        raise DataError(f"{name} is to segment, but its output is not per-pixel class logits (N, K, H, W)")
    classes = getattr(model, "num_classes", None) if task == "detection" else out.shape[1]
    if classes is not None and classes != meta.num_classes:
        raise DataError(f"{name} predicts {classes} classes but {meta.name} has {meta.num_classes}",
                        hint="pass --num-classes when building a fresh model, or use matching data")


def _scores(model, data, args, task: str) -> dict:
    """Test and validation scores: what the sidecar, the report and the command's output say."""
    from .evaluation import METRIC, evaluate

    test = evaluate(model, data.test, max_batches=args.max_batches, task=task)
    val = evaluate(model, data.val, max_batches=args.max_batches, task=task) if data.val is not None else {}
    if task == "classification":
        top1 = val.get("top1")
        return {"metric": "top1", "test": test, "val": val, "accuracy": test["top1"],
                "metrics": {"test_top1": test["top1"], "val_top1": top1, "epochs": args.epochs, "data": args.data},
                "summary": {"test_top1": test["top1"], "val_top1": top1},
                "text": f"test top-1 {test['top1']:.2f}% (val {top1 if top1 is None else round(top1, 2)}%)"}
    name = METRIC[task]
    figures = {f"test_{name}": test[name], f"val_{name}": val.get(name), "test_loss": test["loss"],
               "val_loss": val.get("loss")}
    shown = (f"test {name} {test[name]:.2f}" if test[name] is not None else f"no {name} metric installed") \
        + f", test loss {test['loss']:.4f}" + (f" (val {val['loss']:.4f})" if val.get("loss") is not None else "")
    return {"metric": name, "test": test, "val": val, "accuracy": test[name],
            "metrics": {**figures, "task": task, "epochs": args.epochs, "data": args.data},
            "summary": {"task": task, "metric": name, **figures}, "text": shown}


def _report(args, model, info, task: str, scores: dict, stats):
    from ..core.report import Report, figures
    from ..measure import count_macs, count_params

    shape = (1, *info["input_shape"])
    details = {"split": "test", "task": task, "metric": scores["metric"], "epochs": args.epochs, "lr": args.lr,
               "optimizer": args.optimizer, "seed": args.seed, "warmup_steps": stats.warmup_steps,
               "clip_grad": stats.clip_grad, "clipped_steps": stats.clipped_steps, "steps": stats.steps,
               "bn_recalibration": stats.bn_recalibration, "bn_stale_weight": stats.bn_stale_weight}
    if task == "classification":
        details = {"split": "test", "val_top1": scores["val"].get("top1"),
                   **{k: v for k, v in details.items() if k not in ("split", "task", "metric")}}
    else:
        details.update({k: v for k, v in scores["summary"].items() if k not in ("task", "metric")})
    return Report(command="train", model=args.model, data=args.data,
                  result=figures(params=count_params(model), macs=count_macs(model, shape)[0],
                                 accuracy=scores["accuracy"], batch=1, input_shape=list(shape),
                                 artifact="checkpoint/model.safetensors"),
                  details=details)
