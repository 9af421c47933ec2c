"""QAT, dynamic int8, fp16/bf16, low-bit formats and sensitivity on the toy models."""
import pytest
import torch
from torch import nn

from edgeslim.core.config import Config
from edgeslim.core.errors import ModelError, UsageError
from edgeslim.core.registry import Context, run
from edgeslim.quantization import PTQ, export, quantize
from edgeslim.quantization.dynamic import Dynamic, Half
from edgeslim.quantization.nonuniform import LowBit
from edgeslim.quantization.qat import QAT
from edgeslim.testing.models import TinyConvNet, TinyMLP, toy_loader


@pytest.fixture(scope="module")
def loader():
    return toy_loader(n=64, batch_size=16)


def _run_onnx(path, x):
    from edgeslim.runtimes import get

    return get("onnxruntime").load(path)(x.numpy())


def test_qat_lsq_trains_scales(loader, tmp_path):
    model = TinyConvNet().eval()
    q, d = run(model, QAT(bits=4, epochs=1, max_batches=3, calib_batches=1, lr=1e-3),
               Context(data=loader, progress=False))
    scales = [m.scale for n, m in q.named_modules() if hasattr(m, "learned") and m.learned]
    assert scales and all(isinstance(s, nn.Parameter) for s in scales)
    assert d["qat"]["learned_ranges"]
    x = next(iter(loader))[0]
    export(q, tmp_path / "qat.onnx", x)
    out = _run_onnx(tmp_path / "qat.onnx", x)
    with torch.no_grad():
        assert abs(out - q(x).numpy()).max() < 1e-4


def test_qat_frozen_ranges_and_custom_loss(loader):
    calls = []

    def loss_fn(out, y, x):
        calls.append(1)
        return nn.functional.cross_entropy(out, y)

    from edgeslim.quantization.qat import qat

    q = qat(TinyMLP().eval(), QAT(bits=8, epochs=1, max_batches=2, calib_batches=1, learn_ranges=False),
            data=loader, loss_fn=loss_fn, progress=False)
    assert len(calls) == 2
    assert not any(getattr(m, "learned", False) for m in q.modules())


def test_dynamic_int8_runs_integer_matmul(loader, tmp_path):
    from edgeslim.quantization.onnx_qdq import integer_ops

    q = quantize(TinyMLP().eval(), Dynamic())
    x = next(iter(loader))[0]
    export(q, tmp_path / "dyn.onnx", x)
    ops = integer_ops(tmp_path / "dyn.onnx")
    assert ops["integer_ops"], ops["ops"]
    with torch.no_grad():
        ref = q(x).numpy()
    assert abs(_run_onnx(tmp_path / "dyn.onnx", x) - ref).max() < 0.05


def test_dynamic_needs_linear():
    with pytest.raises(ModelError):
        quantize(nn.Sequential(nn.Conv2d(1, 2, 3)), Dynamic())
    with pytest.raises(UsageError):
        Dynamic(bits=4)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_file_is_smaller(dtype, loader, tmp_path):
    from edgeslim.runtimes import export_onnx

    model = TinyMLP().eval()
    x = next(iter(loader))[0]
    base = export_onnx(model, tmp_path / "f.onnx", x[:1])
    q = quantize(model, Half(dtype=dtype))
    res = export(q, tmp_path / "h.onnx", x)
    assert res["size_bytes"] < 0.7 * base["size_bytes"]
    with torch.no_grad():
        assert abs(_run_onnx(tmp_path / "h.onnx", x) - q(x).numpy()).max() < 1e-4


@pytest.mark.parametrize("fmt,max_values", [("binary", 2), ("ternary", 3), ("pow2", 15), ("kmeans", 16)])
def test_low_bit_formats(fmt, max_values, loader, tmp_path):
    q, d = run(TinyMLP().eval(), LowBit(format=fmt), Context(data=loader))
    w = q[1].weight.detach()
    per_row = max(len(torch.unique(w[i])) for i in range(w.shape[0]))
    if fmt in ("ternary", "kmeans"):
        per_row = len(torch.unique(w))
    assert per_row <= max_values
    if fmt == "pow2":
        s = w.abs().amax(1, keepdim=True)
        r = (w.abs() / s)[w != 0]
        assert torch.allclose(torch.log2(r), torch.round(torch.log2(r)), atol=1e-5)
    assert d["estimated_size_bytes"] < 4 * sum(p.numel() for p in TinyMLP().parameters())
    assert any("dequantized" in n for n in d["notes"])
    x = next(iter(loader))[0]
    export(q, tmp_path / f"{fmt}.onnx", x)
    with torch.no_grad():
        assert abs(_run_onnx(tmp_path / f"{fmt}.onnx", x) - q(x).numpy()).max() < 1e-4


def test_low_bit_fine_tune_runs(loader):
    q = quantize(TinyMLP().eval(), LowBit(format="ternary", epochs=1, max_batches=2), data=loader, progress=False)
    assert len(torch.unique(q[1].weight.detach())) <= 3


@pytest.mark.parametrize("cfg", [QAT(bits=4), Dynamic(per_channel=True), Half(dtype="bf16"),
                                 LowBit(format="pow2", bits=3)])
def test_configs_roundtrip(cfg):
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg


def test_bad_low_bit_configs():
    with pytest.raises(UsageError):
        LowBit(format="ternary", bits=4)
    with pytest.raises(UsageError):
        LowBit(format="nope")
    with pytest.raises(UsageError):
        LowBit(format="kmeans", bits=9)


def test_sensitivity_ranks_every_layer(loader):
    from edgeslim.quantization.sensitivity import sensitivity, suggest_bitmap

    rows = sensitivity(TinyMLP().eval(), PTQ(bits=2, calib_batches=1), loader, loader=loader, max_batches=2)
    assert [r["layer"] for r in rows] and {r["layer"] for r in rows} == {"1", "3", "5"}
    drops = [r["drop"] for r in rows]
    assert drops == sorted(drops, reverse=True)
    bm = suggest_bitmap(rows, keep=1)
    assert sorted(bm.values()) == [4, 4, 8]
