"""The ONNX Runtime implementation of the Runtime seam: export, load, run, time, size, the QDQ path."""
import numpy as np
import onnx
import pytest
import torch

from edgeslim import runtimes
from edgeslim.core.errors import EdgeslimError, UsageError
from edgeslim.quantization import PTQ, quantize
from edgeslim.quantization.deploy import is_quantized
from edgeslim.testing.models import TinyConvNet, TinyMLP, toy_loader


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    path = tmp_path_factory.mktemp("rt") / "m.onnx"
    info = runtimes.get().export(model, path, torch.randn(1, 1, 8, 8))
    return model, path, info


def test_the_default_runtime_is_onnxruntime_and_fits_the_protocol():
    rt = runtimes.get()
    assert rt is runtimes.get("onnxruntime") and isinstance(rt, runtimes.Runtime)
    assert rt.name == "onnxruntime" and rt.suffix == ".onnx"
    assert rt.version().startswith("onnxruntime ") and rt.version().split()[1][0].isdigit()


def test_export_load_and_run_match_torch(exported):
    model, path, info = exported
    assert info["path"] == str(path) and info["size_bytes"] == path.stat().st_size
    run = runtimes.get().load(path, threads=1)
    assert isinstance(run, runtimes.Runner)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x).numpy()
    got = run(x.numpy())
    assert got.shape == ref.shape == (5, 4)
    assert float(np.abs(got - ref).max()) < 1e-4


def test_time_returns_one_positive_figure_per_run(exported):
    rt = runtimes.get()
    run = rt.load(exported[1], threads=1)
    times = rt.time(run, np.zeros((1, 1, 8, 8), dtype=np.float32), warmup=1, runs=7)
    assert len(times) == 7 and all(isinstance(t, float) and t > 0 for t in times)


def test_size_is_the_bytes_on_disk_including_external_data(exported, tmp_path):
    path = exported[1]
    assert runtimes.get().size(path) == path.stat().st_size
    m = onnx.load(str(path))
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    total = (tmp_path / "ext.onnx").stat().st_size + (tmp_path / "ext.data").stat().st_size
    assert (tmp_path / "ext.data").stat().st_size > 0
    assert runtimes.get().size(tmp_path / "ext.onnx") == total


def test_a_quantization_simulation_exports_as_qdq(tmp_path):
    loader = toy_loader(n=32, batch_size=16)
    model = TinyConvNet().eval()
    q = quantize(model, PTQ(bits=8, calib_batches=1), data=loader)
    assert is_quantized(q) and not is_quantized(model)
    info = runtimes.get().export(q, tmp_path / "q.onnx", next(iter(loader))[0])
    ops = {n.op_type for n in onnx.load(info["path"]).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    float_ops = {n.op_type for n in onnx.load(runtimes.get().export(model, tmp_path / "f.onnx",
                                                                      torch.randn(1, 1, 8, 8))["path"]).graph.node}
    assert "QuantizeLinear" not in float_ops


def test_every_quantization_method_counts_as_quantized():
    from edgeslim.quantization.dynamic import Dynamic

    assert is_quantized(quantize(TinyMLP(), Dynamic()))
    assert not is_quantized(TinyMLP())


def test_an_unknown_runtime_names_the_valid_ones():
    with pytest.raises(UsageError) as err:
        runtimes.get("nope")
    assert "'nope'" in err.value.message
    for name in runtimes.names():
        assert name in err.value.message
    assert {"onnxruntime", "torch"} <= set(runtimes.names())


def test_a_registered_runtime_is_found_by_name_and_suffix(tmp_path):
    class Fake:
        name, suffix = "fake", ".fake"

    runtimes.register("fake", Fake, ".fake")
    try:
        assert isinstance(runtimes.get("fake"), Fake) and "fake" in runtimes.names()
        assert isinstance(runtimes.for_artifact(tmp_path / "m.fake"), Fake)
        assert runtimes.for_artifact(tmp_path / "m.onnx") is runtimes.get()
        assert runtimes.for_artifact(tmp_path / "m.bin") is None
    finally:
        runtimes._FACTORIES.pop("fake")
        runtimes._INSTANCES.pop("fake", None)
        runtimes._SUFFIXES.pop("fake", None)


def test_torch_eager_times_a_module_and_writes_no_artifact(tmp_path):
    rt = runtimes.get("torch")
    assert rt.version().startswith("torch ") and rt.version().endswith(" eager")
    model = TinyConvNet().train()
    run = rt.load(model, threads=1)
    assert not model.training
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        assert np.allclose(run(x), model(torch.from_numpy(x)).numpy())
    assert len(rt.time(run, x, warmup=0, runs=3)) == 3
    with pytest.raises(EdgeslimError, match="writes no artifact"):
        rt.export(model, tmp_path / "m", torch.from_numpy(x))
    assert not list(tmp_path.iterdir())


def test_a_fixed_batch_file_runs_any_batch_in_pieces(tmp_path):
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    path = tmp_path / "static.onnx"
    runtimes.export_onnx(model, path, input_shape=(1, 1, 8, 8), dynamic_batch=False)
    runner = runtimes.get().load(path, threads=1)
    assert runner.batch == 1
    x = torch.randn(5, 1, 8, 8)
    np.testing.assert_allclose(runner(x.numpy()), model(x).detach().numpy(), atol=1e-4)
