"""No code runs because a file says so: checkpoint sidecars and .esz metadata name architectures
edgeslim builds itself; a package.module:factory needs the caller's own --spec / spec=."""
import json

import pytest
import torch

from edgeslim import models
from edgeslim.cli import main
from edgeslim.codec import container, decode_file
from edgeslim.core.errors import CheckpointError

FACTORY = "edgeslim.testing.models:TinyConvNet"


def _hostile(marker):
    # os.system(command=...) would create the marker file if edgeslim ever imported and called it
    return {"spec": "os:system", "build": {"command": f"touch {marker}"}}


def _checkpoint(tmp_path, **override):
    ck = tmp_path / "run" / "checkpoint"
    models.save(models.create("lenet300"), ck, spec="lenet300", input_shape=(1, 28, 28))
    side = json.loads((ck / "edgeslim.json").read_text())
    side.update(override)
    (ck / "edgeslim.json").write_text(json.dumps(side))
    return tmp_path / "run"


def test_a_sidecar_naming_a_python_callable_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = _checkpoint(tmp_path, **_hostile(marker))
    with pytest.raises(CheckpointError, match="never imports code because a file says so"):
        models.load(run)
    rc = main(["profile", str(run), "--runs", "1", "--warmup", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "--spec os:system" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_crafted_esz_with_a_valid_crc_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = models.create("lenet300").state_dict()
    blob, _ = container.encode(state, meta={"sidecar": {"format": 1, **_hostile(marker), "structure": {}}})
    esz = tmp_path / "evil.esz"
    esz.write_bytes(blob)
    container.read(esz)  # the CRC is valid: only the content is hostile
    with pytest.raises(CheckpointError, match="a Python factory"):
        decode_file(esz)
    rc = main(["decode", str(esz), "--out", str(tmp_path / "dec")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "dec").exists()


def test_a_factory_spec_loads_when_the_caller_names_it(tmp_path):
    m = models.create(FACTORY, num_classes=4)
    models.save(m, tmp_path / "ck", spec=FACTORY, build={"num_classes": 4}, input_shape=(1, 8, 8))
    with pytest.raises(CheckpointError, match="a Python factory") as e:
        models.load(tmp_path / "ck")
    assert f"--spec {FACTORY}" in e.value.hint
    with pytest.raises(CheckpointError, match="a Python factory"):  # naming another one does not help
        models.load(tmp_path / "ck", spec="edgeslim.testing.models:Other")
    back, meta = models.load(tmp_path / "ck", spec=FACTORY)
    assert meta["spec"] == FACTORY
    assert all(torch.equal(back.state_dict()[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("build, match", [
    ({"not_an_argument": 1}, "takes no argument 'not_an_argument'"),
    (["num_classes", 10], "'build' should be dict"),
])
def test_build_arguments_the_factory_does_not_take_are_refused(tmp_path, build, match):
    run = _checkpoint(tmp_path, build=build)
    with pytest.raises(CheckpointError, match=match):
        models.load(run)


def test_build_arguments_are_plain_data():
    import datetime  # what a YAML file's safe_load can still produce beside plain data

    for bad in (b"bytes", datetime.date(2026, 1, 1), {1, 2}, [object()]):
        with pytest.raises(CheckpointError, match="not plain data"):
            models.create_from_file("lenet300", {"num_classes": bad}, source="a recipe")
    assert models.create_from_file("lenet300", {"num_classes": 3}, source="a recipe")[-1].out_features == 3


@pytest.mark.parametrize("field, value, match", [
    ("spec", None, "'spec' should be str"),
    ("spec", 42, "'spec' should be str"),
    ("input_shape", [1, "a", 28], "input_shape"),
    ("input_shape", "1,28,28", "'input_shape' should be list"),
    ("structure", [1, 2], "'structure' should be dict"),
    ("structure", {"0": {"type": "Linear"}}, "'structure' is malformed"),
    ("structure", {"#attrs": {"forward": 1}}, "has no int attribute 'forward'"),  # never adds or replaces code
    ("structure", {"0.#param:extra": [3]}, "holds no parameter 'extra'"),
    ("structure", {"nope.#attrs": {"x": 1}}, "'structure' is malformed"),
    ("format", 7, "format 7 is not supported"),
])
def test_every_sidecar_field_is_checked(tmp_path, field, value, match):
    run = _checkpoint(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=match):
        models.load(run)


def test_missing_sidecar_field_is_named(tmp_path):
    run = _checkpoint(tmp_path)
    side = json.loads((run / "checkpoint" / "edgeslim.json").read_text())
    del side["spec"]
    (run / "checkpoint" / "edgeslim.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="'spec' is missing"):
        models.load(run)


def test_corrupted_weights_are_reported_as_corrupted(tmp_path, capsys):
    run = _checkpoint(tmp_path)
    w = run / "checkpoint" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight: still a readable safetensors file
    w.write_bytes(bytes(data))
    rc = main(["export", str(run), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and "is corrupted" in err and "operator" not in err
    assert not (tmp_path / "m.onnx").exists()
