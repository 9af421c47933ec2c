"""`edgeslim factorize`: the real console script once, bad input in-process."""
import json
import subprocess

import pytest

from edgeslim.cli import main
from edgeslim.testing import cli_command

EDGESLIM = cli_command()
TINY = "edgeslim.testing.models:TinyConvNet"


def _args(out):
    return ["factorize", TINY, "--method", "tucker", "--target-macs", "0.5", "--no-latency-check",
            "--input-shape", "1,1,8,8", "--runs", "3", "--warmup", "1", "--out", str(out), "--json"]


def test_factorize_cli_in_process(tmp_path, capsys):
    out = tmp_path / "fz"
    assert main(_args(out)) == 0
    _check(json.loads(capsys.readouterr().out), out)


@pytest.mark.slow
def test_factorize_console_script(tmp_path):
    out = tmp_path / "fz"
    p = subprocess.run([*EDGESLIM, *_args(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    _check(json.loads(p.stdout), out)


def _check(rep, out):
    assert rep["command"] == "factorize" and rep["ratios"]["macs"] > 1.0
    rows = {r["layer"]: r for r in rep["details"]["layers"]}
    assert rows["conv2"]["kept"] == "factorized" and rows["conv1"]["kept"] == "original"
    assert (out / "checkpoint" / "edgeslim.json").is_file() and (out / "report.md").is_file()


def test_factorize_bad_rank(capsys):
    assert main(["factorize", TINY, "--method", "svd", "--rank", "0", "--input-shape", "1,1,8,8"]) == 2
    err = capsys.readouterr().err
    assert "rank" in err and "hint:" in err and "Traceback" not in err
    assert main(["factorize", TINY, "--method", "svd", "--rank", "99", "--input-shape", "1,1,8,8"]) == 2
    assert "rank 99 is larger than fc allows (at most 4" in capsys.readouterr().err
    # argparse: --rank and --energy are exclusive (a usage error is a return code, also in process)
    assert main(["factorize", TINY, "--method", "tucker", "--rank", "3", "--energy", "0.9"]) == 2
    assert "not allowed with argument --rank" in capsys.readouterr().err
