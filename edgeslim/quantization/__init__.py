"""Quantization: PTQ, QAT, dynamic int8, fp16/bf16 and low-bit formats, deployed as ONNX.

    q = edgeslim.quantize(model, PTQ(bits=8, calibration="entropy"), data=data)
    edgeslim.quantization.export(q, "model.onnx", example)      # int8 QDQ, run by ONNX Runtime's integer kernels

Every config returns a PyTorch model that simulates what the exported file computes, so the
simulated accuracy predicts the deployed one; ``export`` writes the deployable ONNX file.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..core.config import Config
from ..core.errors import UsageError
from ..core.registry import Context, apply
from .observers import OBSERVERS, make_observer
from .primitives import check_bits, compute_qparams, dequantize, fake_quant, qrange, quantize as quantize_tensor, sqnr_db
from .ptq import PTQ, calibrate, ptq

METHODS = ("ptq", "qat", "dynamic", "fp16", "bf16", "kmeans", "pow2", "ternary", "binary")


def _register_all() -> None:
    from . import dynamic, nonuniform, qat  # noqa: F401  (register their handlers)


def quantize_with_details(model: nn.Module, config: Config | None = None, *, data: Any = None,
                          inplace: bool = False, teacher: nn.Module | None = None, seed: int = 0,
                          progress: bool = True) -> tuple[nn.Module, dict]:
    """Like :func:`quantize`, also returning what was done (per-layer table, calibration, notes)."""
    _register_all()
    config = PTQ() if config is None else config
    if not isinstance(config, Config):
        raise UsageError(f"config must be a quantization config (PTQ, QAT, ...), got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    work = model if inplace else copy.deepcopy(model)
    ctx = Context(data=data, teacher=teacher, seed=seed, progress=progress)
    out = apply(work, config, ctx)
    out.edgeslim_quant = {"method": config.kind, "config": config.to_dict()}
    return out, ctx.details


def quantize(model: nn.Module, config: Config | None = None, *, data: Any = None, inplace: bool = False,
             teacher: nn.Module | None = None, seed: int = 0, progress: bool = True) -> nn.Module:
    """Quantize ``model`` as ``config`` says (PTQ() by default) and return the simulated model.

    The caller's model is left untouched unless ``inplace=True``. ``data`` (a DataBundle, a
    DataLoader or a tensor) supplies calibration / training batches.
    """
    return quantize_with_details(model, config, data=data, inplace=inplace, teacher=teacher, seed=seed,
                                 progress=progress)[0]


def export(model: nn.Module, path, example, **kw) -> dict:
    """Write the deployable ONNX file of a quantized model (method-specific; see each module)."""
    from .deploy import export as _export

    return _export(model, path, example, **kw)


__all__ = ["METHODS", "OBSERVERS", "PTQ", "calibrate", "check_bits", "compute_qparams", "dequantize", "export",
           "fake_quant", "make_observer", "ptq", "qrange", "quantize", "quantize_tensor", "quantize_with_details",
           "sqnr_db"]
