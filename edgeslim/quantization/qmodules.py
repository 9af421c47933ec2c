"""Modules that simulate quantization in PyTorch and export to ONNX QuantizeLinear/DequantizeLinear.

- ``FakeQuant`` quantizes a tensor on a uniform grid. Modes: "observe" (collect statistics,
  pass the float through), "quant" (fake-quantize), "off". ``freeze()`` turns what the observer
  saw into a scale and zero point. With ``learn_scale()`` the scale becomes an LSQ parameter.
- ``QConv2d`` / ``QLinear`` are the float layers with a per-channel weight quantizer and an int32
  bias grid (scale = input scale x weight scale, as ONNX Runtime's QLinearConv uses).

For export (``exporting()`` context) the same modules emit two custom ops that the ONNX exporter
translates to QuantizeLinear -> DequantizeLinear (activations) and int8 initializer ->
DequantizeLinear (weights, biases), so the file holds the integers the simulation used.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UsageError
from .observers import canonical, make_observer
from .primitives import check_bits, fake_quant, grad_scale, qrange, quantize

_STATE = {"export": False}


@contextlib.contextmanager
def exporting():
    old = _STATE["export"]
    _STATE["export"] = True
    try:
        yield
    finally:
        _STATE["export"] = old


# -- custom ops: identity-free markers the ONNX translation turns into Q/DQ ---------------------

@torch.library.custom_op("edgeslim::qdq", mutates_args=())
def _qdq(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int,
         lo: float, hi: float, clip: bool) -> torch.Tensor:
    return fake_quant(x, scale, zero_point.to(torch.int32), qmin, qmax, axis if scale.dim() else None)


@_qdq.register_fake
def _(x, scale, zero_point, axis, qmin, qmax, lo, hi, clip):
    return torch.empty_like(x)


@torch.library.custom_op("edgeslim::dq", mutates_args=())
def _dq(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * q.dim()
    if scale.dim():
        shape[axis] = -1
    return (q.float() - zero_point.float().reshape(shape)) * scale.reshape(shape)


@_dq.register_fake
def _(q, scale, zero_point, axis):
    return torch.empty(q.shape, dtype=torch.float32, device=q.device)


def translation_table() -> dict:
    """custom_translation_table for torch.onnx.export(dynamo=True)."""
    from onnxscript import opset18 as op

    def qdq_onnx(x, scale, zero_point, axis: int, qmin: int, qmax: int, lo: float, hi: float, clip: bool):
        if clip:  # grids narrower than the 8-bit container saturate here, as in the simulation
            x = op.Clip(x, op.Constant(value_float=lo), op.Constant(value_float=hi))
        q = op.QuantizeLinear(x, scale, zero_point, axis=axis)
        return op.DequantizeLinear(q, scale, zero_point, axis=axis)

    def dq_onnx(q, scale, zero_point, axis: int):
        return op.DequantizeLinear(q, scale, zero_point, axis=axis)

    return {torch.ops.edgeslim.qdq.default: qdq_onnx, torch.ops.edgeslim.dq.default: dq_onnx}


_SYMBOLICS_DONE = []


def register_torchscript_symbolics(opset: int = 17) -> None:
    """Symbolics for the TorchScript ONNX exporter (faster than dynamo; used first)."""
    if opset in _SYMBOLICS_DONE:
        return
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx import symbolic_helper as sh

    def qdq_sym(g, x, scale, zp, axis, qmin, qmax, lo, hi, clip):
        axis = sh._get_const(axis, "i", "axis")
        if sh._get_const(clip, "b", "clip"):
            lo_v = g.op("Constant", value_t=torch.tensor(sh._get_const(lo, "f", "lo"), dtype=torch.float32))
            hi_v = g.op("Constant", value_t=torch.tensor(sh._get_const(hi, "f", "hi"), dtype=torch.float32))
            x = g.op("Clip", x, lo_v, hi_v)
        q = g.op("QuantizeLinear", x, scale, zp, axis_i=axis)
        return g.op("DequantizeLinear", q, scale, zp, axis_i=axis)

    def dq_sym(g, q, scale, zp, axis):
        return g.op("DequantizeLinear", q, scale, zp, axis_i=sh._get_const(axis, "i", "axis"))

    register_custom_op_symbolic("edgeslim::qdq", qdq_sym, opset)
    register_custom_op_symbolic("edgeslim::dq", dq_sym, opset)
    _SYMBOLICS_DONE.append(opset)


# -- FakeQuant -----------------------------------------------------------------------------------

class FakeQuant(nn.Module):
    def __init__(self, bits: int = 8, *, signed: bool = False, symmetric: bool = False, axis: int | None = None,
                 observer: str = "minmax", observer_kw: dict | None = None):
        super().__init__()
        check_bits(bits)
        if bits == 1 and not signed:
            raise UsageError("1-bit uniform quantization needs a signed grid", hint="use --method binary")
        self.bits, self.signed, self.symmetric, self.axis = bits, signed, symmetric, axis
        self.observer_name = canonical(observer)
        self.observer_kw = dict(observer_kw or {})
        self.observer = make_observer(self.observer_name, axis=axis, **self.observer_kw)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32))
        self.mode = "observe"
        self.learned = False

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.signed, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.signed, self.symmetric)[1]

    def extra_repr(self) -> str:
        kind = "per-channel" if self.axis is not None else "per-tensor"
        return (f"bits={self.bits}, {'int' if self.signed else 'uint'}, "
                f"{'symmetric' if self.symmetric else 'affine'}, {kind}, observer={self.observer_name}, mode={self.mode}")

    def reset(self) -> None:
        self.observer = make_observer(self.observer_name, axis=self.axis, **self.observer_kw)
        self.mode = "observe"

    @torch.no_grad()
    def freeze(self) -> None:
        """Scale and zero point from what the observer saw; switch to fake quantization."""
        scale, zp = self.observer.qparams(self.bits, signed=self.signed, symmetric=self.symmetric)
        dev = self.scale.device
        if self.learned:
            self.scale.data = scale.to(dev)
        else:
            self.scale = scale.to(dev)
        self.zero_point = zp.to(dev)
        self.mode = "quant"

    def learn_scale(self) -> None:
        """Make the scale a trainable LSQ step size."""
        if self.learned:
            return
        s = self.scale.detach().clone()
        del self._buffers["scale"]
        self.scale = nn.Parameter(s)
        self.learned = True

    @torch.no_grad()
    def unlearn(self) -> None:
        """Turn a learned (LSQ) scale back into a fixed buffer holding the value in use."""
        if not self.learned:
            return
        s = self.scale.detach().abs().clamp(min=1e-8).clone()
        del self._parameters["scale"]
        self.register_buffer("scale", s)
        self.learned = False

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learned:
            return self.scale
        s = self.scale.abs().clamp(min=1e-8)
        n = x.numel() / (s.numel() if s.dim() else 1)
        return grad_scale(s, 1.0 / (n * max(self.qmax, 1)) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if self.mode == "observe":
            self.observer.update(x)
            return x
        if _STATE["export"]:
            return self._export(x)
        return fake_quant(x, self._scale(x), self.zero_point, self.qmin, self.qmax, self.axis)

    def onnx_zero_point(self) -> torch.Tensor:
        return self.zero_point.to(torch.int8 if self.qmin < 0 else torch.uint8)

    def _export(self, x: torch.Tensor) -> torch.Tensor:
        if self.qmin < -128 or self.qmax > 255 or (self.qmin < 0 and self.qmax > 127):
            raise UsageError("a grid wider than 8 bits cannot be exported as int8 QDQ")
        s = self.scale.detach().abs().clamp(min=1e-8) if self.learned else self.scale
        container = (-128, 127) if self.qmin < 0 else (0, 255)
        clip = (self.qmin, self.qmax) != container
        lo = hi = 0.0
        if clip:
            if s.dim():
                raise UsageError("per-channel activation grids narrower than 8 bits cannot be exported")
            z = float(self.zero_point)
            lo, hi = (self.qmin - z) * float(s), (self.qmax - z) * float(s)
        return torch.ops.edgeslim.qdq(x, s.float(), self.onnx_zero_point(), self.axis or 0, self.qmin, self.qmax,
                                      lo, hi, clip)


def weight_quantizer(bits: int = 8, *, per_channel: bool = True, observer: str = "minmax") -> FakeQuant:
    """Signed symmetric, per output channel (axis 0) by default: ONNX Runtime's S8 weights."""
    if canonical(observer) not in ("minmax", "mse"):
        observer = "minmax"  # histogram methods are for activations; weights are seen whole
    return FakeQuant(bits, signed=True, symmetric=True, axis=0 if per_channel else None, observer=observer)


def activation_quantizer(bits: int = 8, *, observer: str = "minmax", signed: bool = False,
                         symmetric: bool = False, observer_kw: dict | None = None) -> FakeQuant:
    return FakeQuant(bits, signed=signed, symmetric=symmetric, axis=None, observer=observer, observer_kw=observer_kw)


# -- quantized layers -------------------------------------------------------------------------------

class _QMixin:
    """Shared by QConv2d / QLinear: weight quantizer, optional input quantizer link, int32 bias."""

    @classmethod
    def from_float(cls, layer: nn.Module, weight_fq: FakeQuant):
        """The quantized twin of ``layer``, sharing its parameters (no copy)."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.__dict__.update({k: v for k, v in layer.__dict__.items()
                           if k not in ("_parameters", "_buffers", "_modules")})
        q._parameters = dict(layer._parameters)
        q._buffers = dict(layer._buffers)
        q._modules = dict(layer._modules)
        q._init_q(weight_fq)
        return q

    weight_fq: FakeQuant

    def _init_q(self, weight_fq: FakeQuant) -> None:
        self.weight_fq = weight_fq
        self.__dict__["_in_fq"] = None  # not a submodule: the graph owns the input quantizer
        self.quantize_bias = True
        with torch.no_grad():
            weight_fq.reset()
            weight_fq.observer.update(self.weight.detach())
            weight_fq.freeze()

    def link_input(self, fq: FakeQuant | None) -> None:
        self.__dict__["_in_fq"] = fq

    @property
    def input_fq(self) -> FakeQuant | None:
        return self.__dict__.get("_in_fq")

    def requant_weight(self) -> None:
        """Recompute the weight grid from the current weights (after training, folding...)."""
        if not self.weight_fq.learned:
            self.weight_fq.reset()
            self.weight_fq.observer.update(self.weight.detach())
            self.weight_fq.freeze()

    def _bias_scale(self) -> torch.Tensor | None:
        fq = self.input_fq
        if self.bias is None or fq is None or fq.mode != "quant" or not self.quantize_bias or fq.scale.dim():
            return None
        ws = self.weight_fq._scale(self.weight) if self.weight_fq.mode == "quant" else None
        if ws is None:
            return None
        return (fq._scale(self.weight) * ws).reshape(-1).expand(self.out_features if isinstance(self, nn.Linear)
                                                                   else self.out_channels)

    def _cache_key(self):
        fq, inq = self.weight_fq, self.input_fq
        return (self.weight._version, id(self.weight), fq.mode, id(fq.scale), fq.scale._version,
                None if self.bias is None else self.bias._version,
                None if inq is None else (inq.mode, id(inq.scale), inq.scale._version))

    def q_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.training or torch.is_grad_enabled():
            return self._q_weight_bias()
        # inference: weights do not change between calls, quantize them once
        key = self._cache_key()
        cache = self.__dict__.get("_wb_cache")
        if cache is None or cache[0] != key:
            cache = (key, self._q_weight_bias())
            self.__dict__["_wb_cache"] = cache
        return cache[1]

    def _q_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.weight_fq(self.weight) if self.weight_fq.mode == "quant" else self.weight
        b = self.bias
        bs = self._bias_scale()
        if b is not None and bs is not None:
            b = fake_quant(b, bs, torch.zeros_like(bs, dtype=torch.int32), -(2**31) + 1, 2**31 - 1, 0)
        return w, b

    @torch.no_grad()
    def freeze_for_export(self) -> None:
        """Compute the integer weight (int8) and bias (int32) once, as buffers, so the exported graph
        holds integers rather than the ops that compute them from float weights."""
        fq = self.weight_fq
        if fq.mode != "quant":
            return
        s = (fq.scale.detach().abs().clamp(min=1e-8) if fq.learned else fq.scale).float().clone()
        self.register_buffer("w_int8", quantize(self.weight.detach(), s, fq.zero_point, fq.qmin, fq.qmax,
                                                fq.axis).to(torch.int8))
        self.register_buffer("w_scale", s)
        self.register_buffer("w_zp", fq.zero_point.to(torch.int8).clone())
        bs = self._bias_scale()
        if self.bias is not None and bs is not None:
            bs = bs.detach().float().contiguous().clone()
            qb = torch.clamp(torch.round(self.bias.detach() / bs), -(2**31) + 1, 2**31 - 1).to(torch.int32)
            self.register_buffer("b_int32", qb)
            self.register_buffer("b_scale", bs)
            self.register_buffer("b_zp", torch.zeros_like(qb))

    def export_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not hasattr(self, "w_int8"):
            return self.q_weight_bias()
        w = torch.ops.edgeslim.dq(self.w_int8, self.w_scale, self.w_zp, self.weight_fq.axis or 0)
        b = self.bias
        if hasattr(self, "b_int32"):
            b = torch.ops.edgeslim.dq(self.b_int32, self.b_scale, self.b_zp, 0)
        return w, b


class QConv2d(nn.Conv2d, _QMixin):
    def forward(self, x):
        w, b = self.export_weight_bias() if _STATE["export"] else self.q_weight_bias()
        return self._conv_forward(x, w, b)


class QLinear(nn.Linear, _QMixin):
    def forward(self, x):
        w, b = self.export_weight_bias() if _STATE["export"] else self.q_weight_bias()
        return F.linear(x, w, b)


QUANT_LAYERS = (QConv2d, QLinear)


def to_float(m: nn.Module) -> nn.Module:
    """The plain float layer of a quantized one, with the fake-quantized weights baked in."""
    if isinstance(m, QConv2d):
        f = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                      m.bias is not None, m.padding_mode)
    elif isinstance(m, QLinear):
        f = nn.Linear(m.in_features, m.out_features, m.bias is not None)
    else:
        return m
    with torch.no_grad():
        w, b = m.q_weight_bias()
        f.weight.copy_(w)
        if b is not None:
            f.bias.copy_(b)
    return f
