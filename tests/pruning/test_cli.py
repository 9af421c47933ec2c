"""The real console script: `edgeslim prune` and `edgeslim sensitivity` write the common layout."""
import json
from pathlib import Path

import pytest

from edgeslim.models import load

SYN = "synthetic:1,28,28:32"


def test_prune_channel_cli(cli, tmp_path):
    out = tmp_path / "out"
    p = cli("prune", "lenet5", "--data", SYN, "--num-classes", "10", "--ratio", "0.5", "--round-to", "2",
            "--runs", "5", "--warmup", "1", "--threads", "1", "--out", out, "--json", check_rc=0)
    rep = json.loads(p.stdout)
    assert rep["command"] == "prune" and rep["ratios"]["macs"] > 1.5
    assert rep["baseline"]["latency_ms"] and rep["result"]["latency_ms"]
    assert rep["result"]["params"] < rep["baseline"]["params"]
    for f in ("model.onnx", "report.json", "report.md", "checkpoint/edgeslim.json"):
        assert (out / f).exists(), f
    model, meta = load(out)
    assert sum(p.numel() for p in model.parameters()) == rep["result"]["params"]


def test_prune_sparse_cli_reports_dense_onnx(cli, tmp_path):
    p = cli("prune", "lenet300", "--data", SYN, "--num-classes", "10", "--granularity", "fine", "--ratio", "0.9",
            "--runs", "3", "--warmup", "1", "--threads", "1", "--out", tmp_path / "o", "--json", check_rc=0)
    rep = json.loads(p.stdout)
    d = rep["details"]
    assert d["sparsity"] == pytest.approx(0.9, abs=0.01) and d["onnx_is_dense"]
    assert d["sparse_size_bytes"] < 0.3 * rep["result"]["size_bytes"]


def test_prune_block_cli(cli, tmp_path):
    out = tmp_path / "b"
    p = cli("prune", "resnet8", "--data", SYN, "--num-classes", "10", "--granularity", "block", "--ratio", "1",
            "--calib-batches", "1", "--bn-batches", "1", "--runs", "3", "--warmup", "1", "--threads", "1",
            "--out", out, "--json", check_rc=0)
    rep = json.loads(p.stdout)
    assert rep["details"]["removed"] == rep["details"]["candidates"] and rep["details"]["removed"]
    assert rep["result"]["params"] < rep["baseline"]["params"] and rep["result"]["macs"] < rep["baseline"]["macs"]
    model, _ = load(out)  # the checkpoint records the removed blocks
    assert sum(p.numel() for p in model.parameters()) == rep["result"]["params"]
    p = cli("prune", "lenet5", "--data", SYN, "--num-classes", "10", "--granularity", "block", "--out", tmp_path / "x")
    assert p.returncode == 2 and "no removable residual block" in p.stderr and "Traceback" not in p.stderr


def test_prune_heads_and_tokens_cli(cli, tmp_path):
    p = cli("prune", "vit_tiny", "--granularity", "heads", "--ratio", "0.34", "--mlp", "0.5", "--input-shape",
            "1,1,28,28", "--runs", "3", "--warmup", "1", "--threads", "1", "--out", tmp_path / "h", "--json", check_rc=0)
    rep = json.loads(p.stdout)
    assert rep["ratios"]["macs"] > 1.5 and rep["details"]["granularity"] == "heads"
    model, _ = load(tmp_path / "h")
    assert model.blocks[0].attn.num_heads == 2
    p = cli("prune", "vit_tiny", "--granularity", "tokens", "--target-macs", "0.7", "--input-shape", "1,1,28,28",
            "--runs", "3", "--warmup", "1", "--threads", "1", "--out", tmp_path / "t", "--json", check_rc=0)
    rep = json.loads(p.stdout)
    assert rep["details"]["macs_kept"] <= 0.7 and rep["ratios"]["macs"] >= 1 / 0.7 - 1e-6
    assert [b.merge for b in load(tmp_path / "t")[0].blocks] == rep["details"]["per_block"]
    p = cli("prune", "lenet5", "--granularity", "tokens", "--input-shape", "1,28,28", "--out", tmp_path / "x")
    assert p.returncode == 1 and "merge count" in p.stderr and "Traceback" not in p.stderr


def test_prune_cli_bad_input(cli):
    p = cli("prune", "lenet5", "--ratio", "1.0", "--input-shape", "1,28,28")
    assert p.returncode == 2 and "[0, 1)" in p.stderr and "Traceback" not in p.stderr
    p = cli("prune", "lenet5", "--granularity", "nm", "--nm", "2:4", "--input-shape", "1,28,28")
    assert p.returncode == 2 and "does not divide" in p.stderr and "--exclude" in p.stderr


FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST is not installed")
def test_sensitivity_cli(cli, tmp_path):
    out = tmp_path / "s"
    p = cli("sensitivity", "lenet5", "--data", "fashion-mnist", "--ratios", "0.25,0.5", "--eval-batches", "1",
            "--batch-size", "64", "--target-macs", "0.5", "--threads", "1", "--out", out, "--json", check_rc=0)
    rep = json.loads(p.stdout)
    for f in ("sensitivity.csv", "sensitivity.md", "sensitivity.png", "report.json", "recipe.yaml"):
        assert (out / f).exists(), f
    assert len(rep["details"]["layers"]) == 2 * 3  # conv1, conv2, fc1 (head fc excluded) x 2 ratios
    assert rep["details"]["allocation"]["macs_kept"] <= 0.5


def test_prune_with_fine_tuning_reports_its_batchnorm_re_estimate(tmp_path):
    from edgeslim.cli import main
    from edgeslim.testing.data import write_image_folder

    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=8, size=(28, 28), mode="L")
    out = tmp_path / "p"
    rc = main(["prune", "resnet8", "--data", f"imagefolder:{root}", "--batch-size", "4", "--ratio", "0.3",
               "--finetune-epochs", "1", "--runs", "2", "--warmup", "0", "--threads", "1", "--out", str(out)])
    assert rc == 0
    bn = json.loads((out / "report.json").read_text())["details"]["bn_recalibration"]
    assert bn["fits"] == 1 and bn["re_estimated"] == 1 and bn["layers"] > 0  # 3 steps leave momentum-0.1 stats stale
