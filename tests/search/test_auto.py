"""The SLA search on toy models and tiny data: feasible within a few trials, the infeasible path,
and the bad-input errors. The kill/resume and replay checks run the real CLI (test_auto_cli.py)."""
from __future__ import annotations

import json

import pytest

import edgeslim
from edgeslim.core.errors import DataError, EdgeslimError, UsageError
from edgeslim.testing.models import TinyConvNet

SPACE = {"prune_ratio": [0.0, 0.3], "allocation": ["uniform", "sensitivity"], "lowrank": [False],
         "distill": [False, True], "finetune_epochs": [0, 1], "finetune_batches": 3}


def test_search_finds_a_feasible_policy(toy_model, toy_data, tmp_path):
    out = tmp_path / "a"
    res = edgeslim.auto(toy_model, toy_data, max_drop=2.0, budget="5m", trials=4, out=out, space=SPACE,
                        final_runs=5, latency_runs=5, log=lambda s: None)
    assert res.feasible and res.best_trial is not None
    for f in ("model.onnx", "winner.yaml", "report.json", "report.md", "report.html", "pareto.png", "study.db"):
        assert (out / f).is_file(), f
    d = json.loads((out / "report.json").read_text())
    assert d["command"] == "auto" and d["details"]["split"] == "test"
    best = next(t for t in d["details"]["trials"] if t["trial"] == res.best_trial)
    sla = d["details"]["sla"]
    assert sla["confidence"] == 0.9
    assert best["feasible"] and best["val_accuracy"] - best["val_margin"] >= sla["min_val_accuracy"]
    for t in d["details"]["trials"]:  # feasible means: the lower bound, not the point estimate, clears the SLA
        if t["state"] == "complete":
            assert t["val_margin"] >= 0
            assert t["feasible"] == (t["val_accuracy"] - t["val_margin"] >= sla["min_val_accuracy"])
    assert d["result"]["size_bytes"] == (out / "model.onnx").stat().st_size
    assert d["baseline"]["size_bytes"] == (out / "baseline.onnx").stat().st_size  # the baseline's file, kept
    assert d["result"]["size_bytes"] < d["baseline"]["size_bytes"]  # int8 alone already halves it
    assert d["details"]["layers"] and "weight_bits" in d["details"]["layers"][0]
    assert any(t["origin"] == "greedy" for t in d["details"]["trials"])
    assert "data:image/png;base64," in (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "lower bound" in md and "at confidence 0.9" in md and "paired with the baseline" in md
    # every trial figure is measured, and identical recipes are measured once
    done = [t for t in d["details"]["trials"] if t["state"] == "complete"]
    assert all(t["size_bytes"] and t["latency_ms"] and t["macs"] for t in done)


def test_infeasible_sla_keeps_the_baseline(tmp_path, toy_data):
    out = tmp_path / "inf"
    model = TinyConvNet(num_classes=4, width=8)  # untrained: nothing reaches 99%
    res = edgeslim.auto(model, toy_data, min_accuracy=99.0, budget="5m", trials=1, out=out, greedy=False,
                        prune_margin=1000.0, epoch_prune_margin=1000.0,  # measured instead of stopped early
                        space={**SPACE, "prune_ratio": [0.3], "bits": [8], "finetune_epochs": [0]},
                        final_runs=5, latency_runs=5, log=lambda s: None)
    assert not res.feasible and res.best_trial is None
    d = json.loads((out / "report.json").read_text())
    assert d["result"]["size_bytes"] == d["baseline"]["size_bytes"]  # the baseline is the result
    assert "no policy met the SLA" in d["details"]["notes"][0]
    assert (out / "model.onnx").is_file() and not (out / "winner.yaml").exists()
    # the closest miss is named, with a recipe that loads
    closest = d["details"]["closest"]
    assert closest["trial"] == 0 and closest["points_under_sla"] == pytest.approx(
        99.0 - (closest["val_accuracy"] - closest["val_margin"]), abs=1e-3)
    assert d["details"]["notes"][1].startswith("closest: trial 0") and "closest.yaml" in d["details"]["notes"][1]
    from edgeslim.search.recipe import load_recipe

    steps, _ = load_recipe(out / "closest.yaml")
    assert [type(s).__name__ for s in steps] == ["ChannelPrune", "PTQ"]


def test_budget_too_short_for_one_trial(toy_model, toy_data, tmp_path):
    with pytest.raises(UsageError, match="too short for one trial"):
        edgeslim.auto(toy_model, toy_data, budget=0.05, out=tmp_path / "b", space=SPACE, log=lambda s: None)


def test_unreachable_storage_is_a_clear_error(toy_model, toy_data, tmp_path):
    with pytest.raises(EdgeslimError, match="cannot open the study storage") as e:
        edgeslim.auto(toy_model, toy_data, storage="postgresql://user:secret@127.0.0.1:9/none", out=tmp_path / "s",
                      log=lambda s: None)
    assert "secret" not in e.value.message


def test_classes_disagree_with_the_model(toy_data, tmp_path):
    with pytest.raises(DataError, match="predicts 10 classes"):
        edgeslim.auto(TinyConvNet(num_classes=10), toy_data, out=tmp_path / "c", log=lambda s: None)


def test_an_existing_study_needs_resume(toy_model, toy_data, tmp_path):
    import optuna

    out = tmp_path / "r"
    out.mkdir()
    optuna.create_study(study_name="edgeslim-auto", storage=f"sqlite:///{out / 'study.db'}")
    with pytest.raises(UsageError, match="already holds a search"):
        edgeslim.auto(toy_model, toy_data, out=out, log=lambda s: None)


def test_bad_sla_arguments(toy_model, toy_data, tmp_path):
    with pytest.raises(UsageError, match="not both"):
        edgeslim.auto(toy_model, toy_data, max_drop=1, min_accuracy=90, out=tmp_path / "x")
    with pytest.raises(UsageError, match="objective"):
        edgeslim.auto(toy_model, toy_data, objective="speed", out=tmp_path / "x")


@pytest.mark.slow
def test_pareto_search_with_nsga2(toy_model, toy_data, tmp_path):
    res = edgeslim.auto(toy_model, toy_data, max_drop=2.0, budget="5m", trials=4, out=tmp_path / "p", pareto=True,
                        objective="latency", space={**SPACE, "lowrank": [False, True]}, final_runs=5, latency_runs=5,
                        log=lambda s: None)
    assert res.feasible
    assert res.report.details["strategy"].endswith("NSGA-II")
    assert len(res.report.details["trials"]) >= 4


def test_a_worker_joins_the_study_and_reports_its_best(toy_model, toy_data, tmp_path):
    """--worker on a shared storage (SQLite here; PostgreSQL across machines): it reads the SLA and
    the space from the study, adds trials to it, and ends with the study's best."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    small = {**SPACE, "prune_ratio": [0.0], "distill": [False], "finetune_epochs": [0]}
    with pytest.raises(UsageError, match="no study to join"):
        edgeslim.auto(toy_model, toy_data, storage=storage, worker=True, out=tmp_path / "w0", log=lambda s: None)
    first = edgeslim.auto(toy_model, toy_data, max_drop=2.0, storage=storage, trials=1, out=tmp_path / "main",
                          space=small, final_runs=5, latency_runs=5, log=lambda s: None)
    lines = []
    w = edgeslim.auto(toy_model, toy_data, max_drop=9.0, storage=storage, worker=True, trials=3, out=tmp_path / "w1",
                      final_runs=5, latency_runs=5, log=lines.append)
    assert first.feasible and w.feasible
    assert any("joining the search" in l for l in lines)
    assert w.report.details["sla"]["min_val_accuracy"] == first.report.details["sla"]["min_val_accuracy"]
    assert len(w.report.details["trials"]) >= 3  # the first run's trial plus the worker's


def test_a_hopeless_trial_stops_between_fine_tuning_epochs(toy_model, toy_data, tmp_path):
    import optuna

    from edgeslim.search.recipe import Finetune
    from edgeslim.search.trial import read_record

    runner = trial_runner(toy_model, toy_data, tmp_path, sla=200.0)
    trial = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=90.0)).ask()
    steps = [Finetune(epochs=3.0, lr=0.0, max_batches=2)]  # an SLA of 200% is out of reach at any epoch
    rec = read_record(trial)
    with pytest.raises(optuna.TrialPruned, match="after fine-tuning epoch 1 "):
        runner.build(trial, rec, steps)
    (acc,) = rec.figures["epoch_val_sample"]
    assert read_record(trial).excess["accuracy_sla"] == pytest.approx(200.0 - acc)


def trial_runner(model, data, work, *, sla: float, clock=None, margins=(3.0, 6.0)):
    """A TrialRunner on its own: the SLA as its one constraint, no study around it."""
    import time

    from edgeslim.search.clock import Clock
    from edgeslim.search.constraints import AccuracySLA
    from edgeslim.search.evaluator import Evaluator
    from edgeslim.search.space import SearchSpace
    from edgeslim.search.strategies import first_batches
    from edgeslim.search.trial import Planner, TrialRunner

    class NoStore:
        shared = False

        def measured(self):
            return {}

    shape = tuple(data.meta.input_shape)
    clock = clock or Clock(trial_end=time.monotonic() + 600, final_s=1.0, measure_s=0.0, cheapest_s=1.0)
    return TrialRunner(model, Planner(model, SearchSpace(), None, [], (1, *shape)), data, Evaluator(data, shape),
                       [AccuracySLA(sla)], clock, tracker=None, store=NoStore(), work=work,
                       batches=first_batches(data.val, 2), margins=margins)


def test_a_resumed_search_scores_on_the_studys_validation_images(toy_model, toy_data, tmp_path):
    out = tmp_path / "vb"
    space = {**SPACE, "prune_ratio": [0.0], "bits": [8], "finetune_epochs": [0]}
    edgeslim.auto(toy_model, toy_data, max_drop=2.0, budget="5m", trials=1, out=out, greedy=False, space=space,
                  val_batches=2, final_runs=5, latency_runs=5, log=lambda s: None)
    said = []
    res = edgeslim.auto(toy_model, toy_data, max_drop=2.0, budget="5m", trials=2, out=out, greedy=False, space=space,
                        resume=True, val_batches=None, final_runs=5, latency_runs=5, log=said.append)
    assert any("validation cap: the study's (2)" in s for s in said)
    trials = json.loads((out / "report.json").read_text())["details"]["trials"]
    assert len(trials) == 2 and all(t["state"] == "complete" for t in trials)  # paired on the same 64 images
    assert res.feasible


@pytest.fixture(scope="module")
def toy_resnet(toy_data):
    from edgeslim.testing.models import TinyResNet
    from edgeslim.train import fit

    model = TinyResNet(num_classes=4, width=8)
    fit(model, toy_data, epochs=4, lr=0.05, progress=False, seed=0)
    return model.eval()


def test_depth_pruning_under_a_latency_limit(toy_resnet, toy_data, tmp_path):
    out = tmp_path / "depth"
    space = {**SPACE, "block_ratio": [1.0], "prune_ratio": [0.0], "bits": ["float", 8]}
    res = edgeslim.auto(toy_resnet, toy_data, min_accuracy=0.0, budget="5m", trials=2, out=out, space=space,
                        max_latency="0.01x", final_runs=5, latency_runs=5, log=lambda s: None)
    assert res.feasible
    d = json.loads((out / "report.json").read_text())
    sla = d["details"]["sla"]
    assert sla["max_latency"] == "0.01x"
    done = [t for t in d["details"]["trials"] if t["state"] == "complete"]
    assert done and all(t["policy"].startswith("drop 2/2 blocks") for t in done)
    # "0.01x": the baseline, timed alongside each candidate, times 100
    assert all(t["feasible"] == (t["latency_ms"] <= t["latency_limit_ms"]) for t in done)
    assert all(t["latency_limit_ms"] > 10 * d["details"]["baseline_search"]["latency_ms"] for t in done)
    assert all(t["latency_probe_ms"] > 0 for t in done)  # timed untrained first, then measured
    layers = {r["layer"]: r for r in d["details"]["layers"]}
    assert layers["block1.conv1"]["removed"] and not layers["stem.0"]["removed"]
    assert "block_prune" in (out / "winner.yaml").read_text()
    assert any("latency limit" in n for n in d["details"]["notes"])


def test_a_latency_limit_no_policy_meets_keeps_the_baseline(toy_resnet, toy_data, tmp_path):
    out = tmp_path / "fast"
    space = {**SPACE, "block_ratio": [0.0], "prune_ratio": [0.0], "bits": [8], "finetune_epochs": [0]}
    res = edgeslim.auto(toy_resnet, toy_data, max_drop=60.0, budget="5m", trials=1, out=out, space=space,
                        greedy=False, max_latency="1000x", final_runs=5, latency_runs=5, log=lambda s: None)
    assert not res.feasible
    d = json.loads((out / "report.json").read_text())
    assert "no policy met the SLA" in d["details"]["notes"][0] and "latency limit 1000x" in d["details"]["notes"][0]
    (t,) = d["details"]["trials"]  # its untrained architecture was timed first: stopped before fine-tuning
    assert t["state"] == "pruned" and t["latency_probe_ms"] > 0 and t["latency_ms"] is None
    with pytest.raises(UsageError, match="latency limit"):
        edgeslim.auto(toy_resnet, toy_data, max_latency="soon", out=tmp_path / "bad", log=lambda s: None)


def test_depth_scan_keeps_one_block_ratio_per_number_of_blocks_removed(toy_data):
    from edgeslim.search.setup import depth_scan
    from edgeslim.search.space import SearchSpace, blocks_removed
    from edgeslim.testing.models import TinyResNet

    space, order = depth_scan(TinyResNet(), toy_data, SearchSpace(), (1, 1, 8, 8), log=lambda s: None)
    assert sorted(order) == ["block1", "block2"]
    # eighths of 2 blocks remove 0, 1 or 2 of them: one ratio each, the first of the default grid
    assert space.block_ratio == (0.0, 0.25, 0.75)
    assert [len(blocks_removed(r, order)) for r in space.block_ratio] == [0, 1, 2]
    assert depth_scan(TinyConvNet(), toy_data, SearchSpace(), (1, 1, 8, 8), log=lambda s: None)[0].block_ratio == (0.0,)


def test_a_diverged_fine_tuning_is_an_infeasible_trial_and_the_search_goes_on(toy_model, toy_data, tmp_path):
    import optuna

    from edgeslim.search.strategies import native_constraints

    out, said = tmp_path / "div", []
    space = {**SPACE, "allocation": ["uniform"], "distill": [False], "bits": [8], "finetune_epochs": [1],
             "finetune_lr": 1e12}  # the loss becomes nan within a few steps
    res = edgeslim.auto(toy_model, toy_data, max_drop=2.0, budget="5m", trials=4, out=out, greedy=False, space=space,
                        final_runs=5, latency_runs=5, log=said.append)
    assert not res.feasible
    rows = json.loads((out / "report.json").read_text())["details"]["trials"]
    assert len(rows) == 4  # more than three in a row: a diverged trial is not a failure
    assert all(r["state"] == "pruned" and r["diverged"] and r["reason"].startswith("training diverged") for r in rows)
    assert sum("infeasible: training diverged" in s for s in said) == 4
    assert not any("in a row failed" in s for s in said)
    from edgeslim.search.trial import read_record

    trials = optuna.load_study(study_name="edgeslim-auto", storage=f"sqlite:///{out / 'study.db'}").trials
    assert all(read_record(t).excess["accuracy_sla"] > 0 for t in trials)  # infeasible, for the constrained sampler
    if native_constraints():
        assert all(t.constraints["accuracy_sla"] > 0 for t in trials)


def test_a_trial_stops_when_the_searchs_time_is_up(toy_model, toy_data, tmp_path):
    import time

    import optuna

    from edgeslim.search.clock import Clock, OutOfTime
    from edgeslim.search.recipe import Finetune
    from edgeslim.search.trial import read_record

    steps = [Finetune(epochs=3.0, lr=0.01, max_batches=2)]

    def run(clock):
        trial = optuna.create_study().ask()
        trial_runner(toy_model, toy_data, tmp_path, sla=0.0, clock=clock).build(trial, read_record(trial), steps)

    # between epochs: what is left of the time no longer holds the trial's measurement
    with pytest.raises(OutOfTime, match="after fine-tuning epoch 1$"):
        run(Clock(trial_end=time.monotonic() + 600, final_s=1.0, measure_s=1e6, cheapest_s=1.0))
    # past the end, not one more optimizer step (AdaRound has no epochs to stop between)
    with pytest.raises(OutOfTime, match="while it was training or quantizing"):
        run(Clock(trial_end=time.monotonic() - 1, final_s=1.0, measure_s=0.0, cheapest_s=1.0))


def test_the_budget_holds(toy_model, toy_data, tmp_path):
    """The search ends within its budget plus one fine-tuning epoch: the trial in flight stops between
    epochs (or at an optimizer step past the end, e.g. in a long AdaRound) and is recorded unfinished,
    and the final comparison's time is kept out of the trials' time."""
    import copy
    import time

    from edgeslim.distillation import KD
    from edgeslim.search.recipe import run_steps

    t = time.monotonic()
    run_steps(copy.deepcopy(toy_model), [KD(epochs=1.0, lr=0.05, max_batches=8)], data=toy_data, input_shape=(1, 8, 8))
    epoch_s = time.monotonic() - t  # one fine-tuning epoch of this space, distilled (the slower kind)
    # no ratio for the greedy to probe: it queues int8 alone, then w4a8 alone, whose AdaRound outlasts the budget
    space = {**SPACE, "prune_ratio": [0.0], "finetune_epochs": [0, 2, 8], "finetune_batches": 8,
             "bits": ["float", 8, 4], "adaround_iters": 5000}
    budget, out, said = 20.0, tmp_path / "budget", []
    t = time.monotonic()
    res = edgeslim.auto(toy_model, toy_data, max_drop=2.0, budget=budget, out=out, space=space, final_runs=20,
                        latency_runs=10, log=said.append)
    wall = time.monotonic() - t
    assert wall <= budget + epoch_s + 2.0, (wall, epoch_s, said)
    rows = json.loads((out / "report.json").read_text())["details"]["trials"]
    unfinished = [r for r in rows if r["unfinished"]]
    assert unfinished, said  # the greedy's second seed (w4a8 alone) cannot finish its AdaRound in time
    assert all(r["state"] == "pruned" and r["reason"].startswith("the search's time ran out") and
               r["val_accuracy"] is None for r in unfinished)
    assert res.best_trial not in {r["trial"] for r in unfinished}


def test_an_sla_every_model_meets_is_refused_once_the_baseline_is_known(toy_model, toy_data, tmp_path):
    with pytest.raises(UsageError, match="at or above the baseline's validation accuracy"):
        edgeslim.auto(toy_model, toy_data, max_drop=100.0, budget="2m", out=tmp_path / "a", log=lambda s: None)
    assert not (tmp_path / "a" / "model.onnx").exists()


@pytest.mark.slow  # a fresh process per measurement; the constraint's logic is tested in test_parts.py
def test_a_memory_limit_is_measured_for_each_trial(toy_model, toy_data, tmp_path):
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("peak memory is read from Linux's VmHWM")
    out = tmp_path / "mem"
    space = {**SPACE, "prune_ratio": [0.0], "bits": [8], "finetune_epochs": [0]}
    res = edgeslim.auto(toy_model, toy_data, max_drop=50.0, budget="5m", trials=1, out=out, greedy=False, space=space,
                        max_memory="2GB", final_runs=5, latency_runs=5, log=lambda s: None)
    d = json.loads((out / "report.json").read_text())["details"]
    (t,) = d["trials"]
    assert res.feasible and t["feasible"] and 0 < t["peak_memory_bytes"] < 2e9 and t["memory_limit_bytes"] == 2e9
    assert "memory limit 2GB" in d["constraints"]


def test_the_search_measures_on_the_chosen_runtime(toy_model, toy_data, tmp_path):
    """--runtime openvino: every candidate is OpenVINO IR, timed and scored in OpenVINO, and so is the winner."""
    pytest.importorskip("openvino")
    out = tmp_path / "ov"
    space = {**SPACE, "prune_ratio": [0.0], "bits": [8], "finetune_epochs": [0]}
    res = edgeslim.auto(toy_model, toy_data, max_drop=50.0, budget="5m", trials=1, out=out, greedy=False, space=space,
                        runtime="openvino", threads=1, final_runs=5, latency_runs=5, log=lambda s: None)
    assert res.feasible
    d = json.loads((out / "report.json").read_text())
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file() and not (out / "model.onnx").exists()
    assert (out / "baseline.xml").is_file() and (out / "baseline.bin").is_file()
    for fig in (d["baseline"], d["result"]):
        assert fig["runtime"].startswith("openvino") and fig["accuracy"] is not None
    assert d["result"]["artifact"] == "model.xml"
    assert d["result"]["size_bytes"] == (out / "model.xml").stat().st_size + (out / "model.bin").stat().st_size
    assert d["details"]["runtime"] == "openvino"
