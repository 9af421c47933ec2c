"""Model zoo, spec resolution and safe checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import find_checkpoint, load, save
from .spec import create, default_input_shape
from .structure import register_module_type
from .zoo import ZOO, register_model
from . import lightweight  # noqa: F401,E402  (registers shufflenetv2_tiny, repvgg_a0)

__all__ = ["ZOO", "create", "default_input_shape", "find_checkpoint", "load", "register_model",
           "register_module_type", "resolve", "save"]


def resolve(spec_or_path: str, *, num_classes: int | None = None, in_channels: int | None = None,
            spec: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """What every MODEL argument goes through: a checkpoint (dir, out DIR, .safetensors, a state_dict
    .pt with ``spec``, an .esz) or a spec to build fresh. Returns (model in eval mode, info) with info
    keys spec, build, input_shape, classes, metrics, source."""
    p = Path(spec_or_path)
    if p.suffix == ".esz":
        from ..codec import decode_file

        model, meta = decode_file(p)
        return model.eval(), {**meta, "source": str(p)}
    if p.exists() or p.suffix in (".pt", ".pth", ".safetensors"):
        model, meta = load(p, spec=spec, **_build(num_classes, in_channels))
        return model, {**meta, "source": str(p)}
    build = _build(num_classes, in_channels)
    model = create(spec_or_path, **build).eval()
    return model, {"spec": spec_or_path, "build": build, "structure": {},
                   "input_shape": list(default_input_shape(spec_or_path, in_channels)),
                   "classes": None, "metrics": {}, "source": spec_or_path}


def _build(num_classes, in_channels) -> dict:
    return {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
