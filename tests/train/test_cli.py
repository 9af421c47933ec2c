"""`edgeslim train`: reproducible from --seed, warm-up / clipping flags, any image size for the zoo."""
from __future__ import annotations

import json

import pytest

from edgeslim.testing.data import write_image_folder


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "img", classes=3, per_class=12, size=(64, 64))


def test_lenet5_trains_on_64px_rgb_and_one_command_gives_one_model(cli, tmp_path, folder):
    runs = []
    for name in ("a", "b"):
        cli("train", "--model", "lenet5", "--data", f"imagefolder:{folder}", "--epochs", "2", "--batch-size", "8",
            "--seed", "3", "--out", tmp_path / name, "--json", check_rc=0)
        runs.append((tmp_path / name / "checkpoint" / "model.safetensors").read_bytes())
    assert runs[0] == runs[1]  # same command, same seed, same threads: the same bytes
    side = json.loads((tmp_path / "a" / "checkpoint" / "edgeslim.json").read_text())
    assert side["build"]["input_size"] == [64, 64] and side["input_shape"] == [3, 64, 64]
    details = json.loads((tmp_path / "a" / "report.json").read_text())["details"]
    assert details["warmup_steps"] == 1 and details["clip_grad"] == 5.0 and details["steps"] == 8
    assert details["bn_recalibration"] == {"batches": 0, "layers": 0, "times": 0}  # LeNet-5 has no BatchNorm


def test_flags_reach_the_trainer_and_bn_recalibration_is_reported(cli, tmp_path, folder):
    cli("train", "--model", "resnet8", "--data", f"imagefolder:{folder}", "--epochs", "1", "--batch-size", "8",
        "--warmup-steps", "0", "--clip-grad", "0", "--out", tmp_path / "r", "--json", check_rc=0)
    details = json.loads((tmp_path / "r" / "report.json").read_text())["details"]
    assert details["warmup_steps"] == 0 and details["clip_grad"] is None
    # 4 steps at BatchNorm momentum 0.1 leave 0.9**4 of the initial statistics: re-estimated on 4 batches
    assert details["bn_recalibration"] == {"batches": 4, "layers": 9, "times": 1}


@pytest.mark.parametrize("flags,match", [(["--warmup-steps", "-1"], "--warmup-steps: must be an integer >= 0, got -1"),
                                         (["--clip-grad", "-2"], "--clip-grad: must be a number >= 0, got -2")])
def test_bad_flags_exit_2(cli, tmp_path, folder, flags, match):
    p = cli("train", "--model", "lenet5", "--data", f"imagefolder:{folder}", *flags, "--out", tmp_path / "x",
            check_rc=2)
    assert match in p.stderr


def test_an_image_size_a_zoo_model_cannot_take_says_which_it_takes(cli, tmp_path):
    small = write_image_folder(tmp_path / "small", classes=2, per_class=4, size=(12, 12))
    p = cli("train", "--model", "lenet5", "--data", f"imagefolder:{small}", "--out", tmp_path / "x", check_rc=2)
    assert "lenet5 takes inputs of at least 16x16 pixels, got 12x12" in p.stderr and "Traceback" not in p.stderr
