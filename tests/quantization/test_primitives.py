"""Uniform quantization primitives against a float64 reference."""
import math

import numpy as np
import pytest
import torch

from edgeslim.core.errors import UsageError
from edgeslim.quantization.primitives import (check_bits, compute_qparams, dequantize, fake_quant, qrange, quantize,
                                       sqnr_db)


def ref_qdq(x: np.ndarray, lo: float, hi: float, bits: int, signed: bool, symmetric: bool) -> np.ndarray:
    """Textbook float64 quantize-dequantize (half-to-even rounding, as ONNX)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if signed:
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax if symmetric else -qmax - 1
    else:
        qmin, qmax = 0, 2 ** bits - 1
    if symmetric:
        s = max(-lo, hi) / (qmax if signed else qmax - qmin)
        z = 0
    else:
        s = (hi - lo) / (qmax - qmin)
        z = int(np.clip(np.round(qmin - lo / s), qmin, qmax)) if s > 0 else 0
    if s == 0:
        s = 1.0
    s = float(np.float32(s))
    q = np.clip(np.round(x / s) + z, qmin, qmax)
    return (q - z) * s


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("signed,symmetric", [(False, False), (True, False), (True, True), (False, True)])
def test_fake_quant_matches_float64_reference(bits, signed, symmetric):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4096, generator=g, dtype=torch.float64) * 3
    if not signed and symmetric:
        x = x.abs()
    lo, hi = float(x.min()), float(x.max())
    s, z = compute_qparams(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64), bits,
                           signed=signed, symmetric=symmetric)
    qmin, qmax = qrange(bits, signed, symmetric)
    got = fake_quant(x, s.double(), z, qmin, qmax).numpy()
    ref = ref_qdq(x.numpy(), lo, hi, bits, signed, symmetric)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    # error bounded by half a step inside the range
    assert np.abs(got - x.numpy()).max() <= float(s) / 2 + 1e-9


def test_per_channel_matches_per_tensor_per_row():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 3, 3, generator=g)
    w[2] *= 50
    amax = w.abs().reshape(6, -1).amax(1)
    s, z = compute_qparams(-amax, amax, 8, signed=True, symmetric=True)
    got = fake_quant(w, s, z, -127, 127, axis=0)
    for c in range(6):
        sc, zc = compute_qparams(-amax[c], amax[c], 8, signed=True, symmetric=True)
        torch.testing.assert_close(got[c], fake_quant(w[c], sc, zc, -127, 127), rtol=0, atol=0)
    assert sqnr_db(w, got) > 35


def test_constant_and_zero_tensors():
    z = torch.zeros(10)
    s, zp = compute_qparams(z.min(), z.max(), 8, signed=False, symmetric=False)
    assert float(s) == 1.0 and int(zp) == 0
    assert torch.equal(fake_quant(z, s, zp, 0, 255), z)
    c = torch.full((10,), 3.7)
    s, zp = compute_qparams(c.min(), c.max(), 8, signed=False, symmetric=False)
    assert torch.allclose(fake_quant(c, s, zp, 0, 255), c, atol=1e-6)  # 3.7 is the top of the grid
    n = torch.full((10,), -2.5)
    s, zp = compute_qparams(n.min(), n.max(), 8, signed=True, symmetric=True)
    assert torch.allclose(fake_quant(n, s, zp, -127, 127), n, atol=1e-6)


def test_all_zero_channel_per_channel():
    w = torch.randn(4, 8)
    w[1] = 0
    amax = w.abs().amax(1)
    s, z = compute_qparams(-amax, amax, 8, signed=True, symmetric=True)
    assert torch.all(s > 0) and torch.all(torch.isfinite(s))
    out = fake_quant(w, s, z, -127, 127, axis=0)
    assert torch.equal(out[1], torch.zeros(8))


def test_huge_outlier_keeps_small_values_representable_only_coarsely():
    x = torch.cat([torch.linspace(-1, 1, 1000), torch.tensor([1e6])])
    s, z = compute_qparams(x.min(), x.max(), 8, signed=False, symmetric=False)
    out = fake_quant(x, s, z, 0, 255)
    assert torch.isfinite(out).all()
    assert abs(float(out[-1]) - 1e6) <= float(s)  # outlier itself is on the grid


def test_zero_is_exact():
    for lo, hi in [(-0.37, 5.1), (0.2, 0.9), (-3.0, -1.0)]:
        s, z = compute_qparams(torch.tensor(lo), torch.tensor(hi), 8, signed=False, symmetric=False)
        assert float(fake_quant(torch.zeros(1), s, z, 0, 255)) == 0.0


def test_quantize_dequantize_roundtrip_and_half_to_even():
    s, z = torch.tensor(1.0), torch.tensor(0, dtype=torch.int32)
    q = quantize(torch.tensor([0.5, 1.5, 2.5, -0.5]), s, z, -128, 127)
    assert q.tolist() == [0, 2, 2, 0]  # round half to even, as ONNX QuantizeLinear
    assert dequantize(q, s, z).tolist() == [0.0, 2.0, 2.0, 0.0]


def test_ste_gradients():
    x = torch.tensor([-10.0, -0.3, 0.26, 0.9, 10.0], requires_grad=True)
    s = torch.tensor(0.1, requires_grad=True)
    z = torch.tensor(0, dtype=torch.int32)
    y = fake_quant(x, s, z, -8, 7)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # clipped STE
    # LSQ scale gradient: (round(x/s) - x/s) inside, qmin/qmax outside
    expect = -8 + (-3 - (-3.0)) + (3 - 2.6) + 7 + 7
    assert math.isclose(float(s.grad), expect, rel_tol=1e-4)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, "8", True])
def test_bits_outside_range_rejected(bad):
    with pytest.raises(UsageError):
        check_bits(bad)


def test_nan_range_rejected():
    with pytest.raises(UsageError):
        compute_qparams(torch.tensor(float("nan")), torch.tensor(1.0), 8, signed=False, symmetric=False)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_fused_ste_matches_autograd_reference(axis):
    from edgeslim.quantization.primitives import _fake_quant_reference, grad_scale

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) * 2
    n = 1 if axis is None else x0.shape[axis]
    s0 = (torch.rand(n, generator=g, dtype=torch.float64) * 0.2 + 0.1).reshape(() if axis is None else (n,))
    z = torch.randint(-3, 4, s0.shape, generator=g, dtype=torch.int32)
    up = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    grads = []
    for fn in (fake_quant, _fake_quant_reference):
        x, s = x0.clone().requires_grad_(), s0.clone().requires_grad_()
        y = fn(x, grad_scale(s, 0.5), z, -8, 7, axis)
        (y * up).sum().backward()
        grads.append((y.detach(), x.grad, s.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
