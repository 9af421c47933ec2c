"""Every technique's command on a detector and a segmenter (issue 19), as a user runs them: the report
scores the files in the task's metric, the heads keep their outputs, a detector's box decoding stays
float in int8, and distillation trains the student on head maps."""
import json

import pytest

from edgeslim import models
from edgeslim.testing import fashion_mnist_available

pytestmark = pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed")
DET, SEG = "fashion-mnist-detect:64:48:16", "fashion-mnist-seg:64:48:16"
FAST = ("--runs", "3", "--warmup", "1", "--threads", "1", "--json")


def _report(p) -> dict:
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A tinydet trained a little (its heat-map peaks stand out of the prior's plateau)."""
    from edgeslim.cli import run_captured

    out = tmp_path_factory.mktemp("det") / "t"
    p = run_captured("train", "--model", "tinydet", "--data", DET, "--epochs", "3", "--batch-size", "8", "--optimizer",
                     "adam", "--lr", "0.003", "--out", out, cwd=out.parent)
    assert p.returncode == 0, p.stderr
    return out / "checkpoint"


@pytest.mark.parametrize("model,data,metric", [("tinydet", DET, "map"), ("tinyseg", SEG, "miou")])
def test_prune_keeps_the_heads_and_scores_in_the_tasks_metric(cli, tmp_path, model, data, metric):
    rep = _report(cli("prune", model, "--data", data, "--ratio", "0.3", "--out", tmp_path / "p", *FAST, check_rc=0))
    assert rep["details"]["metric"]["name"] == metric and rep["ratios"]["macs"] > 1.2
    assert rep["baseline"]["accuracy"] is not None and rep["result"]["accuracy"] is not None
    pruned, _ = models.load(tmp_path / "p")
    fresh = models.create(model, num_classes=10 if model == "tinydet" else 11)
    heads = [n for n, m in fresh.named_modules() if n.endswith("head.1") or n == "head"]
    for name, m in pruned.named_modules():
        if name in heads and hasattr(m, "out_channels"):
            assert m.out_channels == fresh.get_submodule(name).out_channels, name


def test_quantize_a_detector_keeps_its_postprocess_float_and_says_so(cli, tmp_path, detector):
    rep = _report(cli("quantize", detector, "--data", DET, "--out", tmp_path / "q", *FAST, check_rc=0))
    d = rep["details"]
    assert d["metric"]["name"] == "map" and d["float_regions"] == ["postprocess"] and d["traced"] is True
    assert any("postprocess stays float" in n for n in d["notes"])
    assert d["kernels"]["integer"]["QLinearConv"] >= 12 and rep["ratios"]["size"] > 3.5
    assert d["export_parity"]["max_abs_diff"] < 0.5


def test_distill_a_detector_from_a_trained_one(cli, tmp_path, detector):
    rep = _report(cli("distill", "--teacher", detector, "--student", "tinydet", "--data", DET,
                      "--epochs", "1", "--out", tmp_path / "s", *FAST, check_rc=0))
    assert rep["details"]["metric"]["name"] == "map" and rep["result"]["accuracy"] is not None
