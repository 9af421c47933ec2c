"""The deployable ONNX file of a quantized model, whatever the method.

A quantized model records the config that made it (``model.edgeslim_config``); ``export`` writes
the file with the exporter registered for that config's type (``core.registry.register_export``),
each in its own module:

- PTQ / QAT (ptq.py, qat.py): int8 QDQ (onnx_qdq.export_qdq), run with ONNX Runtime's integer kernels;
- Dynamic (dynamic.py): float export -> onnxruntime.quantization.quantize_dynamic;
- Half (dynamic.py): float export -> 16-bit initializers;
- LowBit (nonuniform.py: k-means, power-of-two, ternary, binary): the float graph with the
  dequantized weights.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .qmodules import QUANT_LAYERS, FakeQuant, to_float


def config_of(model: nn.Module):
    """The quantization config that made ``model`` (None for a model quantized by hand)."""
    return getattr(model, "edgeslim_config", None)


def record_config(model: nn.Module, config) -> nn.Module:
    """Stamp ``model`` with the config that made it (``model.edgeslim_config``), kept through
    ``copy.deepcopy`` -- a torch.fx GraphModule (what PTQ returns) rebuilds itself on a copy and
    keeps only the attributes it is told to preserve."""
    model.edgeslim_config = config
    if isinstance(model, torch.fx.GraphModule):
        try:
            from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY as key
        except ImportError:  # an older torch: the attribute then lives only on this object
            return model
        model.meta.setdefault(key, {})["edgeslim_config"] = config
    return model


def method_of(model: nn.Module) -> str:
    """The kind of the config that made ``model`` ("ptq" when it carries none)."""
    cfg = config_of(model)
    return cfg.kind if cfg is not None else "ptq"


def quant_record(model: nn.Module) -> dict:
    """{"method", "config"} of a quantized model, for a checkpoint's sidecar ({} when unknown)."""
    cfg = config_of(model)
    return {"method": cfg.kind, "config": cfg.to_dict()} if cfg is not None else {}


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
    """Write the deployable file of ``model`` with the exporter of the config that made it (int8 QDQ
    for a model quantized by hand, as ptq() returns)."""
    from ..core.registry import export_for
    from . import _register_all
    from .ptq import PTQ

    _register_all()
    cfg = config_of(model)
    cfg = cfg if cfg is not None else PTQ()
    return export_for(cfg)(model, path, example, cfg, loader=loader)


def via_float_onnx(model: nn.Module, path, example: torch.Tensor, loader, convert) -> dict:
    """Export the float twin of ``model`` (quantizers removed, weights baked in) to a temporary
    ONNX file and write ``convert(float_onnx, path)`` -- for the formats ONNX Runtime builds from it."""
    from ..runtimes import export_onnx

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "float.onnx"
        export_onnx(float_model(model), tmp, example[:1], loader=loader)
        return convert(tmp, path)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` is a quantization simulation (one ``export`` writes as the deployable file):
    it carries the config of a deployable format that made it (``edgeslim_config``, a config with
    ``final``) or holds quantized layers / fake quantizers."""
    if getattr(config_of(model), "final", False):
        return True
    return any(isinstance(m, QUANT_LAYERS) or isinstance(m, FakeQuant) for m in model.modules())
