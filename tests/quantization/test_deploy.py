"""A quantized model records the config that made it; that config chooses its exporter."""
from __future__ import annotations

import copy

import pytest

from edgeslim.core.registry import export_for
from edgeslim.quantization import PTQ, is_quantized, quantize
from edgeslim.quantization.deploy import config_of, export, method_of, quant_record
from edgeslim.quantization.dynamic import Dynamic, Half
from edgeslim.quantization.nonuniform import LowBit
from edgeslim.quantization.ptq import ptq
from edgeslim.quantization.qat import QAT
from edgeslim.testing.models import TinyConvNet, TinyMLP, toy_loader


@pytest.fixture(scope="module")
def loader():
    return toy_loader(n=32, batch_size=16)


@pytest.mark.parametrize("cfg", [PTQ(calib_batches=1), QAT(epochs=1, max_batches=1, calib_batches=1), Dynamic(),
                                 Half(dtype="bf16"), LowBit(format="pow2")])
@pytest.mark.parametrize("arch", [TinyMLP, TinyConvNet])
def test_the_result_carries_its_config(cfg, arch, loader):
    model = arch().eval()
    q = quantize(model, cfg, data=loader)
    assert config_of(q) == cfg and method_of(q) == cfg.kind and is_quantized(q)
    assert quant_record(q) == {"method": cfg.kind, "config": cfg.to_dict()}
    assert config_of(model) is None and not is_quantized(model) and quant_record(model) == {}
    assert export_for(cfg) is not None
    assert config_of(copy.deepcopy(q)) == cfg  # kept through a copy (PTQ returns a torch.fx GraphModule)


def test_export_uses_the_exporter_of_the_recorded_config(loader, tmp_path, monkeypatch):
    import edgeslim.core.registry as registry

    q = quantize(TinyMLP().eval(), Dynamic(), data=loader)
    seen = []
    monkeypatch.setitem(registry._EXPORTERS, Dynamic, lambda m, path, x, config, *, loader=None:
                        seen.append(config) or {"path": str(path)})
    x = next(iter(loader))[0]
    assert export(q, tmp_path / "d.onnx", x) == {"path": str(tmp_path / "d.onnx")} and seen == [Dynamic()]
    # ptq() called directly records its config too, so every runtime picks the int8 path from it
    hand = ptq(TinyMLP().eval(), PTQ(calib_batches=1), data=loader)
    assert config_of(hand) == PTQ(calib_batches=1) and is_quantized(hand) and method_of(hand) == "ptq"
    del hand.edgeslim_config  # a simulation with no record at all: int8 QDQ, as before
    assert config_of(hand) is None and is_quantized(hand)
    res = export(hand, tmp_path / "hand.onnx", x)
    assert (tmp_path / "hand.onnx").stat().st_size == res["size_bytes"]


def test_qat_distils_from_the_float_model_when_no_teacher_is_given(loader, monkeypatch):
    import edgeslim.train.kd as ft

    calls = []
    real = ft.kd_loss
    monkeypatch.setattr(ft, "kd_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    quantize(TinyMLP().eval(), QAT(epochs=1, max_batches=1, calib_batches=1, distill=True), data=loader)
    assert len(calls) == 1
    q = quantize(TinyMLP().eval(), QAT(epochs=1, max_batches=1, calib_batches=1), data=loader, teacher=TinyMLP())
    assert len(calls) == 1 and config_of(q) == QAT(epochs=1, max_batches=1, calib_batches=1)  # distill off: CE
