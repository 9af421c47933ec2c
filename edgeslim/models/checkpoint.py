"""Checkpoints: safetensors weights + a JSON sidecar. Nothing is ever unpickled from a file.

    ckpt/model.safetensors
    ckpt/edgeslim.json   {"format": 1, "spec": ..., "build": {...}, "structure": {...}, "input_shape": [C,H,W],
                          "classes": [...], "metrics": {...}, "edgeslim_version": ...}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.errors import CheckpointError, UsageError
from ..core.io import atomic_path, write_json
from . import structure
from .spec import create, default_input_shape

SIDECAR = "edgeslim.json"
WEIGHTS = "model.safetensors"
FORMAT = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".tar")


def save(model: nn.Module, ckpt_dir: str | os.PathLike, *, spec: str, input_shape, build: dict | None = None,
         classes: list[str] | None = None, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``ckpt_dir/model.safetensors`` and ``ckpt_dir/edgeslim.json``.

    ``build`` holds create() keyword arguments (num_classes, in_channels, ...); structural changes
    against ``create(spec, **build)`` are recorded automatically.
    """
    from .. import __version__

    build = dict(build or {})
    reference = create(spec, **build)
    changes = structure.diff(reference, model)
    ckpt = Path(ckpt_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(ckpt / WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    write_json(ckpt / SIDECAR, {
        "format": FORMAT,
        "spec": spec,
        "build": build,
        "structure": changes,
        "input_shape": list(input_shape),
        "classes": classes,
        "metrics": metrics or {},
        "extra": extra or {},
        "edgeslim_version": __version__,
    })
    return ckpt


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """The checkpoint directory for an out DIR, a checkpoint dir or its weights file; None if not one."""
    p = Path(path)
    for cand in (p, p / "checkpoint", p.parent if p.suffix == ".safetensors" else None):
        if cand is not None and (cand / SIDECAR).is_file():
            return cand
    return None


def load(path: str | os.PathLike, *, spec: str | None = None, **build: Any) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save` -> (model in eval mode, sidecar dict).

    A bare PyTorch state_dict file (.pt/.pth) loads with ``weights_only=True`` when ``spec`` names
    its architecture; a pickled full model is refused.
    """
    p = Path(path)
    if p.suffix in _PICKLE_SUFFIXES and p.is_file():
        return _load_state_dict_file(p, spec, build)
    ckpt = find_checkpoint(p)
    if ckpt is None:
        if not p.exists():
            raise CheckpointError(f"no such file or directory: {p}")
        raise CheckpointError(f"{p} is not an edgeslim checkpoint (no {SIDECAR} found)",
                              hint="write one with edgeslim.models.save or `edgeslim train --out DIR`")
    try:
        meta = json.loads((ckpt / SIDECAR).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"unreadable sidecar {ckpt / SIDECAR}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r} is not supported (expected {FORMAT})")
    model = create(meta["spec"], **meta.get("build", {}))
    structure.apply(model, meta.get("structure") or {})
    try:
        state = load_file(str(ckpt / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"cannot read weights {ckpt / WEIGHTS}: {e}") from None
    _load_state(model, state, ckpt)
    model.eval()
    return model, meta


def _load_state(model: nn.Module, state: dict, where: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:3]
        raise CheckpointError(f"weights in {where} do not fit the architecture: {' '.join(first)}") from None


def _load_state_dict_file(p: Path, spec: str | None, build: dict) -> tuple[nn.Module, dict]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        raise CheckpointError(
            f"{p} holds pickled Python objects (a whole model, not just tensors); edgeslim never unpickles "
            "code from a file because that can run arbitrary code",
            hint="in the code that made it, run edgeslim.models.save(model, 'ckpt', spec='pkg.mod:factory', "
                 "input_shape=(C,H,W)), or torch.save(model.state_dict(), 'w.pt') and pass the spec",
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p} is not a state_dict of tensors")
    if spec is None:
        raise UsageError(f"{p} is a bare state_dict: its architecture is unknown",
                         hint="name it with a spec, e.g. --spec resnet20 (CLI) or load(path, spec=...)")
    model = create(spec, **build)
    _load_state(model, obj, p)
    model.eval()
    return model, {"spec": spec, "build": build, "structure": {},
                   "input_shape": list(default_input_shape(spec, build.get("in_channels"))),
                   "classes": None, "metrics": {}}
