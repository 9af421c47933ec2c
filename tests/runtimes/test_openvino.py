"""The OpenVINO implementation of the Runtime seam: IR export (float and int8), load, run, time, size."""
import os
import re
import shutil
import sys

import pytest

pytest.importorskip("openvino")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgeslim import measure, metrics, runtimes  # noqa: E402
from edgeslim.core.errors import EdgeslimError, ExportError, UsageError  # noqa: E402
from edgeslim.quantization import PTQ, quantize  # noqa: E402
from edgeslim.runtimes import openvino as ovrt  # noqa: E402
from edgeslim.testing.models import TinyConvNet, TinyMLP, TinyResNet, toy_loader  # noqa: E402


def _x(n=5, seed=3):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _files(d):
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def rt():
    return runtimes.get("openvino")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, rt):
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    path = tmp_path_factory.mktemp("ov") / "m.xml"
    return model, path, rt.export(model, path, torch.randn(1, 1, 8, 8))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, rt):
    loader = toy_loader(n=32, batch_size=16)
    torch.manual_seed(0)
    q = quantize(TinyConvNet().eval(), PTQ(bits=8, calib_batches=1), data=loader)
    path = tmp_path_factory.mktemp("ovq") / "q.xml"
    return q, loader, path, rt.export(q, path, next(iter(loader))[0], loader=loader)


def test_the_runtime_is_registered_by_name_and_suffix_and_fits_the_protocol(rt, tmp_path):
    assert isinstance(rt, ovrt.OpenVINO) and isinstance(rt, runtimes.Runtime)
    assert rt.name == "openvino" and rt.suffix == ".xml" and "openvino" in runtimes.names()
    assert runtimes.for_artifact(tmp_path / "m.xml") is rt
    assert re.fullmatch(r"openvino 20\d\d\.\d+\.\d+", rt.version()), rt.version()


def test_float_export_writes_the_ir_pair_verified_against_onnx(exported, rt):
    model, path, info = exported
    xml, bin_ = path, path.with_suffix(".bin")
    assert info["path"] == str(path) and xml.is_file() and bin_.is_file()
    assert info["size_bytes"] == rt.size(path) == xml.stat().st_size + bin_.stat().st_size
    assert measure.artifact_size(path) == info["size_bytes"]
    assert _files(path.parent) == ["m.bin", "m.xml"]  # no temp dir or ONNX file left behind
    assert info["quantized"] is False and info["int8_layers"] == []
    assert info["max_abs_diff"] < 1e-4 and info["top1_agreement"] == 1.0
    text = xml.read_text()
    assert 'element_type="f16"' not in text and "FakeQuantize" not in text  # fp32 weights stay fp32


@pytest.mark.parametrize("model_cls", [TinyResNet, TinyMLP])
def test_float_exports_of_other_toy_models_match_torch(model_cls, rt, tmp_path):
    torch.manual_seed(0)
    model = model_cls().eval()
    info = rt.export(model, tmp_path / "m.xml", torch.randn(1, 1, 8, 8))
    x = _x(6)
    with torch.no_grad():
        ref = model(x).numpy()
    got = rt.load(info["path"], threads=1)(x.numpy())
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert float(np.abs(got - ref).max()) < 1e-4


def test_load_and_run_match_torch_for_any_batch(exported, rt):
    model, path, _ = exported
    run = rt.load(path, threads=1)
    assert isinstance(run, runtimes.Runner)
    for n in (1, 5):
        x = _x(n)
        with torch.no_grad():
            ref = model(x).numpy()
        got = run(x.numpy())
        assert got.dtype == np.float32 and got.shape == ref.shape == (n, 4)
        assert float(np.abs(got - ref).max()) < 1e-4


def test_the_plugin_uses_exactly_the_threads_asked_for(exported, rt):
    path = exported[1]
    for t in sorted({1, min(2, len(os.sched_getaffinity(0)))}):
        run = rt.load(path, threads=t)
        assert run.threads == t and run.compiled.get_property("INFERENCE_NUM_THREADS") == t
        assert run.compiled.get_property("NUM_STREAMS") == 1
        assert str(run.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")
    with pytest.raises(UsageError, match="asked for 4096"):  # the plugin would quietly use fewer
        rt.load(path, threads=4096)
    with pytest.raises(UsageError, match="threads must be"):
        rt.load(path, threads=0)


def test_an_onnx_file_loads_too(exported, rt, tmp_path):
    model, _, _ = exported
    onnx_path = runtimes.get("onnxruntime").export(model, tmp_path / "m.onnx", torch.randn(1, 1, 8, 8))["path"]
    x = _x(3).numpy()
    ref = runtimes.get("onnxruntime").load(onnx_path, threads=1)(x)
    assert float(np.abs(rt.load(onnx_path, threads=1)(x) - ref).max()) < 1e-5
    assert rt.size(onnx_path) == os.path.getsize(onnx_path)


def test_time_returns_one_positive_figure_per_run(exported, rt):
    run = rt.load(exported[1], threads=1)
    times = rt.time(run, np.zeros((1, 1, 8, 8), dtype=np.float32), warmup=1, runs=7)
    assert len(times) == 7 and all(isinstance(t, float) and t > 0 for t in times)
    plain = rt.time(lambda x: x, np.zeros(1), warmup=0, runs=2)  # any other Runner is timed as a call
    assert len(plain) == 2


def test_bench_and_latency_time_an_ir_by_its_suffix(exported, rt):
    path = exported[1]
    res = measure.bench([str(path)], (1, 8, 8), threads=1, warmup=1, runs=3)
    assert len(res) == 1 and res[0]["runtime"] == rt.version() and res[0]["runs"] == 3 and res[0]["median_ms"] > 0
    assert measure.latency(path, (1, 8, 8), threads=1, warmup=0, runs=2)["runtime"].startswith("openvino ")


def test_top1_through_the_runner_equals_torch(exported, rt):
    model, path, _ = exported
    loader = toy_loader(n=32, batch_size=16)
    top1 = metrics.get("top1")
    got = top1.evaluate(rt.load(path, threads=1), loader)
    ref = top1.evaluate(metrics.torch_runner(model), loader)
    assert got.count == 32 and got.value == ref.value
    assert (got.per_sample == ref.per_sample).all()


def test_a_quantization_simulation_becomes_an_int8_ir(quantized, rt):
    q, loader, path, info = quantized
    text = path.read_text()
    assert "FakeQuantize" in text and 'element_type="i8"' in text
    assert info["quantized"] is True and info["top1_agreement"] >= 0.9
    assert "Convolution" in info["int8_layers"]  # OpenVINO runs the convolutions with int8 kernels
    run = rt.load(path, threads=1)
    assert "Convolution" in ovrt.int8_layers(run)
    agree = total = 0
    with torch.no_grad():
        for x, _ in loader:
            agree += int((q(x).argmax(1).numpy() == run(x.numpy()).argmax(1)).sum())
            total += len(x)
    assert agree / total >= 0.9
    # int8 weights: the .bin holds under half the bytes of the float parameters
    assert path.with_suffix(".bin").stat().st_size < 0.5 * 4 * sum(p.numel() for p in TinyConvNet().parameters())


def test_a_float_mismatch_is_an_export_error_and_leaves_nothing(rt, tmp_path, monkeypatch):
    monkeypatch.setattr(ovrt, "ATOL", 0.0)  # no difference is below 0: the check must fail
    with pytest.raises(ExportError, match=r"max abs diff .*not below 0"):
        rt.export(TinyMLP().eval(), tmp_path / "m.xml", torch.randn(1, 1, 8, 8))
    assert _files(tmp_path) == []


def test_an_export_path_must_be_an_xml(rt, tmp_path):
    with pytest.raises(UsageError, match=r"\.xml"):
        rt.export(TinyMLP().eval(), tmp_path / "m.onnx", torch.randn(1, 1, 8, 8))
    assert _files(tmp_path) == []


def test_a_corrupt_or_incomplete_ir_is_one_export_error_line(exported, rt, tmp_path, capfd):
    bad = tmp_path / "bad.xml"
    bad.write_text("<net>garbage")
    shutil.copy(exported[1], tmp_path / "nobin.xml")
    for p in (bad, tmp_path / "nobin.xml", tmp_path / "missing.xml"):
        with pytest.raises(ExportError) as err:
            rt.load(p)
        msg = err.value.message
        assert msg.startswith(f"OpenVINO cannot load {p}") and "\n" not in msg
    assert "tensorflow" not in capfd.readouterr().err.lower()  # no frontend probing noise
    with pytest.raises(UsageError, match="xml"):
        rt.load(tmp_path / "m.tflite")


def test_without_the_package_the_runtime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(EdgeslimError) as err:
        ovrt.OpenVINO()
    assert err.value.message == "the openvino runtime needs the package openvino"
    assert err.value.hint == "pip install edgeslim[openvino]"
