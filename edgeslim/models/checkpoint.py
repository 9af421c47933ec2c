"""Checkpoints: safetensors weights + a JSON sidecar. Nothing is ever unpickled from a file.

    ckpt/model.safetensors
    ckpt/edgeslim.json   {"format": 1, "spec": ..., "build": {...}, "structure": {...}, "input_shape": [C,H,W],
                          "classes": [...], "metrics": {...}, "weights_sha256": ..., "edgeslim_version": ...}

The sidecar is a file, so nothing in it is trusted: its spec goes through
``spec.create_from_file`` (no user code is imported because a sidecar names it), every field is
type-checked, and the weights must match the recorded SHA-256 (corruption is reported as such).
"""
from __future__ import annotations

import hashlib
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
from .spec import create, create_from_file, default_input_shape

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
        digest = file_sha256(tmp)
    write_json(ckpt / SIDECAR, {
        "format": FORMAT,
        "spec": spec,
        "build": build,
        "structure": changes,
        "input_shape": list(input_shape),
        "classes": classes,
        "metrics": metrics or {},
        "extra": extra or {},
        "weights_sha256": digest,
        "edgeslim_version": __version__,
    })
    return ckpt


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    meta = read_sidecar(ckpt / SIDECAR)
    weights = ckpt / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{ckpt} has a sidecar but no weights file {WEIGHTS}")
    if meta.get("weights_sha256") and file_sha256(weights) != meta["weights_sha256"]:
        raise CheckpointError(f"{weights} is corrupted: its SHA-256 does not match the one its sidecar recorded",
                              hint="restore the checkpoint from a good copy, or train / compress it again")
    model = create_from_file(meta["spec"], meta.get("build"), source=str(ckpt / SIDECAR), caller_spec=spec)
    try:
        structure.apply(model, meta.get("structure") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{ckpt / SIDECAR}: the field 'structure' is malformed ({type(e).__name__}: {e})") from None
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"cannot read weights {weights}: {e}") from None
    _load_state(model, state, ckpt)
    model.eval()
    return model, meta


# field -> (accepted types, required); anything else in a sidecar is ignored
_FIELDS = {"format": ((int,), True), "spec": ((str,), True), "build": ((dict, type(None)), False),
           "structure": ((dict, type(None)), False), "input_shape": ((list, type(None)), False),
           "classes": ((list, type(None)), False), "metrics": ((dict, type(None)), False),
           "extra": ((dict, type(None)), False), "weights_sha256": ((str, type(None)), False)}


def read_sidecar(path: Path) -> dict:
    """The sidecar as a dict, each field present with the right type, or one CheckpointError naming it."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"unreadable sidecar {path}: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r} is not supported (expected {FORMAT})")
    for key, (types, required) in _FIELDS.items():
        if key not in meta:
            if required:
                raise CheckpointError(f"{path}: the field {key!r} is missing")
            continue
        if not isinstance(meta[key], types) or isinstance(meta[key], bool) and bool not in types:
            raise CheckpointError(f"{path}: the field {key!r} should be "
                                  f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}, "
                                  f"got {type(meta[key]).__name__}")
    shape = meta.get("input_shape")
    if shape is not None and not (len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise CheckpointError(f"{path}: the field 'input_shape' should be [C, H, W] of positive integers, got {shape}")
    return meta


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
