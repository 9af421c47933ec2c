"""Arguments and helpers every sub-command shares, so the CLI stays one shape."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .core.errors import DataError, UsageError
from .core.io import _json_default


def add_model_args(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        p.add_argument("model", metavar="MODEL",
                       help="zoo name, torchvision:NAME, timm:NAME, pkg.mod:factory, or a checkpoint/out DIR")
    p.add_argument("--num-classes", type=int, help="classes of a freshly built model (default: from --data, else 10)")
    p.add_argument("--in-channels", type=int, help="input channels of a freshly built model (default: from --data)")
    p.add_argument("--spec", help="architecture of a bare state_dict .pt file")


def add_data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--data", required=required, metavar="DATA",
                   help="fashion-mnist | imagefolder:PATH | synthetic:C,H,W[:N]")
    p.add_argument("--data-dir", help="where Fashion-MNIST lives (also EDGESLIM_DATA)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batches", type=int, help="cap evaluation batches (quick looks)")


def add_output_args(p: argparse.ArgumentParser, *, out_required: bool = False, out_help: str = "output directory") -> None:
    p.add_argument("--out", required=out_required, metavar="DIR", help=out_help)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W", help="e.g. 1,3,224,224 (default: the model's)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=int, default=50, help="timed runs after warm-up (default 50)")
    p.add_argument("--warmup", type=int, default=10)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: expected comma-separated integers like 1,3,224,224")
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: give C,H,W or N,C,H,W with positive sizes")
    return shape


def load_data(args: argparse.Namespace):
    if not getattr(args, "data", None):
        return None
    from . import data

    return data.load(args.data, batch_size=args.batch_size, val_fraction=args.val_fraction,
                     seed=args.seed, data_dir=args.data_dir)


def load_model(args: argparse.Namespace, data=None):
    """(model, info) from the MODEL argument; a fresh model takes classes/channels from the data."""
    from . import models

    num_classes = args.num_classes
    in_channels = args.in_channels
    if data is not None:
        num_classes = num_classes or (data.meta.num_classes if data.meta.labelled else None)
        in_channels = in_channels or data.meta.input_shape[0]
    model, info = models.resolve(args.model, num_classes=num_classes, in_channels=in_channels, spec=args.spec)
    if data is not None:
        info["input_shape"] = list(data.meta.input_shape)
        check_classes(model, info, data)
    return model, info


def check_classes(model, info: dict, data) -> None:
    import torch

    if not data.meta.labelled:
        return
    shape = (1, *info["input_shape"])
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except RuntimeError as e:
        raise DataError(f"the model cannot take the data's input shape {list(shape)}: {str(e).splitlines()[0]}",
                        hint="pass --in-channels, or choose data that matches the model") from None
    if out.ndim != 2 or out.shape[1] != data.meta.num_classes:
        raise DataError(f"the model predicts {out.shape[-1]} classes but {data.meta.name} has {data.meta.num_classes}",
                        hint="pass --num-classes when building a fresh model, or use matching data")


def input_shape(args: argparse.Namespace, info: dict | None) -> tuple[int, ...]:
    if getattr(args, "input_shape", None):
        s = args.input_shape
        return s if len(s) == 4 else (1, *s)
    if info and info.get("input_shape"):
        return (1, *info["input_shape"])
    raise UsageError("the input shape is unknown", hint="pass --input-shape N,C,H,W")


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, default=_json_default)
        sys.stdout.write("\n")
    else:
        print(text)


def out_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.out) if getattr(args, "out", None) else None


def measure_and_write(args: argparse.Namespace, *, command: str, baseline, result_model, info: dict, data,
                      shape, details: dict, metrics: dict | None = None, model_name: str | None = None):
    """What every command with a float result does last: export both models, measure them side by side
    (ONNX Runtime latency, artifact size, test accuracy of the exported files), record the torch accuracy
    of the result, and -- with --out -- write DIR/model.onnx, DIR/checkpoint and the Report.
    Returns (report, out DIR or None)."""
    import tempfile

    from .core.report import Report
    from .measure import compare
    from .models import save
    from .train import evaluate

    out = out_dir(args)
    with tempfile.TemporaryDirectory() as scratch:
        work = out or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        test = (data.test or data.val) if data is not None else None
        labelled = bool(data is not None and data.meta.labelled and test is not None)
        base, result = compare(baseline, result_model, shape, workdir=work, loader=test if labelled else None,
                               threads=args.threads, runs=args.runs, warmup=args.warmup,
                               max_batches=args.max_batches)
        if labelled:
            details["accuracy_split"] = "test"
            details["torch_accuracy"] = evaluate(result_model, test, max_batches=args.max_batches)["top1"]
        if out is not None and info.get("spec"):
            save(result_model, out / "checkpoint", spec=info["spec"], build=info.get("build") or {},
                 input_shape=list(shape[1:]), classes=data.meta.classes if labelled else info.get("classes"),
                 metrics={"test_top1": result["accuracy"], **(metrics or {})})
        report = Report(command=command, model=model_name or args.model, data=args.data, baseline=base,
                        result=result, details=details)
        if out is not None:
            report.write(out)
    return report, out


def wrote_line(out: Path | None, info: dict) -> list[str]:
    if out is None:
        return []
    return [f"wrote {out}/model.onnx, {out}/report.json" + (f", {out}/checkpoint" if info.get("spec") else "")]
