import pytest
import torch
from torch import nn

from edgeslim.runtimes import export_onnx
from edgeslim.measure import (artifact_size, bench, compare, count_macs, count_params, memory_access_cost,
                              onnx_accuracy, profile)
from edgeslim.testing.models import TinyConvNet, TinyMLP, toy_loader
from edgeslim.train import evaluate


def test_macs_match_hand_counts():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    total, layers = count_macs(m, (3, 16, 16))
    conv = 8 * 16 * 16 * 3 * 9
    fc = 8 * 16 * 16 * 10
    assert total == conv + fc
    assert [r["macs"] for r in layers] == [conv, 0, 0, fc]
    assert layers[0]["params"] == 8 * 27 + 8


def test_params_count_shared_once():
    lin = nn.Linear(4, 4)
    assert count_params(nn.Sequential(lin, lin)) == 20


def test_memory_access_cost_counts_weights_and_activations():
    m = nn.Sequential(nn.Linear(10, 5))
    mac = memory_access_cost(m, (1, 10))
    assert mac["weight_bytes"] == 55 * 4
    assert mac["activation_read_bytes"] == 10 * 4 and mac["activation_write_bytes"] == 5 * 4


def test_bench_interleaves_torch_and_onnx(tmp_path):
    m = TinyConvNet().eval()
    export_onnx(m, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    res = bench([m, tmp_path / "m.onnx"], (1, 1, 8, 8), threads=1, warmup=2, runs=5)
    assert [r["runtime"].split()[0] for r in res] == ["torch", "onnxruntime"]
    for r in res:
        assert r["runs"] == 5 and r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] * 0.999
        assert r["threads"] == 1 and r["batch"] == 1


def test_bench_rounds_report_the_median_over_fresh_sessions(tmp_path):
    export_onnx(TinyConvNet().eval(), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    (r,) = bench([tmp_path / "m.onnx"], (1, 1, 8, 8), threads=1, warmup=1, runs=4, rounds=3)
    assert r["rounds"] == 3 and len(r["per_round_ms"]) == 3 and r["runs"] == 12
    assert r["median_ms"] == pytest.approx(sorted(r["per_round_ms"])[1])


def test_onnx_accuracy_equals_torch_accuracy(tmp_path):
    m = TinyMLP().eval()
    loader = toy_loader()
    export_onnx(m, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    assert onnx_accuracy(tmp_path / "m.onnx", loader)["top1"] == pytest.approx(evaluate(m, loader)["top1"])
    assert artifact_size(tmp_path / "m.onnx") == (tmp_path / "m.onnx").stat().st_size


def test_profile_and_compare_figures(tmp_path):
    m = TinyConvNet().eval()
    fig = profile(m, (1, 8, 8), runs=3, warmup=1)
    for k in ("params", "macs", "size_bytes", "latency_ms", "latency_p90_ms", "runtime", "threads", "batch",
              "input_shape"):
        assert fig[k] is not None, k
    assert fig["macs"] == count_macs(m, (1, 8, 8))[0]
    small = TinyConvNet(width=4).eval()
    b, r = compare(m, small, (1, 8, 8), workdir=tmp_path, loader=toy_loader(), runs=3, warmup=1)
    assert (tmp_path / "model.onnx").exists() and r["artifact"] == "model.onnx"
    assert b["size_bytes"] > r["size_bytes"] and b["macs"] > r["macs"]
    assert b["accuracy"] is not None


def test_onnx_accuracy_per_image_matches_top1(tmp_path):
    import numpy as np

    m = TinyConvNet().eval()
    export_onnx(m, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    loader = toy_loader(n=96, batch_size=32)
    r = onnx_accuracy(tmp_path / "m.onnx", loader, per_image=True)
    assert r["correct"].dtype == np.bool_ and r["correct"].size == r["n"] == 96
    assert r["top1"] == pytest.approx(100.0 * r["correct"].mean())
    assert "correct" not in onnx_accuracy(tmp_path / "m.onnx", loader)


def test_ort_op_times_splits_a_run_into_kernels_and_the_rest(tmp_path):
    from edgeslim.measure import ort_op_times

    export_onnx(TinyConvNet().eval(), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    p = ort_op_times(tmp_path / "m.onnx", (1, 1, 8, 8), threads=1, warmup=2, runs=20)
    assert p["run_ms"] > 0 and p["nodes"] >= 2
    assert any("Conv" in op for op in p["ops_ms"]) and any("Gemm" in op or "MatMul" in op for op in p["ops_ms"])
    assert p["kernel_ms"] == pytest.approx(sum(p["ops_ms"].values()))
    assert p["between_ms"] == pytest.approx(p["run_ms"] - p["kernel_ms"])
    assert not list(tmp_path.glob("ort*.json"))  # the trace stays in its own temp dir
