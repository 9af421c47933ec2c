"""`edgeslim models`: list the zoo with parameter counts and default input shapes."""
from __future__ import annotations

from ..cli_common import emit, positive_int


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--num-classes", type=positive_int, default=10)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..measure import count_params
    from . import ZOO, create

    rows = []
    for name, entry in ZOO.items():
        model = create(name, num_classes=args.num_classes)
        rows.append({"name": name, "params": count_params(model), "input_shape": list(entry.input_shape),
                     "description": entry.description})
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'model':<{width}}  {'params':>10}  {'input':<10}  description"]
    lines += [f"{r['name']:<{width}}  {r['params']:>10,}  {'x'.join(map(str, r['input_shape'])):<10}  {r['description']}"
              for r in rows]
    lines.append("also: torchvision:NAME, timm:NAME (when installed), package.module:factory, a checkpoint DIR")
    emit(args, {"models": rows}, "\n".join(lines))
    return 0
