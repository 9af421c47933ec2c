"""`edgeslim quantize` writes model.onnx and report.json in the common schema."""
import json

import pytest

from edgeslim.cli import main

MODEL = "edgeslim.testing.models:TinyResNet"
DATA = ["--data", "synthetic:1,8,8:64", "--batch-size", "16", "--runs", "3", "--warmup", "1"]
KEYS = {"command", "edgeslim_version", "model", "data", "baseline", "result", "ratios", "accuracy_drop", "details",
        "machine"}
FIGURES = {"params", "macs", "size_bytes", "latency_ms", "latency_p90_ms", "accuracy", "runtime", "threads", "batch",
           "input_shape", "artifact", "peak_memory_bytes"}


def test_quantize_cli_writes_report(tmp_path, capsys):
    out = tmp_path / "q"
    rc = main(["quantize", MODEL, *DATA, "--bits", "8", "--calibration", "entropy", "--calib-batches", "2",
               "--out", str(out), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= KEYS and printed["command"] == "quantize"
    assert set(report["baseline"]) == FIGURES and set(report["result"]) == FIGURES
    assert report["baseline"]["artifact"] == "baseline.onnx" and report["result"]["artifact"] == "model.onnx"
    assert report["ratios"]["size"] and report["ratios"]["latency"]
    assert report["baseline"]["peak_memory_bytes"] > 0 and report["result"]["peak_memory_bytes"] > 0
    d = report["details"]
    assert d["kernels"]["integer"].get("QLinearConv") and not d["kernels"]["float"]
    assert d["export_parity"]["max_abs_diff"] < 1e-4
    assert (out / "model.onnx").is_file() and (out / "report.md").is_file()


@pytest.mark.parametrize("argv", [["--bits", "9"], ["--bits", "0"], ["--weight-bits", "12"]])
def test_bits_out_of_range_exit_2(argv, tmp_path, capsys):
    rc = main(["quantize", MODEL, *DATA, *argv, "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "bits" in capsys.readouterr().err


def test_ptq_without_data_is_an_error(tmp_path, capsys):
    rc = main(["quantize", MODEL, "--input-shape", "1,1,8,8", "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "calibration data" in capsys.readouterr().err


def test_mixed_precision_file(tmp_path, capsys):
    mp = tmp_path / "mp.json"
    mp.write_text(json.dumps({"fc": None, "stem\\.0": 4}))
    out = tmp_path / "m"
    rc = main(["quantize", MODEL, *DATA, "--calib-batches", "1", "--mixed-precision", str(mp), "--out", str(out)])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())["details"]
    assert any("fc" in n and "stays float" in n for n in d["notes"])
    assert {r["layer"]: r["weight_bits"] for r in d["layers"]}["stem.0"] == 4
