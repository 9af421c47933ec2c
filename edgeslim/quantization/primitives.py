"""Uniform quantization primitives: the integer grid, its parameters and fake quantization.

A real value x maps to the integer ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and
back to ``(q - zero_point) * scale``. Rounding is half-to-even, the same as ONNX QuantizeLinear,
so what PyTorch simulates is what ONNX Runtime computes.

- affine (asymmetric): the grid covers [min, max] (always widened to include 0, so that zero,
  padding and ReLU outputs are exact); zero_point is an integer in [qmin, qmax].
- symmetric: zero_point = 0. Signed symmetric grids are "narrow" (-(2^(b-1)-1) .. 2^(b-1)-1),
  as ONNX Runtime's per-channel int8 weights are, so +max and -max are both exact.

``fake_quant`` is differentiable: a straight-through estimator for rounding, with the clamp
giving zero gradient outside the range (the clipped STE), and the gradient with respect to the
scale that LSQ (Esser et al., 2020) uses, so one function serves PTQ, QAT with frozen ranges and
QAT with learned ranges.
"""
from __future__ import annotations

import torch

from ..core.errors import UsageError

MIN_BITS, MAX_BITS = 1, 8


def check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise UsageError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}",
                         hint="8 bits runs on ONNX Runtime's integer kernels; 2-7 bits are simulated "
                              "and stored in 8-bit containers; 1 bit means --method binary")
    return bits


def qrange(bits: int, signed: bool, symmetric: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-bit grid (narrow for signed symmetric)."""
    if signed:
        hi = (1 << (bits - 1)) - 1
        return (-hi if symmetric else -hi - 1), hi
    return 0, (1 << bits) - 1


def compute_qparams(min_val: torch.Tensor, max_val: torch.Tensor, bits: int, *, signed: bool,
                    symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float32, zero_point int32) from a range, per tensor or per channel.

    The range is widened to include 0. A zero-width range (constant zero tensor, all-zero
    channel) gets scale 1, which represents 0 exactly.
    """
    lo = torch.minimum(torch.as_tensor(min_val, dtype=torch.float64), torch.zeros(()))
    hi = torch.maximum(torch.as_tensor(max_val, dtype=torch.float64), torch.zeros(()))
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise UsageError("cannot quantize a range that is not finite (NaN or inf in the data)")
    qmin, qmax = qrange(bits, signed, symmetric)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        levels = qmax if signed else qmax - qmin
        scale = amax / levels
        zp = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.clamp(torch.round(qmin - lo / safe), qmin, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    scale = torch.clamp(scale, min=torch.finfo(torch.float32).tiny * 2**24)  # stay a normal float32
    return scale, zp.to(torch.int32)


def _bcast(p: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or p.dim() == 0 or p.numel() == 1:
        return p.reshape(())
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward."""
    return torch.round(x) + (x - x.detach())  # exactly round(x) in the forward pass


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Value of x, gradient multiplied by g (LSQ's step-size gradient scale)."""
    xg = x * g
    return x.detach() + (xg - xg.detach())  # exactly x in the forward pass


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``t`` over the dimensions that ``shape`` broadcasts."""
    if t.shape == shape:
        return t
    if len(shape) == 0:
        return t.sum()
    dims = tuple(d for d, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1)
    return t.sum(dims, keepdim=True) if dims else t


class _FakeQuantSTE(torch.autograd.Function):
    """Fake quantization with the clipped straight-through estimator for x and LSQ's gradient for
    the scale, in one node: it keeps only its input for the backward pass and recomputes the
    rest there (QAT is memory-bound on CPU; the unfused version stores several full-size
    intermediates per quantizer and runs about twice as many element-wise kernels)."""

    @staticmethod
    def forward(ctx, x, s, z, qmin: int, qmax: int):
        ctx.save_for_backward(x, s, z)
        ctx.qmin, ctx.qmax = qmin, qmax
        q = torch.round(x / s).add_(z).clamp_(qmin, qmax)
        return q.sub_(z).mul_(s)

    @staticmethod
    def backward(ctx, g):
        x, s, z = ctx.saved_tensors
        xs = x / s
        v = xs + z
        inside = (v >= ctx.qmin) & (v <= ctx.qmax)  # LSQ: on the unrounded value, bounds included
        gx = g * inside if ctx.needs_input_grad[0] else None
        gs = None
        if ctx.needs_input_grad[1]:
            # d out / d s = (q - z) - x / s inside the grid, (q - z) where clipped
            d = torch.round(xs).add_(z).clamp_(ctx.qmin, ctx.qmax).sub_(z).sub_(xs.mul_(inside))
            gs = _sum_to(d.mul_(g), s.shape)
        return gx, gs, None, None, None


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
               axis: int | None = None) -> torch.Tensor:
    """Quantize-dequantize with a straight-through estimator (gradients to x and to scale)."""
    s = _bcast(scale.to(x.dtype), x, axis)
    z = _bcast(zero_point.to(x.dtype), x, axis)
    if not (torch.is_grad_enabled() and (x.requires_grad or s.requires_grad)):
        # inference: the same arithmetic in place (calibration and evaluation are memory-bound)
        return torch.round(x / s).add_(z).clamp_(qmin, qmax).sub_(z).mul_(s)
    return _FakeQuantSTE.apply(x, s, z, qmin, qmax)


def _fake_quant_reference(x, scale, zero_point, qmin, qmax, axis=None):
    """The same estimator written with plain autograd ops (for tests): inside the grid
    ``round_ste(x / s) * s``, outside it the clipped code times s (gradient to s only)."""
    s = _bcast(scale.to(x.dtype), x, axis)
    z = _bcast(zero_point.to(x.dtype), x, axis)
    v = (x / s + z).detach()
    inside = (v >= qmin) & (v <= qmax)
    clipped = (torch.clamp(torch.round(x / s).detach() + z, qmin, qmax) - z) * s
    return torch.where(inside, round_ste(x / s) * s, clipped)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
             axis: int | None = None) -> torch.Tensor:
    """Integer codes (int32) of x on the grid."""
    s = _bcast(scale.float(), x, axis)
    z = _bcast(zero_point.float(), x, axis)
    return torch.clamp(torch.round(x.float() / s) + z, qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
               axis: int | None = None) -> torch.Tensor:
    s = _bcast(scale.float(), q, axis)
    z = _bcast(zero_point.float(), q, axis)
    return (q.float() - z) * s


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; inf when exact)."""
    ref, approx = ref.double(), approx.double()
    noise = (ref - approx).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.pow(2).sum().clamp(min=1e-300) / noise))
