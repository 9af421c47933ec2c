"""Models to and from ``.esz`` files: the container plus the architecture sidecar.

The sidecar is the same dict a checkpoint keeps in edgeslim.json (spec, build arguments,
structure changes, input shape, classes, metrics), so ``decode_file`` rebuilds the module
the way ``edgeslim.models.load`` does, and a decoded model saves as a normal checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError, UsageError
from ..core.io import atomic_write_bytes
from . import container

SIDECAR_FORMAT = 1  # edgeslim.models.checkpoint.FORMAT


def shared_from_weight(weight: torch.Tensor, name: str = "") -> dict[str, torch.Tensor]:
    """Codebook / index / mask of a weight-shared tensor, recovered from its values.

    The codebook is the sorted distinct non-zero values; zeros are pruned positions. This
    is exact by construction (codebook[index] reproduces every kept value bit for bit), so
    any weight-shared model (one returned by deep_compress, or a checkpoint of one) encodes.
    """
    w = weight.detach().cpu().float()
    mask = w != 0
    values = w[mask]
    codebook = torch.unique(values, sorted=True) if values.numel() else torch.zeros(1)
    if codebook.numel() > 256:
        raise UsageError(
            f"layer {name!r} holds {codebook.numel()} distinct values: a codebook larger than 256 entries",
            hint="weight-share it first (deep_compress with bits <= 8)")
    index = torch.zeros(w.shape, dtype=torch.long)
    index[mask] = torch.searchsorted(codebook, values)
    return {"codebook": codebook, "index": index, "mask": mask}


def sidecar(model: nn.Module, *, spec: str | None, build: dict | None = None, input_shape=None,
            classes=None, metrics: dict | None = None, extra: dict | None = None) -> dict[str, Any]:
    from .. import __version__

    changes: dict[str, Any] = {}
    if spec is not None:
        from ..models import create
        from ..models import structure

        changes = structure.diff(create(spec, **(build or {})), model)
    return {"format": SIDECAR_FORMAT, "spec": spec, "build": dict(build or {}), "structure": changes,
            "input_shape": list(input_shape) if input_shape is not None else None, "classes": classes,
            "metrics": metrics or {}, "extra": extra or {}, "edgeslim_version": __version__}


def encode_model(model: nn.Module, layers: dict[str, int], *, side: dict[str, Any] | None = None,
                 extra_meta: dict | None = None) -> tuple[bytes, dict[str, dict]]:
    """Bytes of the .esz of ``model``. ``layers`` maps a layer name to its index bits; those
    layers' weights are coded as codebook + Huffman-coded sparse indices, the rest raw."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    shared = {}
    for name, ibits in layers.items():
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            raise UsageError(f"layer {name!r} has no weight to encode")
        shared[key] = dict(shared_from_weight(state[key], name), index_bits=ibits)
    meta = {"sidecar": side or {}, **(extra_meta or {})}
    return container.encode(state, shared, meta=meta)


def write_model(path: str | os.PathLike, model: nn.Module, layers: dict[str, int], **kw) -> tuple[int, dict]:
    data, stats = encode_model(model, layers, **kw)
    atomic_write_bytes(path, data)
    return len(data), stats


def build_model(side: dict[str, Any], state: dict[str, torch.Tensor], source: str = "file", *,
                spec: str | None = None) -> nn.Module:
    """The module an .esz sidecar describes. The sidecar is file content: its spec is built only
    through ``create_from_file`` (a package.module:factory needs ``spec``, the caller's own)."""
    from ..models import create_from_file
    from ..models import structure

    if not side.get("spec"):
        raise CheckpointError(
            f"{source} does not record its architecture (it was encoded from a model without a spec)",
            hint="load its weights with edgeslim.codec.read(path).state_dict into the model that made it")
    model = create_from_file(side["spec"], side.get("build"), source=source, caller_spec=spec)
    try:
        structure.apply(model, side.get("structure") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{source}: the sidecar's 'structure' is malformed ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {source} do not fit its architecture: {str(e).splitlines()[0]}") from None
    return model.eval()


def decode_file(path: str | os.PathLike, *, spec: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Decode an .esz file (or an out DIR holding model.esz) -> (model in eval mode, sidecar).

    The sidecar has the keys of a checkpoint's edgeslim.json (spec, build, structure,
    input_shape, classes, metrics, extra)."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.esz"
    got = container.read(p)
    side = got.meta.get("sidecar") or {}
    if not isinstance(side, dict):
        raise CheckpointError(f"{p}: its metadata's 'sidecar' is {type(side).__name__}, not an object")
    side = dict(side)
    model = build_model(side, got.state_dict, str(p), spec=spec)
    return model, side
