"""The real `edgeslim auto` / `edgeslim compress` commands: kill and resume, winner replay, exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from search_toys import SPEC  # noqa: E402  (the toy checkpoint names a factory: CLI calls pass --spec)

ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cmd(*args):
    return [sys.executable, "-m", "edgeslim.cli", *[str(a) for a in args]]


def _finished(db):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="edgeslim-auto", storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - not created yet
        return {}, []
    trials = study.get_trials(deepcopy=False)
    done = {t.number: (t.state.name, t.values, t.params) for t in trials if t.state.name in ("COMPLETE", "PRUNED")}
    return done, trials


@pytest.fixture(scope="module")
def resumed_run(toy_folder, tmp_path_factory):
    """A search SIGKILLed after its first finished trial, then resumed to the end."""
    import yaml

    from search_toys import SMALL_SPACE

    name, ckpt = toy_folder
    root = tmp_path_factory.mktemp("resume")
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump({**SMALL_SPACE, "finetune_batches": 4}))
    out = root / "out"
    args = _cmd("auto", ckpt, "--spec", SPEC, "--data", name, "--val-fraction", "0.25", "--batch-size", "32", "--max-drop", "1",
                "--budget", "5m", "--trials", "6", "--space", space, "--runs", "5", "--out", out)
    env = dict(os.environ, **ENV)
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    before: dict = {}
    while time.time() < deadline and p.poll() is None:
        before, _ = _finished(out / "study.db")
        if before:
            break
        time.sleep(0.1)
    killed_running = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.communicate()
    before, _ = _finished(out / "study.db")
    r = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=400)
    after, trials = _finished(out / "study.db")
    return {"name": name, "ckpt": ckpt, "out": out, "before": before, "after": after, "trials": trials,
            "resume": r, "killed_running": killed_running, "env": env}


@pytest.mark.slow
def test_resume_after_sigkill_keeps_every_finished_trial(resumed_run):
    r = resumed_run
    assert r["killed_running"], "the search ended before it could be killed"
    assert r["before"], "no trial had finished before the kill"
    assert r["resume"].returncode == 0, r["resume"].stderr
    for number, (state, values, params) in r["before"].items():
        assert r["after"][number] == (state, values, params)  # kept exactly
    assert len(r["after"]) >= 6
    assert not [t for t in r["trials"] if t.state.name == "RUNNING"]
    assert "resuming the search" in r["resume"].stderr
    assert (r["out"] / "model.onnx").is_file() and (r["out"] / "report.html").is_file()


@pytest.mark.slow
def test_winner_yaml_replays_to_the_same_size(resumed_run, tmp_path):
    r = resumed_run
    replay = tmp_path / "replay"
    p = subprocess.run(_cmd("compress", r["ckpt"], "--spec", SPEC, "--data", r["name"], "--val-fraction", "0.25", "--batch-size", "32",
                            "--recipe", r["out"] / "winner.yaml", "--runs", "5", "--out", replay, "--json"),
                       env=r["env"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    want = json.loads((r["out"] / "report.json").read_text())
    assert got["result"]["size_bytes"] == want["result"]["size_bytes"]
    assert (replay / "model.onnx").stat().st_size == (r["out"] / "model.onnx").stat().st_size


def test_cli_infeasible_sla_exits_1(toy_folder, small_space_file, tmp_path, capsys, monkeypatch):
    import functools
    import importlib

    from edgeslim.cli import main

    # measure the trial instead of stopping it early (the CLI has no flag for the margins)
    mod = importlib.import_module("edgeslim.search.auto")
    monkeypatch.setattr(mod, "auto", functools.partial(mod.auto, prune_margin=1000.0, epoch_prune_margin=1000.0))

    name, _ = toy_folder
    out = tmp_path / "o"
    rc = main(["auto", "edgeslim.testing.models:TinyConvNet", "--data", name, "--val-fraction", "0.25",
               "--batch-size", "32", "--min-accuracy", "99.5", "--budget", "5m", "--trials", "1", "--no-greedy",
               "--space", str(small_space_file), "--runs", "5", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert "no policy met the SLA" in cap.out and "kept the baseline" in cap.err
    assert (out / "model.onnx").is_file() and (out / "report.json").is_file()
    assert "closest: trial 0" in cap.out and f"{out}/closest.yaml" in cap.out and (out / "closest.yaml").is_file()


def test_cli_recipe_unknown_key_exits_2(toy_folder, tmp_path, capsys):
    from edgeslim.cli import main

    name, ckpt = toy_folder
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {type: ptq, bitz: 8}\n")
    rc = main(["compress", str(ckpt), "--spec", SPEC, "--data", name, "--recipe", str(bad), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown key 'bitz' for ptq" in err and "valid keys:" in err and "bits" in err
