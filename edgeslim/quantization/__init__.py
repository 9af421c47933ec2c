"""Quantization: PTQ, QAT, dynamic int8, fp16/bf16 and low-bit formats, deployed as ONNX.

    q = edgeslim.quantize(model, PTQ(bits=8, calibration="entropy"), data=data)
    edgeslim.quantization.export(q, "model.onnx", example)      # int8 QDQ, run by ONNX Runtime's integer kernels

Every config returns a PyTorch model that simulates what the exported file computes, so the
simulated accuracy predicts the deployed one; ``export`` writes the deployable ONNX file.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..core.config import Config
from ..core.registry import Context, run
from .observers import OBSERVERS, make_observer
from .primitives import check_bits, compute_qparams, dequantize, fake_quant, qrange, quantize as quantize_tensor, sqnr_db
from .deploy import is_quantized
from .ptq import PTQ, calibrate, ptq

METHODS = ("ptq", "qat", "dynamic", "fp16", "bf16", "kmeans", "pow2", "ternary", "binary")


def _register_all() -> None:
    from . import dynamic, nonuniform, qat  # noqa: F401  (register their handlers and exporters)
    from . import litert_int8  # noqa: F401  (PTQ's int8 path for the litert runtime)
    from . import executorch_int8  # noqa: F401  (PTQ's int8 path for the executorch runtime)


def quantize(model: nn.Module, config: Config | None = None, *, data: Any = None, inplace: bool = False,
             teacher: nn.Module | None = None, seed: int = 0, progress: bool = True) -> nn.Module:
    """Quantize ``model`` as ``config`` says (PTQ() by default) and return the simulated model.

    The caller's model is left untouched unless ``inplace=True``. ``data`` (a DataBundle, a
    DataLoader or a tensor) supplies calibration / training batches. The result records the config
    that made it (``model.edgeslim_config``), which chooses its exporter. What was done (per-layer
    table, calibration, notes): ``core.registry.run(model, config, ctx)`` returns it with the model.
    """
    _register_all()
    from .dynamic import Dynamic, Half
    from .nonuniform import LowBit
    from .qat import QAT

    ctx = Context(data=data, teacher=teacher, seed=seed, progress=progress)
    return run(model, PTQ() if config is None else config, ctx, inplace=inplace,
               accepts=(PTQ, QAT, Dynamic, Half, LowBit))[0]


def export(model: nn.Module, path, example, **kw) -> dict:
    """Write the deployable ONNX file of a quantized model (method-specific; see each module)."""
    from .deploy import export as _export

    return _export(model, path, example, **kw)


__all__ = ["METHODS", "OBSERVERS", "PTQ", "calibrate", "check_bits", "compute_qparams", "dequantize", "export",
           "fake_quant", "is_quantized", "make_observer", "ptq", "qrange", "quantize", "quantize_tensor", "sqnr_db"]

_register_all()  # every method registers its handler and per-runtime exporters when the package loads
