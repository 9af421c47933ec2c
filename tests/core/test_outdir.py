"""The one out-DIR writer: all at once, inputs never outputs, leftovers of killed runs cleaned."""
import errno
import json
import os

import pytest

from edgeslim.core import outdir
from edgeslim.core.errors import UsageError
from edgeslim.core.outdir import OutDir, check_out, clean_leftovers


def _write(stage, tag):
    (stage / "report.json").write_text(json.dumps({"tag": tag}))
    (stage / "checkpoint").mkdir()
    (stage / "checkpoint" / "edgeslim.json").write_text(json.dumps({"tag": tag}))


def _tags(out):
    return (json.loads((out / "report.json").read_text())["tag"],
            json.loads((out / "checkpoint" / "edgeslim.json").read_text())["tag"])


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_new_result_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "run"
    with OutDir(out) as stage:
        _write(stage, "first")
        (stage / "extra.png").write_bytes(b"x")
        assert not out.exists()  # nothing is visible before the block ends
    assert _tags(out) == ("first", "first")
    with OutDir(out) as stage:
        _write(stage, "second")
    assert _tags(out) == ("second", "second")
    assert not (out / "extra.png").exists()  # a file of the old result does not linger beside the new one
    assert _siblings(out) == []


def test_an_error_inside_leaves_the_previous_result(tmp_path):
    out = tmp_path / "run"
    with OutDir(out) as stage:
        _write(stage, "good")
    with pytest.raises(RuntimeError):
        with OutDir(out) as stage:
            _write(stage, "half")
            raise RuntimeError("killed while writing")
    assert _tags(out) == ("good", "good")
    assert _siblings(out) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_kill_at_any_step_of_publishing_leaves_one_complete_result(tmp_path, monkeypatch, exchange):
    """Stop a publish at its n-th file-system step (rename, exchange or removal), as a SIGKILL there
    would: DIR always reads as one complete result, and the next run removes what was left behind."""
    if not exchange:
        monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)
    out = tmp_path / "run"
    with OutDir(out) as stage:
        _write(stage, "old")
    steps = {"rename": outdir.os.rename, "exchange": outdir._exchange, "rmtree": outdir.shutil.rmtree}
    raised = []
    for n in range(1, 6):
        calls = []

        def killer(name, n=n, calls=calls):
            def step(*a, **k):
                calls.append(name)
                if len(calls) == n:
                    raised.append(name)
                    raise KeyboardInterrupt  # not an ordinary error: no cleanup runs, as after a kill
                return steps[name](*a, **k)
            return step

        monkeypatch.setattr(outdir.os, "rename", killer("rename"))
        monkeypatch.setattr(outdir, "_exchange", killer("exchange"))
        monkeypatch.setattr(outdir.shutil, "rmtree", killer("rmtree"))
        try:
            with OutDir(out) as stage:
                _write(stage, f"new{n}")
        except KeyboardInterrupt:
            pass
        for name, fn in steps.items():
            monkeypatch.setattr(outdir.os if name == "rename" else outdir.shutil if name == "rmtree" else outdir,
                                name if name != "exchange" else "_exchange", fn)
        if exchange:  # with renameat2 there is no instant without DIR
            assert out.is_dir() and _tags(out)[0] == _tags(out)[1]  # report and checkpoint of one result
        clean_leftovers(out)  # what the next run into DIR does first
        assert out.is_dir() and _tags(out)[0] == _tags(out)[1]
        assert _siblings(out) == [], _siblings(out)
    assert ({"exchange", "rmtree"} if exchange else {"rename", "rmtree"}) <= set(raised)


def test_leftovers_of_a_dead_process_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("{}")
    dead = tmp_path / ".run.staging-999999999-abcd"
    dead.mkdir()
    live = tmp_path / f".run.staging-{os.getppid()}-abcd"
    live.mkdir()
    other = tmp_path / ".other.staging-999999999-abcd"
    other.mkdir()
    with OutDir(out) as stage:
        _write(stage, "x")
    assert not dead.exists() and live.exists() and other.exists()


def test_parked_previous_result_is_put_back_when_dir_is_missing(tmp_path):
    out = tmp_path / "run"
    parked = tmp_path / ".run.old-999999999-abcd"
    parked.mkdir()
    _write(parked, "previous")
    clean_leftovers(out)
    assert _tags(out) == ("previous", "previous") and not parked.exists()


def test_carried_state_survives_the_swap(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "study.db").write_bytes(b"sqlite")
    (out / ".work").mkdir()
    (out / ".work" / "trial-1.onnx").write_bytes(b"onnx")
    with OutDir(out, carry=("study.db", ".work")) as stage:
        _write(stage, "r")
    assert (out / "study.db").read_bytes() == b"sqlite"
    assert (out / ".work" / "trial-1.onnx").read_bytes() == b"onnx"


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_an_output_never_destroys_an_input(tmp_path, where):
    model = tmp_path / "runs" / "lenet5"
    (model / "checkpoint").mkdir(parents=True)
    (model / "checkpoint" / "edgeslim.json").write_text("{}")
    out = {"same": model, "inside": model / "sub", "contains": tmp_path / "runs"}[where]
    with pytest.raises(UsageError, match="destroy the input"):
        check_out(out, inputs=[str(model)])
    assert (model / "checkpoint" / "edgeslim.json").read_text() == "{}"


def test_refuses_a_file_a_foreign_directory_and_unwritable_places(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        check_out(f)
    with pytest.raises(UsageError, match="is a file"):
        check_out(f / "sub")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match="did not write"):
        check_out(mine)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_out(empty)

    def readonly(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outdir.Path, "mkdir", readonly)
    with pytest.raises(UsageError, match="read-only file system"):
        check_out(tmp_path / "new")


def test_a_dir_holding_a_model_needs_force_when_asked(tmp_path):
    out = tmp_path / "dec"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "edgeslim.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds a model"):
        check_out(out, refuse_model=True)
    check_out(out, refuse_model=True, force=True)


def test_a_command_stopped_at_any_rename_leaves_dir_loadable_and_consistent(tmp_path, monkeypatch):
    """`edgeslim prune ... --out DIR` over an earlier result, its n-th rename failing (as a kill there
    would stop it), for every n until it succeeds: DIR's checkpoint loads and is the model its
    report describes, and no staging directory is left once the next run has started."""
    from edgeslim import models
    from edgeslim.cli import main

    out = tmp_path / "p"
    args = ["prune", "lenet5", "--data", "synthetic:1,28,28:16", "--granularity", "channel", "--runs", "1",
            "--warmup", "0", "--out", str(out), "--json"]

    def consistent():
        model, _ = models.load(out)
        report = json.loads((out / "report.json").read_text())
        return report["result"]["params"] == sum(p.numel() for p in model.parameters())

    assert main(args + ["--ratio", "0.25"]) == 0 and consistent()
    real = {"rename": os.rename, "replace": os.replace, "exchange": outdir._exchange}
    for n in range(1, 40):
        calls = []

        def failing(name, n=n, calls=calls):
            def step(*a, **k):
                calls.append(name)
                if len(calls) == n:
                    raise OSError(errno.EIO, "stopped here by the test")
                return real[name](*a, **k)
            return step

        monkeypatch.setattr(os, "rename", failing("rename"))
        monkeypatch.setattr(os, "replace", failing("replace"))
        monkeypatch.setattr(outdir, "_exchange", failing("exchange"))
        rc = main(args + ["--ratio", "0.5"])
        monkeypatch.setattr(os, "rename", real["rename"])
        monkeypatch.setattr(os, "replace", real["replace"])
        monkeypatch.setattr(outdir, "_exchange", real["exchange"])
        assert consistent(), f"after a failure at step {n} of {calls}"
        clean_leftovers(out)
        assert _siblings(out) == []
        if rc == 0:
            break
    assert rc == 0 and n > 3  # every rename of the run was failed once before it went through
    assert json.loads((out / "report.json").read_text())["details"]["config"]["ratio"] == 0.5
