"""Every bad input gets its own message (issue 16).

Each case runs the real CLI entry in process (``edgeslim.cli.main``) and asserts the contract: the exit
code (2 usage, 1 failure), stderr's first line is ``error: ...`` naming the value (a needle from it), no
traceback, never the "unexpected ... report it" line kept for real bugs, and nothing already on disk
changed (every file's size, mtime and hash, and every folder, before and after).
"""
from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
import torch

from edgeslim import models
from edgeslim.cli import main



def _images(root: Path, classes: int, per_class: int = 3) -> None:
    from PIL import Image

    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (28, 28), color=40 * k + 10 * i).save(root / f"c{k}" / f"{i}.png")


@pytest.fixture(scope="module")
def _inputs(tmp_path_factory) -> Path:
    """What the cases read (built once): a checkpoint DIR, image folders, recipes, odd files, an old out DIR."""
    ws = tmp_path_factory.mktemp("bad-inputs")
    models.save(models.create("lenet5"), ws / "ckpt" / "checkpoint", spec="lenet5", input_shape=(1, 28, 28))
    models.save(models.create("lenet5"), ws / "evil" / "checkpoint", spec="lenet5", input_shape=(1, 28, 28))
    side = ws / "evil" / "checkpoint" / "edgeslim.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "spec": "os:system"}))
    models.save(models.create("lenet5"), ws / "tampered" / "checkpoint", spec="lenet5", input_shape=(1, 28, 28))
    weights = ws / "tampered" / "checkpoint" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    _images(ws / "img2", 2)
    _images(ws / "img1", 1)
    (ws / "recipe.yaml").write_text("steps:\n  - {type: ptq, bits: 8}\n")
    (ws / "unknown.yaml").write_text("steps:\n  - {type: nosuch, ratio: 0.5}\n")
    (ws / "broken.yaml").write_text("steps: [")
    (ws / "png.yaml").write_bytes((ws / "img2" / "c0" / "0.png").read_bytes())
    (ws / "fake.esz").write_bytes((ws / "img2" / "c0" / "0.png").read_bytes())
    (ws / "crafted.esz").write_bytes(b"ESZ\0" + b"\x01\x00\x00\x00" + b"\xff" * 64)
    (ws / "afile").write_text("a file, not a folder")
    (ws / "old").mkdir()
    (ws / "old" / "report.json").write_text('{"command": "prune"}')
    _esz_inputs(ws)
    (ws / "runs" / "mine").mkdir(parents=True)
    (ws / "runs" / "mine" / "notes.txt").write_text("a folder of the user's own")
    return ws


def _esz_inputs(ws: Path) -> None:
    """A real .esz, one whose sidecar (CRC recomputed) names os:system, and a DIR that holds a model."""
    from edgeslim.codec import container
    from edgeslim.codec.esz import sidecar, write_model

    m = models.create("lenet300")
    write_model(ws / "good.esz", m, {}, side=sidecar(m, spec="lenet300", input_shape=(1, 28, 28)))
    blob, _ = container.encode(m.state_dict(), meta={"sidecar": {
        "format": 1, "spec": "os:system", "build": {"command": f"touch {ws}/pwned"}, "structure": {}}})
    (ws / "hostile.esz").write_bytes(blob)
    models.save(m, ws / "decoded" / "checkpoint", spec="lenet300", input_shape=(1, 28, 28))


@pytest.fixture
def ws(_inputs) -> Path:
    return _inputs


def _snapshot(root: Path) -> dict[str, tuple]:
    snap = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_dir():
            snap[key] = ("dir",)
        else:
            st = p.stat()
            snap[key] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


def _enospc(monkeypatch):  # the disk fills while the exporter writes (torch.onnx raises OSError 28, no path)
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch.onnx, "export", full)


def _eacces(monkeypatch):
    def denied(model, args, f=None, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(f))
    monkeypatch.setattr(torch.onnx, "export", denied)


def _erofs_wrapped(monkeypatch):  # a library that wraps the OSError in its own exception
    def wrapped(model, args, f=None, *a, **kw):
        try:
            raise OSError(errno.EROFS, "Read-only file system", str(f))
        except OSError as e:
            raise RuntimeError("serialization failed") from e
    monkeypatch.setattr(torch.onnx, "export", wrapped)


def _rust_enospc(monkeypatch):  # safetensors' style: only the text says which errno
    def rust(*args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(torch.onnx, "export", rust)


SYN = "synthetic:1,28,28:8"
C = pytest.param  # (id) argv with {ws} for the inputs folder, exit code, needle of the first line[, fault]

CASES = [
    # -- flags: parse-time ranges, the value and its range named -----------------------------------
    C(["profile", "lenet5", "--threads", "0"], 2, "--threads: must be an integer in 1..", id="threads-0"),
    C(["profile", "lenet5", "--threads", "-3"], 2, "got -3", id="threads-negative"),
    C(["bench", "lenet5", "--threads", "100000"], 2, "--threads: must be an integer in 1..", id="threads-huge"),
    C(["profile", "lenet5", "--runs", "0"], 2, "--runs: must be an integer >= 1, got 0", id="runs-0"),
    C(["profile", "lenet5", "--warmup", "-5"], 2, "--warmup: must be an integer >= 0, got -5", id="warmup-neg"),
    C(["bench", "lenet5", "--rounds", "0"], 2, "--rounds: must be an integer >= 1, got 0", id="rounds-0"),
    C(["profile", "lenet5", "--runs", "many"], 2, "--runs: expected an integer >= 1, got 'many'", id="runs-text"),
    C(["export", "lenet5", "--opset", "3", "--out", "{ws}/o.onnx"], 2, "--opset: must be an integer in 7..",
      id="opset-3"),
    C(["export", "lenet5", "--opset", "99", "--out", "{ws}/o.onnx"], 2, "got 99", id="opset-99"),
    C(["export", "lenet5", "--atol", "-1", "--out", "{ws}/o.onnx"], 2, "--atol: must be a number > 0", id="atol"),
    C(["export", "lenet5", "--out", "{ws}/o.txt"], 2, "must name a .onnx file for --runtime onnxruntime", id="export-not-onnx"),
    C(["reparam", "lenet5", "--atol", "nan"], 2, "--atol: must be a number > 0, got nan", id="atol-nan"),
    C(["auto", "lenet5", "--data", SYN, "--max-drop", "200", "--out", "{ws}/a"], 2,
      "--max-drop: must be a number in [0, 100), got 200", id="max-drop-200"),
    C(["auto", "lenet5", "--data", SYN, "--max-drop", "-1", "--out", "{ws}/a"], 2, "got -1", id="max-drop-neg"),
    C(["auto", "lenet5", "--data", SYN, "--max-drop", "inf", "--out", "{ws}/a"], 2, "got inf", id="max-drop-inf"),
    C(["auto", "lenet5", "--data", SYN, "--min-accuracy", "150", "--out", "{ws}/a"], 2,
      "--min-accuracy: must be a number in [0, 100], got 150", id="min-accuracy-150"),
    C(["auto", "lenet5", "--data", SYN, "--min-accuracy", "-0.5", "--out", "{ws}/a"], 2, "got -0.5",
      id="min-accuracy-neg"),
    C(["auto", "lenet5", "--data", SYN, "--confidence", "1.5", "--out", "{ws}/a"], 2, "--confidence", id="conf"),
    C(["auto", "lenet5", "--data", SYN, "--budget", "0", "--out", "{ws}/a"], 2, "--budget: must be a positive",
      id="budget-0"),
    C(["auto", "lenet5", "--data", SYN, "--budget", "soon", "--out", "{ws}/a"], 2, "cannot read budget 'soon'",
      id="budget-text"),
    C(["auto", "lenet5", "--data", SYN, "--trials", "0", "--out", "{ws}/a"], 2, "--trials", id="trials-0"),
    C(["auto", "lenet5", "--data", SYN, "--val-batches", "0", "--out", "{ws}/a"], 2, "--val-batches", id="valb-0"),
    C(["auto", "lenet5", "--data", SYN, "--max-latency", "fast", "--out", "{ws}/a"], 2,
      "cannot read the latency limit 'fast'", id="max-latency"),
    C(["profile", "lenet5", "--data", SYN, "--batch-size", "0"], 2, "--batch-size", id="batch-size-0"),
    C(["profile", "lenet5", "--data", SYN, "--val-fraction", "1.5"], 2, "--val-fraction: must be a number in [0, 1)",
      id="val-fraction"),
    C(["profile", "lenet5", "--data", SYN, "--max-batches", "0"], 2, "--max-batches", id="max-batches-0"),
    C(["profile", "lenet5", "--seed", "-1", "--data", SYN], 2, "--seed: must be an integer >= 0", id="seed-neg"),
    C(["profile", "lenet5", "--num-classes", "0"], 2, "--num-classes", id="num-classes-0"),
    C(["profile", "lenet5", "--in-channels", "0"], 2, "--in-channels", id="in-channels-0"),
    C(["models", "--num-classes", "0"], 2, "--num-classes", id="models-num-classes"),
    C(["quantize", "lenet5", "--method", "qat", "--lr", "-1", "--data", SYN], 2, "--lr: must be a number > 0",
      id="quant-lr"),
    C(["quantize", "lenet5", "--bits", "0", "--data", SYN], 2, "bits must be an integer in 1..8", id="quant-bits"),
    C(["quantize", "lenet5", "--calib-batches", "0", "--data", SYN], 2, "--calib-batches", id="calib-0"),
    C(["prune", "lenet5", "--lr", "0"], 2, "--lr", id="prune-lr"),
    C(["prune", "lenet5", "--ratio", "1.5"], 2, "ratio must be in [0, 1)", id="prune-ratio"),
    C(["prune", "lenet5", "--steps", "0"], 2, "--steps", id="prune-steps"),
    C(["factorize", "lenet5", "--rank", "0"], 2, "--rank", id="factorize-rank"),
    C(["factorize", "lenet5", "--min-speedup", "0"], 2, "--min-speedup", id="factorize-speedup"),
    C(["distill", "--teacher", "lenet5", "--student", "lenet5", "--data", SYN, "--epochs", "0"], 2,
      "--epochs: must be a number > 0", id="distill-epochs-0"),
    C(["distill", "--teacher", "lenet5", "--student", "lenet5", "--data", SYN, "--temperature", "0"], 2,
      "--temperature", id="distill-temperature"),
    C(["sensitivity", "lenet5", "--data", SYN, "--out", "{ws}/s", "--input-shape", "1,x"], 2, "bad shape '1,x'",
      id="sensitivity-shape"),
    C(["profile", "lenet5", "--input-shape", "0,1,28,28"], 2, "bad shape", id="shape-zero"),
    C(["train", "--model", "lenet5", "--data", SYN, "--device", "tpu9", "--out", "{ws}/t"], 2, "available: cpu",
      id="device"),
    C(["nosuchcommand"], 2, "invalid choice", id="unknown-command"),
    C(["profile", "resnet2"], 2, "unknown model 'resnet2'", id="unknown-model"),
    # -- data ----------------------------------------------------------------------------------------
    C(["profile", "lenet5", "--data", "fashion-mnist", "--data-dir", "{ws}/no-such"], 2,
      "--data-dir: {ws}/no-such does not exist", id="data-dir-missing"),
    C(["profile", "lenet5", "--data-dir", "{ws}/img2"], 2, "without --data", id="data-dir-alone"),
    C(["profile", "lenet5", "--data", SYN, "--data-dir", "{ws}/img2"], 2, "applies to --data fashion-mnist only",
      id="data-dir-not-fmnist"),
    C(["profile", "lenet5", "--data", "bogus"], 2, "unknown dataset 'bogus'", id="data-unknown"),
    C(["profile", "lenet5", "--data", "synthetic:1,x"], 2, "bad synthetic spec", id="data-synthetic"),
    C(["profile", "lenet5", "--data", "imagefolder:{ws}/no-such"], 1, "is not a folder", id="data-no-folder"),
    C(["train", "--model", "lenet5", "--data", "imagefolder:{ws}/img1", "--out", "{ws}/t"], 1,
      "has 1 class (c0): a classifier needs at least two", id="train-one-class"),
    C(["prune", "lenet5", "--data", "imagefolder:{ws}/img1", "--finetune-epochs", "1"], 1, "1 class",
      id="prune-one-class"),
    C(["auto", "lenet5", "--data", "imagefolder:{ws}/img1", "--out", "{ws}/a"], 1, "1 class", id="auto-one-class"),
    C(["auto", "lenet5", "--data", SYN, "--out", "{ws}/a"], 1, "has no labels", id="auto-unlabelled"),
    C(["train", "--model", "lenet5", "--data", SYN, "--out", "{ws}/t"], 2, "no labels to train on",
      id="train-unlabelled"),
    # -- shapes: too small / wrong channels, said so before any export ------------------------------
    C(["profile", "lenet5", "--input-shape", "1,1,4,4"], 2, "input shape [1,1,4,4] is too small for lenet5",
      id="shape-too-small"),
    C(["profile", "lenet5", "--input-shape", "1,1,4,4", "--runtime", "torch"], 2, "too small for lenet5",
      id="shape-too-small-torch"),
    C(["export", "lenet5", "--input-shape", "1,1,8,8", "--out", "{ws}/o.onnx"], 2, "is too small for lenet5",
      id="export-shape-too-small"),
    C(["bench", "lenet300", "lenet5", "--input-shape", "1,1,8,8"], 2, "does not fit lenet300", id="bench-shape"),
    C(["profile", "lenet5", "--input-shape", "1,3,28,28"], 2, "takes 1 channel(s), the shape gives 3",
      id="shape-channels"),
    C(["prune", "lenet5", "--input-shape", "1,1,4,4"], 2, "too small for lenet5", id="prune-shape"),
    # -- files and models ------------------------------------------------------------------------------
    C(["profile", "{ws}/missing.onnx"], 2, "no such ONNX file", id="onnx-missing"),
    C(["profile", "{ws}/afile"], 1, "not an edgeslim checkpoint", id="not-a-checkpoint"),
    C(["compress", "lenet5", "--recipe", "{ws}/missing.yaml", "--out", "{ws}/c"], 2, "does not exist",
      id="recipe-missing"),
    C(["compress", "lenet5", "--recipe", "{ws}/png.yaml", "--out", "{ws}/c"], 2, "is not a text (YAML/JSON) file",
      id="recipe-binary"),
    C(["quantize", "lenet5", "--data", SYN, "--mixed-precision", "{ws}/missing.yaml"], 2, "does not exist",
      id="mixed-precision-missing"),
    C(["auto", "lenet5", "--data", SYN, "--space", "{ws}/img2", "--out", "{ws}/a"], 2, "is not a file",
      id="space-folder"),
    # -- recipes -----------------------------------------------------------------------------------------
    C(["compress", "lenet5", "--recipe", "{ws}/unknown.yaml", "--out", "{ws}/c"], 2, "unknown config type 'nosuch'",
      id="recipe-unknown-step"),
    C(["compress", "lenet5", "--recipe", "{ws}/broken.yaml", "--out", "{ws}/c"], 2, "not valid YAML",
      id="recipe-broken"),
    # -- outputs -------------------------------------------------------------------------------------------
    C(["export", "lenet5", "--out", "{ws}/afile/m.onnx"], 1, "{ws}/afile", id="out-under-a-file"),
    C(["prune", "{ws}/ckpt", "--out", "{ws}/ckpt"], 2, "--out", id="out-is-input"),
    C(["prune", "{ws}/ckpt", "--out", "{ws}/ckpt/checkpoint"], 2, "--out", id="out-inside-input"),
    # -- faults: the system refuses a write; named, not blamed on the model ------------------------------
    C(["export", "lenet5", "--out", "{ws}/full.onnx"], 1, "no space left on device writing {ws}/full.onnx",
      _enospc, id="enospc"),
    C(["export", "lenet5", "--out", "{ws}/denied.onnx"], 1, "permission denied: {ws}/denied.onnx", _eacces,
      id="eacces"),
    C(["export", "lenet5", "--out", "{ws}/ro.onnx"], 1, "read-only file system: {ws}/ro.onnx", _erofs_wrapped,
      id="erofs-wrapped"),
    C(["export", "lenet5", "--out", "{ws}/rust.onnx"], 1, "no space left on device writing {ws}/rust.onnx",
      _rust_enospc, id="enospc-in-text"),
    # -- storage -------------------------------------------------------------------------------------------
    C(["auto", "lenet5", "--data", SYN, "--resume", "--out", "{ws}/old"], 2, "--resume: there is no study",
      id="resume-no-study"),
    C(["auto", "lenet5", "--data", SYN, "--worker", "--out", "{ws}/a"], 2, "--worker: there is no study",
      id="worker-no-study"),
    C(["auto", "lenet5", "--data", SYN, "--resume", "--storage", "sqlite:///{ws}/none.db", "--out", "{ws}/a"], 2,
      "none.db does not exist", id="resume-storage-missing"),
    C(["auto", "lenet5", "--data", SYN, "--storage", "postgresql://u@127.0.0.1:1/x", "--out", "{ws}/a"], 1,
      "cannot open the study storage", id="storage-unreachable"),
    # -- .esz and crafted inputs ------------------------------------------------------------------------------
    C(["decode", "{ws}/missing.esz", "--out", "{ws}/d"], 1, "no such file", id="esz-missing"),
    C(["decode", "{ws}/fake.esz", "--out", "{ws}/d"], 1, "is not an .esz file", id="esz-not-esz"),
    C(["decode", "{ws}/crafted.esz", "--out", "{ws}/d"], 1, "esz", id="esz-crafted"),
    C(["profile", "{ws}/evil"], 1, "os:system", id="sidecar-spec-os-system"),
    C(["profile", "{ws}/tampered"], 1, "SHA-256 does not match", id="checkpoint-checksum"),
    C(["decode", "{ws}/hostile.esz", "--out", "{ws}/d"], 1, "never imports code", id="esz-valid-crc-os-system"),
    C(["decode", "{ws}/good.esz", "--out", "{ws}/decoded"], 2, "already holds a model", id="decode-over-a-model"),
    C(["prune", "{ws}/ckpt", "--out", "{ws}"], 2, "contains the input", id="out-contains-input"),
    C(["quantize", "lenet5", "--data", SYN, "--out", "{ws}/runs/mine"], 2, "holds files edgeslim did not write",
      id="out-foreign-dir"),
    C(["train", "--model", "lenet5", "--data", "imagefolder:{ws}/img2", "--out", "{ws}/afile"], 2,
      "is a file, not a directory", id="train-out-is-a-file"),
]


@pytest.mark.parametrize("argv, rc, needle, fault", [
    pytest.param(*c.values, *([None] * (4 - len(c.values))), id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(argv, rc, needle, fault, ws, capsys, monkeypatch):
    if fault is not None:
        fault(monkeypatch)
    argv = [a.format(ws=ws) for a in argv]
    before = _snapshot(ws)
    got = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert all(not line.startswith("error:") for line in lines[1:]), err
    assert len(lines) == 1 or lines[1].startswith("  hint: "), err
    assert needle.format(ws=ws) in lines[0], err
    assert got == rc, err
    assert _snapshot(ws) == before, "a bad input changed what was already on disk"


def test_real_bugs_keep_the_report_it_line(capsys, monkeypatch):
    """The generic line stays for what is not the user's input: a bug in edgeslim."""
    import edgeslim.cli as cli

    real = cli.build_parser

    def with_a_bug():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        sub.choices["models"].set_defaults(func=lambda args: {}["oops"])
        return parser
    monkeypatch.setattr(cli, "build_parser", with_a_bug)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected KeyError") and "report it" in err


def test_help_and_version_return_zero(capsys):
    assert main(["--version"]) == 0
    assert main(["profile", "--help"]) == 0
    assert "--threads" in capsys.readouterr().out
