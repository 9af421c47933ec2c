"""`edgeslim auto --metric package.module:function`: imported because the user typed it, scored on every
candidate and named in the printed summary and the report; a bad --metric is one line, exit 2, before
anything is loaded."""
from __future__ import annotations

import functools
import importlib
import json

import pytest
import yaml

from search_toys import SPEC  # noqa: E402

RECALL = "edgeslim.testing.metrics:recall_at_threshold"


def test_cli_scores_with_the_function_it_is_given(toy_folder, tmp_path, capsys, monkeypatch):
    import edgeslim
    from edgeslim.cli import main
    from edgeslim.testing.metrics import recall_at_threshold

    mod = importlib.import_module("edgeslim.search.auto")  # measured, not stopped early (no CLI flag for it)
    monkeypatch.setattr(mod, "auto", functools.partial(mod.auto, prune_margin=1000.0, epoch_prune_margin=1000.0))
    name, ckpt = toy_folder
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"prune_ratio": [0.0], "allocation": ["uniform"], "lowrank": [False],
                                     "distill": [False], "finetune_epochs": [0], "bits": [8]}))
    out = tmp_path / "o"
    rc = main(["auto", str(ckpt), "--spec", SPEC, "--data", name, "--val-fraction", "0.25", "--batch-size", "32",
               "--metric", RECALL, "--max-drop", "50", "--budget", "40s", "--trials", "1", "--no-greedy",
               "--space", str(space), "--runs", "5", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    d = json.loads((out / "report.json").read_text())
    assert d["details"]["metric"]["name"] == d["details"]["sla"]["metric"] == RECALL
    data = edgeslim.data.load(name, batch_size=32, val_fraction=0.25)
    run = edgeslim.runtimes.get().load(out / "model.onnx", threads=1)
    assert d["result"]["accuracy"] == recall_at_threshold(run, data.test)
    b, r = d["baseline"]["accuracy"], d["result"]["accuracy"]
    assert f"{RECALL} {b:.2f} -> {r:.2f} (drop {b - r:.2f} points, test split)" in cap.out
    assert f"| {RECALL} (points) |" in cap.out
    assert f"val {RECALL} " in cap.err  # the progress lines name it too


@pytest.mark.parametrize("command", ["auto", "profile"])
@pytest.mark.parametrize("metric, needle", [
    ("nosuch", "no metric named 'nosuch'; the metrics are: map, miou, top1, top5"),
    ("no_such_module_for_edgeslim:score", "no module named 'no_such_module_for_edgeslim'"),
    ("edgeslim.testing.metrics:missing", "edgeslim.testing.metrics has no attribute 'missing'"),
    ("edgeslim.testing.metrics:NOT_A_FUNCTION", "NOT_A_FUNCTION is a float, not a function"),
])
def test_a_bad_metric_is_one_line_before_anything_loads(command, metric, needle, tmp_path, capsys):
    from edgeslim.cli import main

    # the data does not exist: had anything been loaded first, the error would be about it
    args = [command, "lenet5", "--data", f"imagefolder:{tmp_path / 'none'}", "--metric", metric]
    rc = main(args + (["--out", str(tmp_path / "o")] if command == "auto" else []))
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0], err
    assert len(lines) <= 2 and "Traceback" not in err and (len(lines) == 1 or lines[1].startswith("  hint: "))
    assert not (tmp_path / "o").exists()


def test_max_drop_is_in_the_metrics_points(capsys):
    from edgeslim.cli import main

    assert main(["auto", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "in the metric's points" in text and "--metric NAME|package.module:function" in text
