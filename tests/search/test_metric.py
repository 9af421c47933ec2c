"""The user's metric under the SLA: the config and the study record it, the confidence bound uses its
per-sample numbers (or none), it steers a search end to end, every report names it, and a resume with
another metric is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import edgeslim
from edgeslim import metrics
from edgeslim.core.config import Config
from edgeslim.core.errors import UsageError
from edgeslim.search.confidence import NO_PER_SAMPLE, kind_of, margin, pack, rule_text, unpack, z_value
from edgeslim.search.config import AutoConfig
from edgeslim.search.constraints import AccuracySLA, constraints_of
from edgeslim.search.scoring import study_metric
from edgeslim.search.store import StudyState
from edgeslim.testing.metrics import recall_at_threshold, true_class_score

RECALL = "edgeslim.testing.metrics:recall_at_threshold"  # what from_callable names the function
QUICK = dict(greedy=False, prune_margin=1000.0, epoch_prune_margin=1000.0, final_runs=5, latency_runs=5,
             log=lambda s: None)
SPACE = {"prune_ratio": [0.0, 0.3], "allocation": ["uniform"], "lowrank": [False], "distill": [False],
         "finetune_epochs": [0], "bits": [8], "finetune_batches": 3}


# -- the confidence bound with per-sample numbers ------------------------------------------------------

def test_per_sample_numbers_give_a_margin_in_the_metrics_points():
    z = z_value(0.9)  # 1.2816
    c = np.array([1.0, 2.0, 3.0, 4.0])
    # unpaired: SE of the mean = std(c, ddof=1) / sqrt(n) = sqrt(5/3) / 2, no x100
    assert margin(c, confidence=0.9) == pytest.approx(z * np.sqrt(5 / 3) / 2, rel=1e-12)
    assert margin(c, confidence=0.9) == pytest.approx(0.827238, abs=1e-6)
    # paired: differences (1, 0, 1, 0), std sqrt(1/3), SE sqrt(1/3) / 2
    b = np.array([2.0, 2.0, 4.0, 4.0])
    assert margin(c, b, confidence=0.9) == pytest.approx(z * np.sqrt(1 / 3) / 2, rel=1e-12)
    assert margin(c, b, confidence=0.9) == pytest.approx(0.369952, abs=1e-6)
    assert margin(c, c + 5.0, confidence=0.9) == 0.0  # a constant shift carries no noise
    assert margin(c, b, confidence=0) == 0.0


def test_hits_keep_their_percent_margin_and_kinds_do_not_mix():
    hits = np.array([True, False, True, True])
    p = 0.75
    assert margin(hits, confidence=0.9) == pytest.approx(100 * z_value(0.9) * np.sqrt(p * (1 - p) / 4))
    # the same values as numbers are in their own points: the SE of the mean, no x100
    assert margin(hits.astype(float), confidence=0.9) == pytest.approx(z_value(0.9) * np.std([1, 0, 1, 1], ddof=1) / 2)
    with pytest.raises(UsageError, match="different kinds"):
        margin(hits, np.ones(4), confidence=0.9)


def test_per_sample_numbers_pack_and_say_what_they_are():
    v = np.random.default_rng(0).normal(50, 10, 97)
    assert np.array_equal(unpack(pack(v)), v) and kind_of(pack(v)) == "numbers"
    h = v > 50
    assert np.array_equal(unpack(pack(h)), h) and kind_of(pack(h)) == "hits"
    assert pack(None) is None and kind_of(None) == "none"
    assert rule_text(0.9, True, "none") == rule_text(0.9, False, "none") == NO_PER_SAMPLE
    assert "standard error of the per-sample mean" in rule_text(0.9, False, "numbers")
    assert rule_text(0.9, True, "numbers") == rule_text(0.9, True)  # paired reads the same
    assert rule_text(0, True, "none") == ""


def test_the_sla_names_its_metric_and_says_when_no_bound_exists():
    state = StudyState(sla=30.0, baseline={}, baseline_correct=None, objective="size", pareto=False, space={},
                       max_drop=1.0, confidence=0.9, metric="map")
    (sla,) = constraints_of(state)
    assert sla.metric == "map" and sla.values == "none"
    assert sla.text() == f"validation map >= 30.00, {NO_PER_SAMPLE}"
    assert sla.final({"accuracy": 30.5}, {"accuracy": 31.0})[2].startswith(
        "test split (never seen by the search): map 30.50 vs baseline 31.00 -> within")
    top1 = AccuracySLA(88.1, 0.9, 0.5)  # top-1 reads as it always has
    assert top1.text() == "validation accuracy >= 88.10%, as a one-sided lower bound at confidence 0.9 (paired " \
                          "with the baseline per image)"


# -- the config and the study record the metric's name -------------------------------------------------

def test_auto_config_takes_a_name_a_function_or_a_metric_and_writes_its_name():
    assert AutoConfig().metric is None and AutoConfig(metric="top5").metric_name == "top5"
    cfg = AutoConfig(metric=recall_at_threshold)
    assert cfg.metric_name == RECALL == metrics.from_callable(recall_at_threshold).name
    back = Config.from_yaml(yaml.safe_dump(cfg.to_dict()))  # a function cannot be YAML: its name is kept
    assert isinstance(back, AutoConfig) and back.metric == RECALL
    named = metrics.from_callable(recall_at_threshold, name="recall")
    assert AutoConfig(metric=named).to_dict()["metric"] == "recall"


@pytest.mark.parametrize("bad, match", [("nosuch", "no metric named 'nosuch'"), (5, "got int"),
                                         ("not a:form", "is not a metric name nor")])
def test_a_bad_metric_is_one_usage_error_when_the_config_is_built(bad, match):
    with pytest.raises(UsageError, match=match):
        AutoConfig(metric=bad)


def test_a_module_text_is_imported_by_auto_not_by_the_config(toy_model, toy_data, tmp_path):
    cfg = AutoConfig(metric="no_such_module_for_edgeslim:score")  # read from YAML, it would import nothing
    with pytest.raises(UsageError, match="no module named 'no_such_module_for_edgeslim'"):
        edgeslim.auto(toy_model, toy_data, cfg, out=tmp_path / "x", log=lambda s: None)
    assert not (tmp_path / "x").exists()


def test_study_metric_refuses_another_and_asks_for_a_function_again():
    assert study_metric(None, "top5").name == "top5"
    with pytest.raises(UsageError, match="the study scores with metric top1, but this run asks for metric map"):
        study_metric(metrics.get("map"), "top1")
    with pytest.raises(UsageError, match="a function of yours"):
        study_metric(None, RECALL)


# -- a user metric steers the search, end to end --------------------------------------------------------

@pytest.fixture(scope="module")
def recall_run(toy_model, toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("recall") / "out"
    res = edgeslim.auto(toy_model, toy_data, metric=recall_at_threshold, max_drop=30.0, budget="40s", trials=2,
                        out=out, space=SPACE, **QUICK)
    return res, out, json.loads((out / "report.json").read_text())


def test_a_user_metric_steers_the_search(recall_run, toy_data):
    res, out, d = recall_run
    assert res.feasible
    sla = d["details"]["sla"]
    assert sla["metric"] == RECALL and sla["rule"] == NO_PER_SAMPLE  # one number: no sample-based bound
    rows = [t for t in d["details"]["trials"] if t["state"] == "complete"]
    assert len(rows) == 2 and all(t["val_margin"] == 0.0 for t in rows)
    assert all(t["feasible"] == (t["val_accuracy"] >= sla["min_val_accuracy"]) for t in rows)
    # the trials were scored with the function: the winner's file gives its validation figure again
    run = edgeslim.runtimes.get().load(out / "model.onnx", threads=1)
    best = next(t for t in rows if t["trial"] == res.best_trial)
    assert best["val_accuracy"] == recall_at_threshold(run, toy_data.val)
    assert sla["baseline_val_accuracy"] - sla["min_val_accuracy"] == pytest.approx(30.0)


def test_the_report_holds_the_metrics_values(recall_run, toy_model, toy_data):
    res, out, d = recall_run
    run = edgeslim.runtimes.get().load(out / "model.onnx", threads=1)
    assert d["result"]["accuracy"] == recall_at_threshold(run, toy_data.test)  # `accuracy` stays the key
    baseline = recall_at_threshold(metrics.torch_runner(toy_model), toy_data.test)
    assert d["baseline"]["accuracy"] == pytest.approx(baseline)  # the fp32 export, as PyTorch scores it
    assert d["accuracy_drop"] == pytest.approx(d["baseline"]["accuracy"] - d["result"]["accuracy"])
    m = d["details"]["metric"]
    assert m["name"] == RECALL and m["split"] == "test" and m["result"] == {"value": d["result"]["accuracy"], "extra": {}}
    assert m["baseline"]["value"] == d["baseline"]["accuracy"]
    assert any(n.startswith(f"test split (never seen by the search): {RECALL} ") for n in d["details"]["notes"])
    md = (out / "report.md").read_text()
    assert f"| {RECALL} (points) |" in md and f"- {RECALL} drop:" in md and "accuracy (top-1 %)" not in md
    assert res.report.metric == RECALL


def test_resuming_with_another_metric_is_refused(recall_run, toy_model, toy_data):
    _, out, _ = recall_run
    with pytest.raises(UsageError, match=f"the study scores with metric {RECALL}, but this run asks for metric top1"):
        edgeslim.auto(toy_model, toy_data, metric="top1", resume=True, out=out, budget="40s", **QUICK)
    with pytest.raises(UsageError, match="a function of yours, which is not imported from the study"):
        edgeslim.auto(toy_model, toy_data, resume=True, out=out, budget="40s", **QUICK)


def test_per_sample_numbers_bound_the_search_paired_with_the_baseline(toy_model, toy_data, tmp_path):
    import optuna

    out = tmp_path / "scores"
    res = edgeslim.auto(toy_model, toy_data, metric=true_class_score, max_drop=30.0, budget="40s", trials=1,
                        out=out, space={**SPACE, "prune_ratio": [0.3]}, **QUICK)
    d = json.loads((out / "report.json").read_text())["details"]
    (t,) = d["trials"]
    assert res.feasible and "paired with the baseline per image" in d["sla"]["rule"]
    study = optuna.load_study(study_name="edgeslim-auto", storage=f"sqlite:///{out / 'study.db'}")
    base = unpack(study.user_attrs["edgeslim_state"]["baseline_correct"])  # the baseline's numbers, kept
    mine = true_class_score(edgeslim.runtimes.get().load(out / "model.onnx", threads=1), toy_data.val)
    assert t["val_accuracy"] == pytest.approx(mine.mean())
    hand = z_value(0.9) * np.std(base - mine, ddof=1) / np.sqrt(len(mine))
    assert t["val_margin"] == pytest.approx(round(hand, 4), abs=1e-4) and t["val_margin"] > 0
    assert t["feasible"] == (t["val_accuracy"] - t["val_margin"] >= d["sla"]["min_val_accuracy"])
