"""Arguments and helpers every sub-command shares, so the CLI stays one shape."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .core.errors import UsageError
from .core.io import _json_default
from .core.shapes import batched


def add_model_args(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        p.add_argument("model", metavar="MODEL",
                       help="zoo name, torchvision:NAME, timm:NAME, pkg.mod:factory, or a checkpoint/out DIR")
    p.add_argument("--num-classes", type=positive_int,
                   help="classes of a freshly built model (default: from --data, else 10)")
    p.add_argument("--in-channels", type=positive_int,
                   help="input channels of a freshly built model (default: from --data)")
    p.add_argument("--spec", help="architecture of a bare state_dict .pt file")


def add_data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--data", required=required, metavar="DATA",
                   help="fashion-mnist | imagefolder:PATH | synthetic:C,H,W[:N]")
    p.add_argument("--data-dir", type=existing_dir, help="where Fashion-MNIST lives (also EDGESLIM_DATA)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--val-fraction", type=fraction, default=0.1, help="validation share of the training data, "
                                                                      "in [0, 1) (default 0.1)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--max-batches", type=positive_int, help="cap evaluation batches (quick looks)")


def add_output_args(p: argparse.ArgumentParser, *, out_required: bool = False, out_help: str = "output directory") -> None:
    p.add_argument("--out", required=out_required, metavar="DIR", help=out_help)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def deploy_runtimes() -> list[str]:
    """The runtimes a result can be deployed to (those that run a file)."""
    from . import runtimes

    return [n for n in runtimes.names() if n != "torch"]


def add_runtime_arg(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    p.add_argument("--runtime", choices=deploy_runtimes(), default="onnxruntime",
                   help=help or "the runtime the result is exported to, timed and scored in; DIR/model.* is its "
                                "file (.onnx, OpenVINO .xml+.bin, .tflite, .pte; default onnxruntime)")


def add_measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W", help="e.g. 1,3,224,224 (default: the model's)")
    p.add_argument("--threads", type=thread_count, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs after warm-up (default 50)")
    p.add_argument("--warmup", type=nonneg_int, default=10, help="untimed runs first (default 10)")


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: expected comma-separated integers like 1,3,224,224")
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: give C,H,W or N,C,H,W with positive sizes")
    return shape


# -- argument types: a bad value is a usage error naming the value and its valid range, at parse time --

MAX_THREADS = max(256, 4 * (os.cpu_count() or 1))


def _interval(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def int_range(lo: int, hi: int | None = None):
    """An argparse type: an integer in lo..hi (hi None: no upper bound)."""
    valid = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {valid}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {value}")
        return value

    parse.__name__ = valid
    return parse


def float_range(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """An argparse type: a finite number in the interval (open or closed at each end)."""
    valid = f"a number {_interval(lo, hi, lo_open, hi_open)}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {valid}, got {text!r}") from None
        low_ok = value > lo if lo_open else value >= lo
        high_ok = hi is None or (value < hi if hi_open else value <= hi)
        if not (math.isfinite(value) and low_ok and high_ok):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text}")
        return value

    parse.__name__ = valid
    return parse


positive_int = int_range(1)
nonneg_int = int_range(0)
thread_count = int_range(1, MAX_THREADS)
positive_float = float_range(0, lo_open=True)
nonneg_float = float_range(0)
fraction = float_range(0, 1, hi_open=True)  # [0, 1): val fractions, confidence
unit = float_range(0, 1)  # [0, 1]
percent = float_range(0, 100)  # accuracy floors, in points


def existing_dir(text: str) -> str:
    if not Path(text).expanduser().is_dir():
        what = "is not a folder" if Path(text).expanduser().exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return text


def text_file(text: str) -> str:
    """An input file edgeslim reads as text (recipes, spaces, layer maps): it must exist and be UTF-8."""
    p = Path(text).expanduser()
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} {'is not a file' if p.exists() else 'does not exist'}")
    try:
        p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{text} is not a text (YAML/JSON) file") from None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {e.strerror or e}") from None
    return text


def opset(text: str) -> int:
    """An ONNX opset both the exporters and ONNX Runtime can handle (export.opset_range())."""
    from .runtimes.onnx_export import opset_range

    lo, hi = opset_range()
    return int_range(lo, hi)(text)


def available_devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def torch_device(text: str) -> str:
    """A torch device this machine has: cpu, cuda / cuda:N (when CUDA is available), mps (when available)."""
    name = text.strip().lower()
    choices = available_devices()
    if name not in choices:
        raise argparse.ArgumentTypeError(f"device {text!r} is not available here; available: {', '.join(choices)}")
    return name


def load_data(args: argparse.Namespace):
    data_dir = getattr(args, "data_dir", None)
    if not getattr(args, "data", None):
        if data_dir:
            raise UsageError(f"--data-dir {data_dir} is given without --data",
                             hint="add --data fashion-mnist (--data-dir is where its files are)")
        return None
    from . import data

    if data_dir and args.data.strip().lower().replace("_", "-") not in ("fashion-mnist", "fashionmnist"):
        raise UsageError(f"--data-dir applies to --data fashion-mnist only, not {args.data}",
                         hint="leave --data-dir out (imagefolder:PATH names its own folder)")

    return data.load(args.data, batch_size=args.batch_size, val_fraction=args.val_fraction,
                     seed=args.seed, data_dir=args.data_dir)


def load_model(args: argparse.Namespace, data=None):
    """(model, info) from the MODEL argument; a fresh model takes classes, channels and (zoo models
    that depend on it) the image size from the data."""
    from . import models

    num_classes = args.num_classes
    in_channels = args.in_channels
    input_size = None
    if data is not None:
        num_classes = num_classes or (data.meta.num_classes if data.meta.labelled else None)
        in_channels = in_channels or data.meta.input_shape[0]
        input_size = tuple(data.meta.input_shape[1:])
    model, info = models.resolve(args.model, num_classes=num_classes, in_channels=in_channels, spec=args.spec,
                                 input_size=input_size)
    if data is not None:
        info["input_shape"] = list(data.meta.input_shape)
        from .measure import check_fits_data

        check_fits_data(model, info["input_shape"], data, info.get("spec") or "the model")
    return model, info


def input_shape(args: argparse.Namespace, info: dict | None, model=None, name: str | None = None) -> tuple[int, ...]:
    """(N, C, H, W) from --input-shape, else the model's own; with ``model``, checked to fit it (a shape too
    small for a kernel, or with the wrong channels, is one usage error naming it)."""
    if getattr(args, "input_shape", None):
        shape = batched(args.input_shape)
    elif info and info.get("input_shape"):
        shape = batched(info["input_shape"])
    else:
        raise UsageError("the input shape is unknown", hint="pass --input-shape N,C,H,W")
    if model is not None:
        from .measure import check_input

        check_input(model, shape, name or getattr(args, "model", None) or "the model")
    return tuple(shape)


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, default=_json_default)
        sys.stdout.write("\n")
    else:
        print(text)


def out_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.out) if getattr(args, "out", None) else None


_INPUT_ARGS = ("model", "teacher", "student", "esz", "recipe", "space", "data_dir", "config", "models")


def input_paths(args: argparse.Namespace) -> list[str]:
    """Every path a command reads, for the rule that an output never destroys an input."""
    paths: list[str] = []
    for name in _INPUT_ARGS:
        v = getattr(args, name, None)
        for item in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(item, str) and item:
                paths.append(item)
    data = getattr(args, "data", None)
    if isinstance(data, str) and ":" in data and data.split(":", 1)[0] not in ("synthetic",):
        paths.append(data.split(":", 1)[1])
    return paths


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: an --out DIR that would destroy an input, or cannot be written, is refused."""
    from .core.outdir import check_out

    out = getattr(args, "out", None)
    if not out:
        return
    inputs = input_paths(args)
    if args.command == "export":  # --out names a file there
        real = Path(out).resolve()
        if any(Path(i).exists() and Path(i).resolve() == real for i in inputs):
            raise UsageError(f"--out {out} is the input file: writing it would destroy the input",
                             hint="choose another output file")
        return
    check_out(out, inputs=inputs, force=bool(getattr(args, "force", False)),
              refuse_model=args.command == "decode")


def output_options(args: argparse.Namespace, info: dict, *, command: str | None = None, **fields):
    """The OutputOptions of a command's out DIR from its arguments and the model's info (spec, build,
    classes); ``fields`` set the rest (metrics, layer_table, ...). DIR keeps baseline.onnx, as every
    CLI command's layout does."""
    from .output import OutputOptions

    values = dict(command=command or args.command, spec=info.get("spec"), build=info.get("build") or {},
                  classes=info.get("classes"), model_name=getattr(args, "model", None), data_name=getattr(args, "data", None),
                  threads=args.threads, runs=args.runs, warmup=args.warmup, max_batches=getattr(args, "max_batches", None),
                  keep_baseline=True, runtime=getattr(args, "runtime", None) or "onnxruntime")
    return OutputOptions(**{**values, **fields})


def metric_of(d: dict) -> str:
    """The name of the metric a report dict's ``accuracy`` holds (top1 when it names none)."""
    return ((d.get("details") or {}).get("metric") or {}).get("name") or "top1"


def score_change(d: dict, base: float, result: float, *, roles: tuple[str, str] = ("", ""), tail: str = "") -> str:
    """'accuracy 91.20% -> 90.85%' (top-1, top-5) or 'map 31.40 -> 30.95' (every other metric, in its points)
    for a report dict ``d``; ``roles`` precede the two figures, ``tail`` follows."""
    name = metric_of(d)
    word, unit = ("accuracy", "%") if name in ("top1", "top5") else (name, "")
    return f"{word} {roles[0]}{base:.2f}{unit} -> {roles[1]}{result:.2f}{unit}{tail}"


def wrote_line(out: Path | None, info: dict, report=None) -> list[str]:
    """'wrote DIR/model.onnx, DIR/report.json[, DIR/checkpoint]': the deployable file as the report names it."""
    if out is None:
        return []
    name = ((report.result or {}).get("artifact") if report is not None else None) or "model.onnx"
    return [f"wrote {out}/{name}, {out}/report.json" + (f", {out}/checkpoint" if (out / "checkpoint").is_dir() else "")]
