"""`nas` end to end on a toy task: the out DIR, the checkpoint that needs no supernet code, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeslim import models
from edgeslim.core.errors import DataError, UsageError
from edgeslim.nas import nas
from nas_toys import TINY_MB, toy_bundle

FAST = dict(space=TINY_MB, supernet_epochs=2, supernet_batches=3, finetune_epochs=1, finetune_batches=2,
            evaluations=6, finalists=2, calib_batches=2, val_batches=1, latency_runs=3, final_runs=3,
            budget="10m", max_latency="100ms")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nas") / "out"
    lines = []
    res = nas(toy_bundle(), out=out, strategy="evolution", log=lines.append, **FAST)
    return res, out, lines


def test_the_out_dir_holds_one_complete_result(first_run):
    res, out, _ = first_run
    for name in ("model.onnx", "baseline.onnx", "checkpoint", "nas.yaml", "report.json", "report.md", "report.html",
                 "search.png", "study.db"):
        assert (out / name).exists(), name
    d = json.loads((out / "report.json").read_text())["details"]
    assert set(d["time_s"]) >= {"supernet_s", "latency_table_s", "search_s", "finalists_s", "finetune_s", "total"}
    assert d["search"]["scored"] == 6 and len(d["finalists"]) == 2
    assert d["latency_table"]["median_abs_error"] >= 0 and len(d["latency_table"]["finalists"]) == 2
    assert d["arch"] == res.arch and res.feasible == d["feasible"]
    assert any("baseline: the largest subnet" in n for n in d["notes"])


def test_the_checkpoint_is_a_plain_nasnet_matching_the_file(first_run):
    import onnxruntime as ort

    res, out, _ = first_run
    model, meta = models.load(out / "checkpoint")
    assert meta["spec"] == "nasnet" and type(model).__name__ == "NasNet"
    x = torch.randn(1, 1, 8, 8)
    sess = ort.InferenceSession(str(out / "model.onnx"))
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(y, model(x).detach().numpy(), atol=1e-4)


def test_a_second_run_reuses_the_supernet_and_the_study(first_run):
    _, out, _ = first_run
    lines = []
    nas(toy_bundle(), out=out, strategy="evolution", log=lines.append, **FAST)
    text = "\n".join(lines)
    assert "resuming after epoch 2" in text and "6 already in the study" in text
    assert "0 to measure" in text  # the latency table came from the cache


def test_bad_input_fails_before_any_work(tmp_path):
    data = toy_bundle()
    with pytest.raises(UsageError, match="strategy"):
        nas(data, out=tmp_path / "o", **{**FAST, "strategy": "annealing"})
    with pytest.raises(UsageError, match="reference model"):
        nas(data, out=tmp_path / "o", **{**FAST, "max_latency": "2x"})
    with pytest.raises(UsageError, match="latency limit"):
        nas(data, out=tmp_path / "o", **{**FAST, "max_latency": "fast"})
    with pytest.raises(UsageError, match="unknown option"):
        nas(data, out=tmp_path / "o", colour=1)
    from edgeslim.data import DataBundle

    no_val = DataBundle(train=data.train, val=None, test=data.test, meta=data.meta)
    with pytest.raises(DataError, match="validation split"):
        nas(no_val, out=tmp_path / "o", **FAST)
    assert not (tmp_path / "o").exists()


def test_auto_takes_the_nas_result_as_its_model(first_run, tmp_path):
    import edgeslim

    _, out, _ = first_run
    model, info = models.resolve(str(out / "checkpoint"))
    space = {"prune_ratio": [0.0, 0.3], "allocation": ["uniform"], "lowrank": [False], "distill": [False],
             "finetune_epochs": [0], "bits": ["float", 8]}
    res = edgeslim.auto(model, toy_bundle(), max_drop=10, trials=2, budget="5m", out=tmp_path / "auto",
                        spec=info["spec"], build=info["build"], space=space, val_batches=1, final_runs=3,
                        greedy=False, log=lambda s: None)
    assert res.report.details["trials"] and (tmp_path / "auto" / "report.json").is_file()


def test_a_reference_model_sets_the_limits_and_is_the_baseline(tmp_path):
    from edgeslim.testing.models import TinyConvNet

    torch.manual_seed(0)
    ref = TinyConvNet(num_classes=4, width=8).eval()
    res = nas(toy_bundle(), model=ref, out=tmp_path / "out", **{**FAST, "max_latency": "0.5x", "max_drop": 10})
    d = res.report.details
    assert d["reference"]["latency_ms"] > 0 and any("baseline: the given model" in n for n in d["notes"])
    assert d["limits"]["latency_ms"] == pytest.approx(d["reference"]["latency_ms"] / 0.5, rel=1.0)
    assert d["limits"]["min_score"] == pytest.approx(d["reference"]["val_score"] - 10)
    assert res.report.model == "nas:custom" and res.report.baseline["params"] == sum(
        p.numel() for p in ref.parameters())
