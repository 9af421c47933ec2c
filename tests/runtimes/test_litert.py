"""The LiteRT (TFLite) runtime: float32 export verified against PyTorch, load / run / time / size,
batches other than the converted one, PTQ's full-integer int8 path, and the errors."""
import copy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from edgeslim import metrics, runtimes  # noqa: E402
from edgeslim.core.errors import EdgeslimError, ExportError, UsageError  # noqa: E402
from edgeslim.quantization import PTQ, quantize  # noqa: E402
from edgeslim.quantization.dynamic import Dynamic  # noqa: E402
from edgeslim.quantization.qmodules import QUANT_LAYERS  # noqa: E402
from edgeslim.runtimes import litert  # noqa: E402
from edgeslim.testing.models import TinyConvNet, TinyResNet, toy_loader  # noqa: E402


def _batch(n: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _torch(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.fixture(scope="module")
def rt():
    return runtimes.get("litert")


@pytest.fixture(scope="module")
def exported(rt, tmp_path_factory):
    torch.manual_seed(0)
    model = TinyConvNet(width=32).eval()  # enough weights for int8 to show in the size (test_ptq_...)
    path = tmp_path_factory.mktemp("litert") / "m.tflite"
    return model, path, rt.export(model, path, _batch(1, seed=0))


def test_registered_by_name_and_suffix(rt):
    assert isinstance(rt, litert.LiteRT) and isinstance(rt, runtimes.Runtime)
    assert rt.name == "litert" and rt.suffix == ".tflite"
    assert isinstance(runtimes.for_artifact("m.tflite"), litert.LiteRT)
    v = rt.version()
    assert v.startswith("litert ") and "(litert-torch " in v and v.split()[1][0].isdigit(), v


def test_float_export_matches_torch(exported, rt):
    model, path, info = exported
    assert info["path"] == str(path) and info["format"] == "float32" and info["max_abs_diff"] < 1e-4
    assert info["size_bytes"] == path.stat().st_size == rt.size(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.tflite"]  # the temporary file renamed away
    run = rt.load(path, threads=1)
    assert isinstance(run, runtimes.Runner) and run.shape == (1, 1, 8, 8)  # NCHW kept
    x = _batch(1, seed=5)
    got, ref = run(x.numpy()), _torch(model, x)
    assert got.shape == ref.shape == (1, 4) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) < 1e-4


def test_a_batch_of_16_runs_and_time_gives_runs_positive_floats(exported, rt):
    model, path, _ = exported
    run = rt.load(path, threads=2)
    x = _batch(16)
    got = run(x.numpy())  # the flatten fixes the graph's batch: run in pieces of the converted batch
    assert got.shape == (16, 4) and float(np.abs(got - _torch(model, x)).max()) < 1e-4
    odd = _batch(3, seed=4)  # a batch that is no multiple of the pieces
    assert float(np.abs(run(odd.numpy()) - _torch(model, odd)).max()) < 1e-4
    ms = rt.time(run, x[:1].numpy(), warmup=2, runs=5)
    assert len(ms) == 5 and all(isinstance(t, float) and t > 0 for t in ms)
    assert len(rt.time(run, x.numpy(), warmup=1, runs=3)) == 3  # the piecewise call, timed whole


def test_a_resizable_graph_takes_the_batch_at_once(rt, tmp_path):
    # (3 input channels: the converter writes NCHW -> NHWC of a single channel as a fixed-shape reshape)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    rt.export(model, tmp_path / "fcn.tflite", torch.randn(1, 3, 8, 8))
    run = rt.load(tmp_path / "fcn.tflite", threads=1)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    got = run(x.numpy())
    assert tuple(run.interpreter.get_input_details()[0]["shape"]) == (16, 3, 8, 8)  # resized, not in pieces
    assert got.shape == (16, 2, 8, 8) and float(np.abs(got - _torch(model, x)).max()) < 1e-4


def test_tiny_resnet_parity(rt, tmp_path):
    torch.manual_seed(1)
    model = TinyResNet().eval()
    x = _batch(2, seed=1)
    info = rt.export(model, tmp_path / "r.tflite", x)
    assert info["max_abs_diff"] < 1e-4 and info["input_shape"] == [2, 1, 8, 8]
    got = rt.load(tmp_path / "r.tflite", threads=1)(_batch(5).numpy())
    assert float(np.abs(got - _torch(model, _batch(5))).max()) < 1e-4


def test_a_failed_verification_leaves_no_file(exported, rt, tmp_path, monkeypatch):
    model, good, _ = exported

    class Converted:  # the converter's result, without a second conversion: the fixture's real file
        def export(self, path):
            shutil.copyfile(good, path)

    monkeypatch.setattr(litert, "convert", lambda *a, **k: Converted())
    model2 = copy.deepcopy(model)
    with torch.no_grad():
        model2.fc.bias += 1e-3  # PyTorch now differs from the file by 1e-3
    with pytest.raises(ExportError, match=r"the litert output of bad\.tflite differs from PyTorch: "
                                          r"max abs diff 0\.001 "):
        rt.export(model2, tmp_path / "bad.tflite", _batch(1, seed=0))
    assert list(tmp_path.iterdir()) == []
    assert rt.export(model, tmp_path / "ok.tflite", _batch(1, seed=0))["max_abs_diff"] < 1e-4  # the control


def _trained_convnet(loader) -> nn.Module:
    torch.manual_seed(0)
    model = TinyConvNet(width=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def int8(rt, exported, tmp_path_factory):
    loader = toy_loader(n=128, batch_size=16)
    model = _trained_convnet(loader)  # the architecture of ``exported``: its float file is the size to beat
    q = quantize(model, PTQ(calib_batches=2), data=loader)
    info = rt.export(q, tmp_path_factory.mktemp("int8") / "q.tflite", _batch(1), loader=loader)
    return q, loader, info, exported[2]


def test_ptq_exports_a_full_integer_int8_file(int8, rt):
    q, _, info, fp32 = int8
    assert info["format"] == "int8" and info["calib_images"] == 32  # calib_batches=2 batches of 16
    run = rt.load(info["path"], threads=1)
    details = run.interpreter.get_tensor_details()
    int8_tensors = [d for d in details if d["dtype"] == np.int8]
    assert len(int8_tensors) >= 6 and not [d for d in details if d["dtype"] == np.float32], \
        sorted({d["dtype"].__name__ for d in details})
    assert run.input_dtype == np.int8 and run.output_dtype == np.int8
    assert info["size_bytes"] < 0.4 * fp32["size_bytes"], (info["size_bytes"], fp32["size_bytes"])
    # the weights are edgeslim's: each layer's per-channel weight scales are in the file
    scales = [d["quantization_parameters"]["scales"] for d in int8_tensors]
    for name, mod in q.named_modules():
        if isinstance(mod, QUANT_LAYERS):
            mine = mod.weight_fq.scale.detach().numpy()
            assert any(s.shape == mine.shape and np.allclose(s, mine, rtol=1e-6) for s in scales), name


def test_int8_top1_agrees_with_the_simulation(int8, rt):
    q, loader, info, _ = int8
    run = rt.load(info["path"], threads=2)
    x = torch.cat([b for b, _ in loader])
    got, sim = run(x.numpy()), _torch(q, x)
    agree = float((got.argmax(1) == sim.argmax(1)).mean())
    assert agree >= 0.9, agree
    err = float(np.abs(got - sim).max())  # the logits too, not their argmax only (a wrong zero point shifts them)
    assert err < 0.1 * float(np.abs(sim).max()), (err, float(np.abs(sim).max()))
    assert info["vs_simulation"]["top1_agreement"] >= 0.8
    top1 = metrics.get("top1")
    deployed, simulated = top1.evaluate(run, loader), top1.evaluate(metrics.torch_runner(q), loader)
    assert deployed.count == simulated.count == 128 and simulated.value > 50  # learnt, above chance (25)
    assert abs(deployed.value - simulated.value) <= 5.0, (deployed.value, simulated.value)


def test_a_config_without_a_litert_path_is_one_usage_error(rt, tmp_path):
    q = quantize(TinyConvNet().eval(), Dynamic(), data=toy_loader(n=16))
    with pytest.raises(UsageError, match=r"litert has no int8 path for Dynamic \(dynamic\)"):
        rt.export(q, tmp_path / "d.tflite", _batch(1))
    q4 = quantize(TinyConvNet().eval(), PTQ(bits=4, calib_batches=1), data=toy_loader(n=16))
    with pytest.raises(UsageError, match=r"4-bit weights / 4-bit activations"):
        rt.export(q4, tmp_path / "q4.tflite", _batch(1))
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_or_missing_file_is_one_export_error(rt, tmp_path):
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ExportError, match=r"^litert cannot load .*corrupt\.tflite: ") as e:
        rt.load(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ExportError, match=r"^litert cannot load .*absent\.tflite"):
        rt.load(tmp_path / "absent.tflite")


def test_missing_packages_name_both_and_the_extra(monkeypatch):
    real = litert.importlib.util.find_spec
    monkeypatch.setattr(litert.importlib.util, "find_spec",
                        lambda n, *a: None if n == "ai_edge_litert" else real(n, *a))
    with pytest.raises(EdgeslimError) as e:
        litert.LiteRT()
    assert str(e.value) == "the litert runtime needs the packages litert-torch and ai-edge-litert"
    assert e.value.hint == "pip install edgeslim[litert]"


@pytest.mark.slow
def test_the_packages_are_imported_on_first_use_only():
    code = ("import sys, edgeslim, edgeslim.runtimes.litert, edgeslim.quantization as q; q._register_all(); "
            "import edgeslim.quantization.litert_int8; "
            "print([m for m in ('litert_torch', 'ai_edge_litert') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
