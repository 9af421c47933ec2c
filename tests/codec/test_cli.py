import json

import pytest
import torch
from edgeslim.cli import run_captured as run_cli


def _run(*args):
    return run_cli(*args)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "dc"
    r = _run("deepcompress", "lenet300", "--data", "synthetic:1,28,28:64", "--prune", "5=0.5,fc=0.9",
             "--bits", "fc=5", "--prune-epochs", "1", "--finetune-epochs", "1", "--runs", "3", "--warmup", "1",
             "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_deepcompress_writes_the_out_dir(out_dir):
    out, printed = out_dir
    for name in ("model.esz", "report.json", "report.md", "model.onnx", "checkpoint/edgeslim.json"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    assert rep == printed
    for key in ("command", "edgeslim_version", "model", "data", "baseline", "result", "ratios", "accuracy_drop",
                "details", "machine"):
        assert key in rep
    assert rep["command"] == "deepcompress"
    assert rep["result"]["size_bytes"] == (out / "model.esz").stat().st_size
    assert rep["baseline"]["size_bytes"] == 266_610 * 4
    assert rep["ratios"]["size"] > 10
    assert rep["result"]["latency_ms"] > 0 and rep["baseline"]["latency_ms"] > 0
    layers = {r["layer"]: r for r in rep["details"]["layers"]}
    assert layers["5"]["kept_pct"] == 50.0 and layers["1"]["kept_pct"] == 10.0
    assert [s["stage"] for s in rep["details"]["stages"]][-1] == "esz file"


def test_decode_writes_a_checkpoint(out_dir, tmp_path, capsys):
    from edgeslim.cli import main

    out, _ = out_dir
    assert main(["decode", str(out / "model.esz"), "--out", str(tmp_path / "dec"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spec"] == "lenet300"
    from edgeslim import models
    from edgeslim.codec import decode_file

    ckpt, side = models.load(tmp_path / "dec")
    ref, _ = decode_file(out / "model.esz")
    assert side["spec"] == "lenet300"
    for k, v in ref.state_dict().items():
        assert torch.equal(ckpt.state_dict()[k], v)


def test_bad_inputs_exit_with_one_line(tmp_path):
    from edgeslim.cli import main

    bad = tmp_path / "bad.esz"
    bad.write_bytes(b"ESZ\0" + b"\x01" * 40)
    assert main(["decode", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert main(["deepcompress", "lenet300", "--prune", "1.0", "--out", str(tmp_path / "o")]) == 2
    assert main(["deepcompress", "lenet300", "--bits", "fc=9", "--out", str(tmp_path / "o")]) == 2
    assert main(["deepcompress", "lenet5", "--bits", "conv=8,fc=5", "--prune", "0.92", "--out",
                 str(tmp_path / "o")]) == 2  # conv1 keeps 40 weights < 256 centroids
    assert not (tmp_path / "o").exists()


def test_bad_inputs_messages(tmp_path, capsys):
    from edgeslim.cli import main

    f = tmp_path / "trunc.esz"
    f.write_bytes(b"ESZ\0\x01\x00")
    assert main(["decode", str(f), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "truncated" in err and "hint:" in err


def test_model_argument_accepts_esz(out_dir):
    # profile / bench / any MODEL argument resolve an .esz by decoding it
    from edgeslim import models
    from edgeslim.codec import decode_file

    out, _ = out_dir
    model, info = models.resolve(str(out / "model.esz"))
    ref, _ = decode_file(out / "model.esz")
    assert info["spec"] == "lenet300" and info["input_shape"] == [1, 28, 28]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_option_parsing_and_yaml_config(tmp_path):
    import argparse

    from edgeslim.codec.cli import _config, _map
    from edgeslim.codec.pipeline import DeepCompress
    from edgeslim.core.errors import UsageError

    assert _map(float)("0.92") == 0.92
    assert _map(int)("conv=8,fc=5") == {"conv": 8, "fc": 5}
    assert _map(int)(r"conv1=4,features\.\d+=6,8") == {"conv1": 4, r"features\.\d+": 6, ".*": 8}
    with pytest.raises(argparse.ArgumentTypeError):
        _map(int)("conv=eight")
    cfg = DeepCompress(prune={"fc": 0.9}, bits={"fc": 4}, finetune_epochs=2)
    (tmp_path / "dc.yaml").write_text(cfg.to_yaml())
    assert _config(argparse.Namespace(config=str(tmp_path / "dc.yaml"))) == cfg
    (tmp_path / "bad.yaml").write_text("type: deep_compress\nbits: 12\n")
    with pytest.raises(UsageError, match="1..8"):
        _config(argparse.Namespace(config=str(tmp_path / "bad.yaml")))
