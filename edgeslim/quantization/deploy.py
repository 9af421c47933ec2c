"""The deployable ONNX file of a quantized model, whatever the method.

- ptq / qat: int8 QDQ (onnx_qdq.export_qdq), run with ONNX Runtime's integer kernels;
- dynamic: float export -> onnxruntime.quantization.quantize_dynamic;
- half: float export -> 16-bit initializers;
- lowbit (k-means, power-of-two, ternary, binary): the float graph with the dequantized weights.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .qmodules import QUANT_LAYERS, FakeQuant, to_float


def method_of(model: nn.Module) -> str:
    return getattr(model, "edgeslim_quant", {}).get("method", "ptq")


def float_model(model: nn.Module) -> nn.Module:
    """A copy with every quantizer removed and the (fake-)quantized weights baked in."""
    from torch.nn.utils import parametrize

    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        if not name:
            continue
        if isinstance(mod, QUANT_LAYERS) or isinstance(mod, FakeQuant):
            new = to_float(mod) if isinstance(mod, QUANT_LAYERS) else nn.Identity()
            parent, _, leaf = name.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, leaf, new)
    for mod in m.modules():
        if parametrize.is_parametrized(mod):
            _unparametrize(mod)
    if isinstance(m, torch.fx.GraphModule):
        m.recompile()
    return m


def _unparametrize(mod: nn.Module) -> None:
    """Bake parametrized tensors into plain parameters on this module only.

    (torch's remove_parametrizations deletes the property from the generated class, which a
    deep copy shares with the original model, so the original would lose its weight.)"""
    with torch.no_grad():
        values = {name: getattr(mod, name).detach().clone() for name in mod.parametrizations.keys()}
    del mod._modules["parametrizations"]
    mod.__class__ = mod.__class__.__bases__[0]
    for name, v in values.items():
        mod._parameters[name] = nn.Parameter(v)


def export(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, loader=None) -> dict:
    from ..export import onnx as export_onnx
    from .dynamic import export_dynamic, export_half
    from .onnx_qdq import export_qdq

    method = method_of(model)
    cfg = getattr(model, "edgeslim_quant", {}).get("config", {})
    if method in ("ptq", "qat"):
        return export_qdq(model, path, example)
    f = float_model(model)
    if method == "lowbit":
        res = export_onnx(f, path, example[:1], loader=loader)
        return {"path": res["path"], "size_bytes": res["size_bytes"]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "float.onnx"
        export_onnx(f, tmp, example[:1], loader=loader)
        if method == "dynamic":
            return export_dynamic(tmp, path, per_channel=bool(cfg.get("per_channel", False)))
        if method == "half":
            return export_half(tmp, path, cfg.get("dtype", "fp16"))
    raise ValueError(f"no exporter for method {method!r}")
