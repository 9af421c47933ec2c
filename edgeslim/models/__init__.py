"""Model zoo, spec resolution and safe checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import find_checkpoint, load, save
from .spec import create, create_from_file, default_input_shape
from .structure import register_module_type
from .zoo import TASKS, ZOO, register_model, size_kwargs, task_of
from . import lightweight  # noqa: F401,E402  (registers shufflenetv2_tiny, repvgg_a0)
from . import dense  # noqa: F401,E402  (registers tinydet, tinyseg)
from . import vit  # noqa: F401,E402  (registers vit_tiny, deit_tiny)
from . import nasnet  # noqa: F401,E402  (registers nasnet: what `edgeslim nas` extracts)

__all__ = ["TASKS", "ZOO", "create", "create_from_file", "default_input_shape", "find_checkpoint", "load",
           "register_loader", "register_model", "register_module_type", "resolve", "save", "task_of"]


# file suffix -> loader(path, spec=) -> (model, sidecar), registered by the package that owns the format
# (edgeslim.codec registers .esz): models needs no import of the packages that build on it
_CONTAINER_LOADERS: dict[str, Any] = {}


def register_loader(suffix: str, loader) -> None:
    """Let MODEL arguments ending in ``suffix`` load through ``loader(path, spec=None)``."""
    _CONTAINER_LOADERS[suffix] = loader


def resolve(spec_or_path: str, *, num_classes: int | None = None, in_channels: int | None = None,
            spec: str | None = None, input_size: tuple[int, int] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """What every MODEL argument goes through: a checkpoint (dir, out DIR, .safetensors, a state_dict
    .pt with ``spec``, an .esz) or a spec to build fresh. Returns (model in eval mode, info) with info
    keys spec, build, input_shape, classes, metrics, source. ``input_size`` (H, W) sizes a fresh zoo
    model that depends on it (lenet5, lenet300); checkpoints keep the size they were built for."""
    p = Path(spec_or_path)
    if p.suffix in _CONTAINER_LOADERS:
        model, meta = _CONTAINER_LOADERS[p.suffix](p, spec=spec)
        return model.eval(), {**meta, "source": str(p)}
    if p.exists() or p.suffix in (".pt", ".pth", ".safetensors"):
        model, meta = load(p, spec=spec, **_build(num_classes, in_channels))
        return model, {**meta, "source": str(p)}
    build = {**_build(num_classes, in_channels), **size_kwargs(spec_or_path, input_size)}
    model = create(spec_or_path, **build).eval()
    shape = default_input_shape(spec_or_path, in_channels)
    return model, {"spec": spec_or_path, "build": build, "structure": {},
                   "input_shape": [shape[0], *(input_size or shape[1:])],
                   "classes": None, "metrics": {}, "source": spec_or_path}


def _build(num_classes, in_channels) -> dict:
    return {k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None}
