"""What a recipe produced: the model, its float twin, the steps and their details, and the
deployable artifact written from it."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from ..core.config import Config
from ..core.shapes import batched


@dataclasses.dataclass
class Compressed:
    model: nn.Module  # the result (a quantization simulation when the recipe quantizes)
    float_model: nn.Module  # the model before the quantization step (== model when none)
    quantized: bool
    steps: list[Config]
    details: list[dict]


def single_step(model: nn.Module, config: Config, details: dict | None = None, *,
                float_model: nn.Module | None = None, quantized: bool = False) -> Compressed:
    """The result of one technique (a CLI command) as a one-step recipe result. Its step record names
    the step and carries only what the per-layer table reads (the blocks a depth pruning removed); the
    technique's full details go to the report through ``extra_details``."""
    step: dict[str, Any] = {"step": 1, "type": config.kind}
    if details and details.get("removed") is not None:
        step["removed"] = jsonable(details["removed"])
    return Compressed(model, float_model if float_model is not None else model, quantized, [config], [step])


def export_artifact(result: Compressed, path: str | os.PathLike, input_shape, *, loader=None,
                    runtime: str = "onnxruntime") -> dict:
    """Write the deployable artifact of ``result`` through its runtime (int8 QDQ for PTQ/QAT on ONNX
    Runtime, float otherwise), atomically."""
    from .. import runtimes

    x = torch.randn(*batched(input_shape), generator=torch.Generator().manual_seed(0))
    if result.quantized and getattr(result.model, "edgeslim_config", None) is None:  # quantized by hand
        from ..quantization import export as qexport

        return qexport(result.model, path, x, loader=loader)
    return runtimes.get(runtime).export(result.model, path, x, loader=loader)


def layer_policy(original: nn.Module, result: Compressed) -> list[dict]:
    """One row per Conv2d / Linear of the original model: channels before and after, how it was
    decomposed, its weight bit width in the deployed artifact; ``removed`` when its whole block went
    (depth pruning)."""
    bits: dict[str, Any] = {}
    floats: set[str] = set()
    dropped = [b for d in result.details if d.get("type") == "block_prune" for b in d.get("removed") or []]
    for d in result.details:
        if d.get("type") in ("ptq", "qat"):
            for row in d.get("layers") or []:
                bits[row["layer"]] = row.get("weight_bits")
            for row in d.get("float_layers") or []:
                floats.add(row["layer"])
    after = dict(result.float_model.named_modules())
    rows = []
    for name, m in original.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        new = after.get(name)
        out_b = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        in_b = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        row = {"layer": name, "type": type(m).__name__, "out": out_b, "out_after": None, "in": in_b, "in_after": None,
               "lowrank": "", "weight_bits": None, "params": sum(p.numel() for p in m.parameters()), "params_after": None,
               "removed": any(name.startswith(b + ".") for b in dropped)}
        if isinstance(new, type(m)):
            row["out_after"] = new.out_channels if isinstance(new, nn.Conv2d) else new.out_features
            row["in_after"] = new.in_channels if isinstance(new, nn.Conv2d) else new.in_features
            row["params_after"] = sum(p.numel() for p in new.parameters())
        elif new is not None:  # replaced by a factorized sequence
            subs = [s for s in new.modules() if isinstance(s, (nn.Conv2d, nn.Linear))]
            row["lowrank"] = f"{type(new).__name__} of {len(subs)}"
            row["params_after"] = sum(p.numel() for p in new.parameters())
            if subs:
                f, l = subs[0], subs[-1]
                row["in_after"] = f.in_channels if isinstance(f, nn.Conv2d) else f.in_features
                row["out_after"] = l.out_channels if isinstance(l, nn.Conv2d) else l.out_features
        if row["removed"]:
            row.update(out_after=0, in_after=0, params_after=0)
        elif result.quantized:
            hit = [b for k, b in bits.items() if k == name or k.startswith(name + ".")]
            row["weight_bits"] = (hit[0] if hit else "float") if name not in floats else "float"
        else:
            row["weight_bits"] = "float"
        rows.append(row)
    return rows


def jsonable(d: Any) -> Any:
    import json

    from ..core.io import _json_default

    try:
        return json.loads(json.dumps(d, default=_json_default))
    except TypeError:
        return {k: str(v) for k, v in d.items()} if isinstance(d, dict) else str(d)
