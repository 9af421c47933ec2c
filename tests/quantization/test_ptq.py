"""PTQ on the toy models, the QDQ export round trip through ONNX Runtime, and bad input."""
import copy

import pytest
import torch
from torch import nn

from edgeslim.core.config import Config
from edgeslim.core.errors import DataError, ModelError, UsageError
from edgeslim.core.registry import Context, run
from edgeslim.quantization import PTQ, quantize
from edgeslim.quantization.onnx_qdq import export_qdq, integer_ops, parity
from edgeslim.testing.models import TinyConvNet, TinyMLP, TinyResNet, toy_loader


def _bn_stats(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def loader():
    return toy_loader(n=64, batch_size=16)


@pytest.mark.parametrize("cls", [TinyConvNet, TinyResNet, TinyMLP])
def test_qdq_roundtrip_integer_kernels(cls, loader, tmp_path):
    torch.manual_seed(0)
    model = _bn_stats(cls())
    q, details = run(model, PTQ(bits=8, calibration="entropy", calib_batches=2), Context(data=loader))
    x = next(iter(loader))[0]
    path = tmp_path / "q.onnx"
    export_qdq(q, path, x)
    ops = integer_ops(path)
    assert ops["integer_ops"], ops["ops"]  # QLinearConv / QGemm after ORT's optimisation
    assert not ops["float_compute"], ops["float_compute"]
    p = parity(q, path, [x])
    assert p["max_abs_diff"] < 1e-4  # the file rounds what the simulation rounds
    assert p["top1_agreement"] == 1.0
    assert details["layers"] and all(r["weight_bits"] == 8 for r in details["layers"])
    # the simulation stays close to the float model
    with torch.no_grad():
        f, s = model(x), q(x)
    assert (f.argmax(1) == s.argmax(1)).float().mean() >= 0.8


def test_caller_model_untouched_unless_inplace(loader):
    model = _bn_stats(TinyConvNet())
    before = copy.deepcopy(model.state_dict())
    quantize(model, PTQ(calib_batches=1), data=loader)
    assert model.bn1.__class__ is nn.BatchNorm2d
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    quantize(model, PTQ(calib_batches=1), data=loader, inplace=True)
    assert isinstance(model.bn1, nn.Identity)  # folded in place


@pytest.mark.parametrize("bad", [0, 9, -3])
def test_bits_outside_range(bad):
    with pytest.raises(UsageError):
        PTQ(bits=bad)
    with pytest.raises(UsageError):
        PTQ(weight_bits=bad)


def test_one_bit_uniform_refused():
    with pytest.raises(UsageError):
        PTQ(bits=1)


def test_no_quantizable_layer(loader):
    model = nn.Sequential(nn.Flatten(), nn.ReLU())
    with pytest.raises(ModelError):
        quantize(model, PTQ(), data=loader)


def test_empty_and_nan_calibration_data():
    model = TinyMLP().eval()
    with pytest.raises(DataError):
        quantize(model, PTQ(), data=[])
    bad = torch.randn(4, 1, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError):
        quantize(model, PTQ(), data=[(bad, torch.zeros(4, dtype=torch.long))])
    with pytest.raises(DataError):
        quantize(model, PTQ(), data=None)


def test_mixed_precision_map_keeps_layer_float(loader):
    model = TinyMLP().eval()
    q, d = run(model, PTQ(mixed_precision={"5": None, "1": 4}, calib_batches=1), Context(data=loader))
    layers = {r["layer"]: r for r in d["layers"]}
    assert "5" not in layers and layers["1"]["weight_bits"] == 4 and layers["3"]["weight_bits"] == 8
    assert any(f["layer"] == "5" and "mixed-precision" in f["why"] for f in d["float_layers"])
    with pytest.raises(UsageError):
        PTQ(mixed_precision={"1": 12})


def test_unsupported_layer_reported_float(loader):
    class WithConv1d(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(8, 8, 3, padding=1)
            self.fc = nn.Linear(64, 4)

        def forward(self, x):
            return self.fc(self.c1(x.reshape(x.shape[0], 8, 8)).flatten(1))

    _, d = run(WithConv1d().eval(), PTQ(calib_batches=1), Context(data=loader))
    assert any(f["layer"] == "c1" and "no int8" in f["why"] for f in d["float_layers"])


@pytest.mark.parametrize("cfg", [PTQ(bits=4, calibration="mse", per_channel=False),
                                 PTQ(mixed_precision={"fc": None}), PTQ(calibration="percentile", percentile=99.9)])
def test_config_roundtrip(cfg):
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg


@pytest.mark.parametrize("calibration", ["minmax", "ema", "percentile", "entropy", "mse"])
def test_every_calibration_runs(calibration, loader):
    q = quantize(TinyConvNet().eval(), PTQ(calibration=calibration, calib_batches=1), data=loader)
    x = next(iter(loader))[0]
    assert torch.isfinite(q(x)).all()


def test_low_bit_export_clips_like_simulation(loader, tmp_path):
    model = _bn_stats(TinyConvNet())
    q = quantize(model, PTQ(weight_bits=4, act_bits=4, calib_batches=2), data=loader)
    x = next(iter(loader))[0]
    export_qdq(q, tmp_path / "q4.onnx", x)
    assert parity(q, tmp_path / "q4.onnx", [x])["max_abs_diff"] < 1e-4


def test_adaround_improves_4bit_reconstruction(loader):
    model = _bn_stats(TinyConvNet())
    _, d = run(model, PTQ(weight_bits=4, act_bits=8, adaround=True, adaround_iters=60,
                                            calib_batches=2), Context(data=loader))
    rows = d["adaround"]["layers"]
    assert rows
    # against the float model's outputs, the learned rounding beats rounding to nearest
    assert sum(r["rec_error_adaround"] for r in rows) < sum(r["rec_error_nearest"] for r in rows)
    assert any(r["changed_vs_nearest"] > 0 for r in rows)


def test_data_free_equalization_preserves_function():
    from edgeslim.quantization.equalize import equalize

    model = TinyMLP().eval()
    model[1].weight.data[0] *= 20  # unbalanced channel ranges
    x = torch.randn(8, 1, 8, 8)
    ref = model(x)
    m2 = copy.deepcopy(model)
    n = equalize(m2, ["1", "3", "5"])
    assert n == 2
    torch.testing.assert_close(m2(x), ref, rtol=1e-4, atol=1e-5)
    ranges = m2[1].weight.abs().amax(1)
    assert float(ranges.max() / ranges.min()) < float(model[1].weight.abs().amax(1).max() / model[1].weight.abs().amax(1).min())


def test_data_free_needs_no_data():
    q, d = run(_bn_stats(TinyConvNet()), PTQ(data_free=True, per_channel=False), Context())
    assert d["calibration"] is None and d["layers"]
    assert d["bias_corrected"] >= 1


def test_low_bit_weights_counted_at_real_bit_cost(loader):
    model = _bn_stats(TinyConvNet())
    _, d8 = run(model, PTQ(bits=8, calib_batches=1), Context(data=loader))
    assert "estimated_size_bytes" not in d8  # 8 bits: the ONNX file is the real size
    _, d4 = run(model, PTQ(weight_bits=4, act_bits=8, calib_batches=1), Context(data=loader))
    layers = d4["layers"]
    assert all(r["weight_bits"] == 4 for r in layers)
    w = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    est = d4["estimated_size_bytes"]
    assert w // 2 <= est < w  # 4-bit codes plus scales and biases: about half a byte per weight
    assert sum(r["bytes_at_bit_cost"] for r in layers) <= est
    assert any("packed as INT4" in n for n in d4["notes"])


@pytest.mark.parametrize("bits", [4, 8])
def test_four_bit_weights_packed_in_the_file_and_still_fused(bits, loader, tmp_path):
    import onnx
    from onnx import TensorProto

    model = _bn_stats(TinyResNet())
    q = quantize(model, PTQ(weight_bits=bits, act_bits=8, calib_batches=2), data=loader)
    x = next(iter(loader))[0]
    path = tmp_path / "q.onnx"
    export_qdq(q, path, x)
    inits = onnx.load(str(path)).graph.initializer
    n4 = sum(t.data_type == TensorProto.INT4 for t in inits)
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert n4 == (n_layers if bits == 4 else 0)
    ops = integer_ops(path)
    assert not ops["float_compute"], ops["float_compute"]  # the Cast folds, the int8 kernels still fuse
    assert parity(q, path, [x])["max_abs_diff"] < 1e-4


def test_int4_packing_is_lossless():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.quantization.onnx_qdq import pack_int4

    codes = np.arange(-8, 7, dtype=np.int8).reshape(3, 5)  # odd count: the last byte is half used
    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["y"], axis=0)], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(codes, "w"), numpy_helper.from_array(np.ones(3, np.float32), "s")])
    src21 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    src21.ir_version = 10
    assert pack_int4(src21) is not src21
    assert not any(t.data_type == TensorProto.INT4 for t in src21.graph.initializer)  # the input is not modified
    m = pack_int4(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    t = next(t for t in m.graph.initializer if t.data_type == TensorProto.INT4)
    assert len(t.raw_data) == 8
    onnx.checker.check_model(m)
    import onnxruntime as ort

    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    np.testing.assert_array_equal(y, codes.astype(np.float32))


def test_runtime_without_int4_keeps_the_int8_file(loader, tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto

    import edgeslim.quantization.onnx_qdq as oq

    monkeypatch.setattr(oq, "_runtime_loads", lambda m: False)  # as an ONNX Runtime without INT4 Cast would
    q = quantize(_bn_stats(TinyConvNet()), PTQ(weight_bits=4, act_bits=8, calib_batches=1), data=loader)
    x = next(iter(loader))[0]
    export_qdq(q, tmp_path / "q.onnx", x)
    assert not any(t.data_type == TensorProto.INT4 for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer)
    assert parity(q, tmp_path / "q.onnx", [x])["max_abs_diff"] < 1e-4
