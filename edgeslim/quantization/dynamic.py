"""Dynamic int8 quantization and fp16 / bf16 weights: formats ONNX Runtime applies to a float graph.

- ``Dynamic()``: int8 weights (symmetric, per tensor or per channel); activations quantized at
  run time from each batch's own range (uint8). Good for Linear-heavy models, needs no data.
  The simulation quantizes each Linear input with its batch min/max as DynamicQuantizeLinear
  does; the deployable file is made by ``onnxruntime.quantization.quantize_dynamic`` (MatMul ->
  MatMulInteger / DynamicQuantizeMatMul).
- ``Half(dtype="fp16"|"bf16")``: weights stored in 16 bits. The simulation rounds the weights;
  the file stores fp16/bf16 initializers followed by a Cast, so on a CPU without 16-bit kernels
  ONNX Runtime computes in fp32 on the rounded weights (the report says so).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from ..core.config import Config
from ..core.errors import ExportError, ModelError, UsageError
from ..core.registry import Context, register, register_export
from .deploy import record_config
from ..core.select import select_layers
from .primitives import compute_qparams, fake_quant
from .qmodules import FakeQuant, QLinear


class DynamicFakeQuant(FakeQuant):
    """Per-batch range (DynamicQuantizeLinear: uint8, range widened to include 0)."""

    def forward(self, x):
        if self.mode == "off":
            return x
        lo, hi = x.detach().min().double(), x.detach().max().double()
        s, z = compute_qparams(lo, hi, 8, signed=False, symmetric=False)
        return fake_quant(x, s.to(x.device), z.to(x.device), 0, 255)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dynamic(Config):
    """Dynamic int8: int8 weights, activations quantized at run time."""

    kind = "dynamic"
    final = True  # the deployable format: a recipe's last step
    bits: int = 8
    per_channel: bool = False
    layers: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.bits != 8:
            raise UsageError(f"dynamic quantization is 8-bit only (ONNX Runtime's kernels), got bits={self.bits}",
                             hint="use --method ptq or qat for other widths")


@register(Dynamic)
def _apply_dynamic(model: nn.Module, config: Dynamic, ctx: Context) -> nn.Module:
    from .qmodules import weight_quantizer

    model.eval()
    chosen = select_layers(model, types=(nn.Linear,), include=config.layers or None, exclude=config.exclude or None)
    chosen = [(n, m) for n, m in chosen if type(m) is nn.Linear]
    if not chosen:
        raise ModelError("the model has no Linear layer for dynamic quantization",
                         hint="dynamic int8 suits Linear-heavy models; for convolutions use --method ptq")
    for name, lin in chosen:
        q = QLinear.from_float(lin, weight_quantizer(8, per_channel=config.per_channel))
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, _Dyn(q))
    ctx.details["layers"] = [{"layer": n, "type": "Linear", "weight_bits": 8, "act_bits": "dynamic 8",
                              "per_channel": config.per_channel} for n, _ in chosen]
    ctx.details.setdefault("notes", []).append(
        "dynamic int8: weights stored as int8; ONNX Runtime quantizes each Linear's input at run time "
        "(MatMulInteger); convolutions stay float")
    return record_config(model, config)  # its config chooses the exporter (deploy.export)


@register_export(Dynamic)
def _export_dynamic(model: nn.Module, path, example: torch.Tensor, config: Dynamic, *, loader=None) -> dict:
    from .deploy import via_float_onnx

    return via_float_onnx(model, path, example, loader,
                          lambda f, out: export_dynamic(f, out, per_channel=bool(config.per_channel)))


class _Dyn(nn.Module):
    def __init__(self, layer: QLinear):
        super().__init__()
        self.act = DynamicFakeQuant(8)
        self.layer = layer

    def forward(self, x):
        return self.layer(self.act(x))


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gemm(A, W, b, transB=1) with constant W -> MatMul(A, W^T) + Add(b): quantize_dynamic
    quantizes MatMul, not Gemm."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gemm" and n.input[1] in inits and attrs.get("transA", 0) == 0 \
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
            w = numpy_helper.to_array(inits[n.input[1]])
            if attrs.get("transB", 0):
                w = w.T
            wname = n.input[1] + "_t"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
            mm_out = n.output[0] + "_mm" if len(n.input) > 2 else n.output[0]
            nodes.append(helper.make_node("MatMul", [n.input[0], wname], [mm_out], name=n.name + "_matmul"))
            if len(n.input) > 2 and n.input[2]:
                nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=n.name + "_add"))
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def export_dynamic(float_onnx: str | os.PathLike, path: str | os.PathLike, *, per_channel: bool = False) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..core.io import atomic_path

    path = Path(path)
    m = gemm_to_matmul(onnx.load(str(float_onnx)))
    with atomic_path(path) as tmp:
        pre = tmp.with_suffix(".pre.onnx")
        try:
            onnx.save(m, str(pre))
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=["MatMul"], extra_options={"WeightSymmetric": True})
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"onnxruntime quantize_dynamic failed: {str(e).splitlines()[0]}") from None
        finally:
            if pre.exists():
                pre.unlink()
    return {"path": str(path), "size_bytes": path.stat().st_size}


# -- fp16 / bf16 ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Half(Config):
    """16-bit floating-point weights (fp16 or bf16)."""

    kind = "half"
    final = True
    dtype: str = "fp16"

    def validate(self) -> None:
        if self.dtype not in ("fp16", "bf16"):
            raise UsageError(f"dtype must be fp16 or bf16, got {self.dtype!r}")


_TORCH_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}


@register(Half)
def _apply_half(model: nn.Module, config: Half, ctx: Context) -> nn.Module:
    model.eval()
    dt = _TORCH_DTYPE[config.dtype]
    n = 0
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(p.to(dt).float())
                n += p.numel()
    ctx.details["dtype"] = config.dtype
    ctx.details["rounded_params"] = n
    ctx.details.setdefault("notes", []).append(
        f"weights stored as {config.dtype}; ONNX Runtime's CPU provider casts them to fp32 at load and computes in "
        "fp32, so the file is ~2x smaller but not faster on this CPU")
    return record_config(model, config)  # its config chooses the exporter (deploy.export)


@register_export(Half)
def _export_half(model: nn.Module, path, example: torch.Tensor, config: Half, *, loader=None) -> dict:
    from .deploy import via_float_onnx

    return via_float_onnx(model, path, example, loader, lambda f, out: export_half(f, out, config.dtype))


def export_half(float_onnx: str | os.PathLike, path: str | os.PathLike, dtype: str = "fp16") -> dict:
    """Float ONNX -> 16-bit initializers + Cast(to=float) after each."""
    from ..core.io import atomic_path

    m = onnx.load(str(float_onnx))
    target = onnx.TensorProto.FLOAT16 if dtype == "fp16" else onnx.TensorProto.BFLOAT16
    new_inits, casts = [], []
    for t in m.graph.initializer:
        if t.data_type != onnx.TensorProto.FLOAT or int(np.prod(t.dims)) < 16:
            new_inits.append(t)
            continue
        arr = numpy_helper.to_array(t)
        name16 = t.name + f"_{dtype}"
        if dtype == "fp16":
            t16 = numpy_helper.from_array(arr.astype(np.float16), name16)
        else:
            bits = (torch.from_numpy(arr.copy()).to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16))
            t16 = helper.make_tensor(name16, target, arr.shape, bits.tobytes(), raw=True)
        new_inits.append(t16)
        casts.append(helper.make_node("Cast", [name16], [t.name], to=onnx.TensorProto.FLOAT, name=t.name + "_cast"))
    del m.graph.initializer[:]
    m.graph.initializer.extend(new_inits)
    nodes = casts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(m, str(tmp))
        onnx.checker.check_model(str(tmp))
    return {"path": str(path), "size_bytes": path.stat().st_size}
