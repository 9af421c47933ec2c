"""The real console script: exit codes, --json output, one-line errors."""
import json

import pytest
import torch

from edgeslim import models
from edgeslim.core.report import FIGURE_KEYS
from edgeslim.testing import fashion_mnist_available

have_fmnist = pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed")


def test_models_json(cli):
    p = cli("models", "--json", check_rc=0)
    rows = {r["name"]: r for r in json.loads(p.stdout)["models"]}
    assert rows["lenet300"]["params"] == 266_610 and rows["lenet5"]["params"] == 431_080
    assert rows["resnet20"]["input_shape"] == [1, 28, 28]


def test_profile_json_has_figures(cli):
    p = cli("profile", "lenet300", "--json", "--runs", "3", "--warmup", "1", check_rc=0)
    fig = json.loads(p.stdout)
    for k in ("params", "macs", "size_bytes", "latency_ms", "latency_p90_ms", "runtime", "threads", "batch",
              "input_shape"):
        assert fig[k] is not None, k
    assert fig["params"] == 266_610 and fig["input_shape"] == [1, 1, 28, 28] and fig["threads"] == 2
    assert [r["name"] for r in fig["layers"] if r["type"] == "Linear"] == ["1", "3", "5"]


def test_export_then_profile_and_bench_onnx(cli, tmp_path):
    p = cli("export", "lenet5", "--out", tmp_path / "m.onnx", "--json", check_rc=0)
    res = json.loads(p.stdout)
    assert {"path", "max_abs_diff", "top1_agreement", "size_bytes"} <= set(res)
    assert res["max_abs_diff"] < 1e-4 and res["size_bytes"] == (tmp_path / "m.onnx").stat().st_size
    p = cli("profile", tmp_path / "m.onnx", "--json", "--runs", "3", "--runtime", "onnxruntime", check_rc=0)
    fig = json.loads(p.stdout)
    assert fig["params"] == 431_080 and fig["runtime"].startswith("onnxruntime") and fig["layers"]
    p = cli("bench", tmp_path / "m.onnx", "lenet300", "--runs", "3", "--json", check_rc=0)
    out = json.loads(p.stdout)
    assert [r["ratio_to_first"] for r in out["results"]][0] == 1.0 and len(out["results"]) == 2


def test_checkpoint_dir_is_a_model_argument(cli, tmp_path):
    m = models.create("lenet300")
    models.save(m, tmp_path / "run" / "checkpoint", spec="lenet300", input_shape=(1, 28, 28))
    p = cli("profile", tmp_path / "run", "--json", "--runs", "2", "--runtime", "torch", check_rc=0)
    assert json.loads(p.stdout)["runtime"].startswith("torch")


def test_usage_errors_exit_2_with_one_line_and_hint(cli, cli_process, tmp_path):
    p = cli_process("profile", "resnet2", check_rc=2)  # the real console script, in its own process
    assert p.stderr.startswith("error: unknown model 'resnet2'") and "hint:" in p.stderr and "resnet20" in p.stderr
    assert "Traceback" not in p.stderr
    p = cli("profile", "lenet5", "--input-shape", "1,x", check_rc=2)
    assert "bad shape" in p.stderr
    p = cli("nosuchcommand", check_rc=2)
    p = cli("export", "lenet5", "--out", tmp_path / "m.txt", check_rc=2)
    assert "must name a .onnx file for --runtime onnxruntime" in p.stderr
    p = cli("train", "--model", "lenet5", "--data", "synthetic:1,28,28:16", "--out", tmp_path / "t", check_rc=2)
    assert "no labels" in p.stderr


def test_failures_exit_1_and_pickles_are_refused(cli, tmp_path):
    torch.save(models.create("lenet300"), tmp_path / "full.pt")
    p = cli("profile", tmp_path / "full.pt", check_rc=1)
    assert "never unpickles" in p.stderr and "hint:" in p.stderr and "Traceback" not in p.stderr
    p = cli("profile", tmp_path / "missing_dir/", "--debug", check_rc=2)  # not a path: treated as a spec


def test_data_class_mismatch_is_clear(cli, tmp_path):
    m = models.create("lenet300", num_classes=3)
    models.save(m, tmp_path / "c", spec="lenet300", build={"num_classes": 3}, input_shape=(1, 28, 28))
    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "img" / "b").mkdir(parents=True)
    from PIL import Image

    for cls in ("a", "b"):
        for i in range(4):
            Image.new("L", (28, 28), color=60 * i).save(tmp_path / "img" / cls / f"{i}.png")
    p = cli("profile", tmp_path / "c", "--data", f"imagefolder:{tmp_path / 'img'}", check_rc=1)
    assert "predicts 3 classes" in p.stderr


@have_fmnist
def test_train_writes_checkpoint_with_test_accuracy(cli, tmp_path):
    p = cli("train", "--model", "lenet300", "--data", "fashion-mnist", "--epochs", "0.05", "--max-batches", "4",
            "--out", tmp_path / "run", "--json", check_rc=0)
    out = json.loads(p.stdout)
    side = json.loads((tmp_path / "run" / "checkpoint" / "edgeslim.json").read_text())
    assert side["metrics"]["test_top1"] == out["test_top1"] > 30.0
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(rep["result"]) == set(FIGURE_KEYS) and rep["command"] == "train"
    p = cli("profile", tmp_path / "run", "--data", "fashion-mnist", "--max-batches", "2", "--runs", "2", "--json",
            check_rc=0)
    assert json.loads(p.stdout)["accuracy"] is not None
