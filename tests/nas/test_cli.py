"""`edgeslim nas` as a user runs it: usage errors are one line (exit 2) before any work; a small run."""
from __future__ import annotations

import json

import pytest
import yaml

from edgeslim.testing.data import write_image_folder
from nas_toys import TINY_RES


@pytest.mark.parametrize("args, text", [
    (["--strategy", "annealing"], "invalid choice"),
    (["--max-latency", "fast"], "cannot read the latency limit"),
    (["--max-size", "huge"], "cannot read the memory limit"),
    (["--budget", "soon"], "cannot read budget"),
    (["--space", "nowhere.yaml"], "neither a built-in space nor a file"),
    (["--override", "stages.7.depth=[1]"], "names nothing in the space"),
    (["--max-latency", "2x"], "relative to a reference model"),
])
def test_usage_errors_are_one_line(cli, args, text):
    p = cli("nas", "--data", "synthetic:1,8,8:64", "--out", "o", *args)
    assert p.returncode == 2, p.stderr
    assert text in p.stderr and "Traceback" not in p.stderr
    assert len([ln for ln in p.stderr.splitlines() if ln.startswith("error")]) == 1


def test_unlabelled_data_is_refused(cli):
    p = cli("nas", "--data", "synthetic:1,8,8:64", "--space", "resnet", "--out", "o")
    assert p.returncode in (1, 2) and "labelled" in p.stderr and "Traceback" not in p.stderr


def test_a_small_search_from_the_command_line(cli, tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=4, per_class=24, size=(8, 8), mode="L")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_RES))
    p = cli("nas", "--data", f"imagefolder:{root}", "--val-fraction", "0.25", "--batch-size", "16", "--space", space,
            "--strategy", "random", "--max-latency", "50", "--supernet-epochs", "1", "--finetune-epochs", "1",
            "--evaluations", "3", "--finalists", "1", "--val-batches", "1", "--runs", "3", "--budget", "10m",
            "--json", "--out", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["feasible"] and obj["details"]["strategy"] == "random" and obj["details"]["search"]["scored"] == 3
    assert (tmp_path / "out" / "checkpoint" / "edgeslim.json").is_file()
