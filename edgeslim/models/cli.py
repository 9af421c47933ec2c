"""`edgeslim models`: list the zoo with each model's task, parameter count and default input shape."""
from __future__ import annotations

from ..cli_common import emit, positive_int


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--num-classes", type=positive_int,
                   help="count parameters for this many classes (default: each model's own: 10, tinyseg 11 = "
                        "10 garments + background)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..measure import count_params
    from . import ZOO, create

    rows = []
    for name, entry in ZOO.items():
        model = create(name, **({} if args.num_classes is None else {"num_classes": args.num_classes}))
        rows.append({"name": name, "task": entry.task, "params": count_params(model),
                     "input_shape": list(entry.input_shape), "description": entry.description})
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'model':<{width}}  {'task':<14}  {'params':>10}  {'input':<10}  description"]
    lines += [f"{r['name']:<{width}}  {r['task']:<14}  {r['params']:>10,}  {'x'.join(map(str, r['input_shape'])):<10}  "
              f"{r['description']}" for r in rows]
    lines.append("also: torchvision:NAME (classifiers, and detectors / segmenters such as "
                 "torchvision:ssdlite320_mobilenet_v3_large, torchvision:lraspp_mobilenet_v3_large), timm:NAME (when "
                 "installed), package.module:factory, a checkpoint DIR")
    emit(args, {"models": rows}, "\n".join(lines))
    return 0
