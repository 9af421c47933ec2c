"""The ExecuTorch implementation of the Runtime seam: .pte export (XNNPACK), load, run, time, size, int8."""
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")

from edgeslim import metrics, runtimes  # noqa: E402
from edgeslim.core.errors import EdgeslimError, ExportError, UsageError  # noqa: E402
from edgeslim.quantization import PTQ, quantize  # noqa: E402
from edgeslim.runtimes import executorch as et  # noqa: E402
from edgeslim.testing.models import TinyConvNet, TinyMLP, TinyResNet, toy_loader  # noqa: E402


def _torch(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


@pytest.fixture(scope="module")
def rt():
    return runtimes.get("executorch")


@pytest.fixture(scope="module")
def conv(rt, tmp_path_factory):
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    path = tmp_path_factory.mktemp("et") / "m.pte"
    return model, path, rt.export(model, path, torch.randn(1, 1, 8, 8))


def test_the_runtime_fits_the_protocol_and_owns_pte_files(rt):
    assert isinstance(rt, runtimes.Runtime) and isinstance(rt, et.ExecuTorch)
    assert rt.name == "executorch" and rt.suffix == ".pte"
    from importlib.metadata import version

    assert rt.version() == f"executorch {version('executorch').split('+')[0]}"  # "executorch 1.5.1"
    assert isinstance(runtimes.for_artifact("m.pte"), et.ExecuTorch)


def test_a_float_export_matches_torch_and_is_sized_by_its_file(rt, conv):
    model, path, info = conv
    assert info["path"] == str(path) and path.is_file()
    assert info["size_bytes"] == path.stat().st_size == rt.size(path) > 0
    assert info["max_abs_diff"] < 1e-4 and info["batch"] == 1
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # the temp file was renamed
    run = rt.load(path, threads=1)
    assert isinstance(run, runtimes.Runner) and run.batch == 1
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3)).numpy()
    got, ref = run(x), _torch(model, x)
    assert got.dtype == np.float32 and got.shape == ref.shape == (16, 4)
    assert float(np.abs(got - ref).max()) < 1e-4


def test_a_residual_net_exported_for_batch_3_runs_any_batch(rt, tmp_path):
    torch.manual_seed(1)
    model = TinyResNet().eval()
    info = rt.export(model, tmp_path / "r.pte", torch.randn(3, 1, 8, 8))
    assert info["max_abs_diff"] < 1e-4 and info["batch"] == 3
    run = rt.load(info["path"], threads=1)
    assert run.batch == 3
    for n in (16, 3, 1):  # 16 = 5 chunks of 3 + a padded one
        x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(n)).numpy()
        got, ref = run(x), _torch(model, x)
        assert got.shape == ref.shape == (n, 4)
        assert float(np.abs(got - ref).max()) < 1e-4, n
    with pytest.raises(UsageError, match=r"\(N, 1, 8, 8\)"):
        run(np.zeros((2, 3, 8, 8), dtype=np.float32))


def test_time_gives_one_positive_figure_per_run_on_the_asked_threads(rt, conv):
    from executorch.extension.pybindings import portable_lib

    run = rt.load(conv[1], threads=2)
    assert run.threads_set and portable_lib._threadpool_get_thread_count() == 2
    times = rt.time(run, np.zeros((1, 1, 8, 8), dtype=np.float32), warmup=1, runs=7)
    assert len(times) == 7 and all(isinstance(t, float) and t > 0 for t in times)
    assert len(rt.time(run, np.zeros((4, 1, 8, 8), dtype=np.float32), warmup=0, runs=2)) == 2  # chunked


def test_runners_on_other_thread_counts_take_turns_on_the_one_pool(rt, conv):
    from executorch.extension.pybindings import portable_lib

    model, path, _ = conv
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4)).numpy()
    two = rt.load(path, threads=2)
    first = two.method
    one = rt.load(path, threads=1)  # resizes the pool: `two`'s method is bound to the old one
    assert portable_lib._threadpool_get_thread_count() == 1
    assert two.ready() is not first  # reloaded on the new pool before it runs (the old pool is freed)
    for run, threads in ((two, 2), (one, 1), (two, 2), (one, 1)):
        assert float(np.abs(run(x) - _torch(model, x)).max()) < 1e-4
        assert portable_lib._threadpool_get_thread_count() == threads
    same = rt.load(path, threads=1)
    kept = one.method
    same(x), one(x)
    assert one.method is kept  # no resize, no reload


def test_a_failed_verification_is_an_export_error_and_leaves_no_file(rt, conv, tmp_path, monkeypatch):
    monkeypatch.setattr(et, "to_pte", lambda module, example: conv[1].read_bytes())  # another model's program
    torch.manual_seed(7)
    with pytest.raises(ExportError, match=r"executorch program other\.pte differs from torch"):
        rt.export(TinyConvNet().eval(), tmp_path / "other.pte", torch.randn(1, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_or_missing_file_is_one_export_error(rt, conv, tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program" * 20)
    with pytest.raises(ExportError, match=r"^executorch cannot load .*bad\.pte: ") as e:
        rt.load(bad)
    assert "\n" not in str(e.value)
    truncated = tmp_path / "cut.pte"
    truncated.write_bytes(conv[1].read_bytes()[:200])
    with pytest.raises(ExportError, match=r"executorch cannot load .*cut\.pte"):
        rt.load(truncated)
    with pytest.raises(ExportError, match=r"executorch cannot load .*nope\.pte: no such file"):
        rt.load(tmp_path / "nope.pte")


def test_without_the_package_the_runtime_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)
    with pytest.raises(EdgeslimError) as e:
        et.ExecuTorch()
    assert str(e.value) == "the executorch runtime needs the package executorch"
    assert e.value.hint == "pip install edgeslim[executorch]"


def test_a_quantization_without_an_executorch_path_is_one_usage_error(rt, tmp_path):
    from edgeslim.quantization.dynamic import Dynamic

    q = quantize(TinyMLP(), Dynamic())
    with pytest.raises(UsageError, match="executorch has no int8 path for Dynamic") as e:
        rt.export(q, tmp_path / "d.pte", torch.randn(1, 1, 8, 8))
    assert "ptq" in e.value.hint
    assert not (tmp_path / "d.pte").exists()


def test_ptq_on_another_grid_than_int8_is_refused(rt, tmp_path):
    q = quantize(TinyConvNet(), PTQ(bits=4, calib_batches=1), data=toy_loader(n=16, batch_size=16))
    with pytest.raises(UsageError, match="8-bit weights and activations; this PTQ asks for weight bits 4"):
        rt.export(q, tmp_path / "q4.pte", torch.randn(1, 1, 8, 8))


def test_ptq_exports_through_the_int8_path_smaller_and_agreeing_with_the_simulation(rt, tmp_path):
    torch.manual_seed(0)
    model = TinyConvNet(width=32).eval()  # ~20k weights: int8 storage shows through the program's overhead
    loader = toy_loader(n=64, batch_size=16)
    q = quantize(model, PTQ(calib_batches=2), data=loader)
    example = next(iter(loader))[0][:1]
    info = runtimes.export(q, tmp_path / "q.pte", runtime="executorch", example=example, loader=loader)
    assert info["calib_images"] == 32 and info["size_bytes"] == rt.size(tmp_path / "q.pte")
    assert info["top1_agreement"] >= 0.9, info
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert info["size_bytes"] < 0.5 * fp32_bytes, (info["size_bytes"], fp32_bytes)

    run = rt.load(info["path"], threads=1)
    scoring = toy_loader(n=128, batch_size=64, seed=5)  # batches of 64 through a batch-1 program
    top1 = metrics.get("top1")
    deployed = top1.evaluate(run, scoring)
    simulated = top1.evaluate(metrics.torch_runner(q), scoring)
    assert deployed.count == simulated.count == 128
    x = torch.cat([b[0] for b in scoring]).numpy()
    agree = float((run(x).argmax(1) == _torch(q, x).argmax(1)).mean())
    assert agree >= 0.9, agree
    assert abs(deployed.value - simulated.value) <= 10.0, (deployed.value, simulated.value)
