"""`edgeslim distill`: the real console script once, bad input in-process."""
import json
import subprocess

import pytest

from edgeslim.cli import main
from edgeslim.testing import cli_command

EDGESLIM = cli_command()
TINY = "edgeslim.testing.models:TinyConvNet"
TINYRES = "edgeslim.testing.models:TinyResNet"
DATA = "synthetic:1,8,8:64"  # unlabelled: distilled from the teacher's predictions alone


def _distill_args(out):
    return ["distill", "--teacher", TINYRES, "--student", TINY, "--data", DATA, "--epochs", "1",
            "--features", "t.block1:s.conv2", "--runs", "3", "--warmup", "1", "--out", str(out), "--json"]


def test_distill_cli_in_process(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(_distill_args(out)) == 0
    _check(json.loads(capsys.readouterr().out), out)


@pytest.mark.slow
def test_distill_console_script(tmp_path):
    out = tmp_path / "ds"
    p = subprocess.run([*EDGESLIM, *_distill_args(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    _check(json.loads(p.stdout), out)


def _check(rep, out):
    assert rep["command"] == "distill" and rep["details"]["baseline_is"] == "teacher"
    assert rep["baseline"]["params"] > rep["result"]["params"]
    assert rep["details"]["adapters"] == {"hint0": "Conv2d"}
    assert (out / "checkpoint" / "model.safetensors").is_file() and (out / "model.onnx").is_file()


def test_distill_bad_inputs(capsys):
    assert main(["distill", "--teacher", TINYRES, "--student", TINY, "--data", DATA,
                 "--features", "t.blok1:s.conv2"]) == 2
    err = capsys.readouterr().err
    assert "teacher has no layer named 'blok1'" in err and "block1" in err
    assert main(["distill", "--teacher", TINYRES, "--student", TINY, "--num-classes", "7", "--data", DATA]) == 2
    assert "teacher predicts 4 classes, the student 7" in capsys.readouterr().err
    assert main(["distill", "--teacher", TINYRES, "--student", TINY, "--data", DATA, "--alpha", "2"]) == 2
