"""The one writer of an out DIR: its layout, the checkpoint rule, side-by-side figures, all-at-once DIRs."""
import dataclasses
import json
import types

import pytest
import torch

import edgeslim
from edgeslim import models
from edgeslim import metrics as es_metrics, runtimes as es_runtimes
from edgeslim.core.errors import UsageError
from edgeslim.core.report import Report
from edgeslim.output import Compressed, OutputOptions, single_step, staged, write_result
from edgeslim.output.writer import NO_SPEC_NOTE, QUANTIZED_NOTE
from edgeslim.pruning import ChannelPrune
from edgeslim.quantization import PTQ
from edgeslim.testing.metrics import true_class_score
from edgeslim.testing.models import TinyConvNet, toy_loader

SPEC = "edgeslim.testing.models:TinyConvNet"
SHAPE = (1, 8, 8)
FAST = dict(threads=1, runs=3, warmup=1)


def _data():
    loader = toy_loader(n=32, batch_size=16)
    meta = types.SimpleNamespace(name="toy", labelled=True, classes=["a", "b", "c", "d"], num_classes=4,
                                 input_shape=SHAPE)
    return types.SimpleNamespace(train=loader, val=None, test=loader, meta=meta)


def _pruned():
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    cfg = ChannelPrune(ratio=0.5)
    return model, cfg, edgeslim.prune(model, cfg, input_shape=SHAPE, progress=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    model, cfg, small = _pruned()
    out = tmp_path_factory.mktemp("w") / "out"
    with staged(out) as (final, stage):
        assert final == out and stage != out and not out.exists()
        report = write_result(stage, model, single_step(small, cfg), OutputOptions(command="prune", spec=SPEC, **FAST),
                              data=_data(), input_shape=(2, *SHAPE), extra_details={"mine": 1})
    return model, small, report, out


def test_layout_and_checkpoint_round_trip(written):
    _, small, report, out = written
    for name in ("report.json", "report.md", "model.onnx", "checkpoint/edgeslim.json", "checkpoint/model.safetensors"):
        assert (out / name).is_file(), name
    assert not (out / "baseline.onnx").exists()  # measured in a temporary directory unless kept
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["command"] == "prune" and on_disk["model"] == SPEC and on_disk["data"] == "toy"
    assert on_disk["result"]["size_bytes"] == (out / "model.onnx").stat().st_size
    loaded, side = models.load(out, spec=SPEC)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded(x), small(x), atol=1e-5)
    assert sum(p.numel() for p in loaded.parameters()) == report.result["params"]
    assert side["metrics"]["test_top1"] == report.result["accuracy"]
    assert side["classes"] == ["a", "b", "c", "d"] and side["extra"]["command"] == "prune"


def test_details_hold_the_writers_and_the_callers_fields(written):
    _, _, report, _ = written
    d = report.details
    assert d["mine"] == 1 and d["split"] == "test" and d["accuracy_split"] == "test" and d["quantized"] is False
    assert d["steps"] == [{"step": 1, "type": "channel_prune"}]
    assert d["export"]["max_abs_diff"] < 1e-4
    assert isinstance(d["torch_accuracy"], float)
    assert abs(d["torch_accuracy"] - report.result["accuracy"]) < 1e-6  # fp32: ONNX Runtime agrees with torch
    conv2 = next(r for r in d["layers"] if r["layer"] == "conv2")
    assert conv2["out"] == 16 and conv2["out_after"] < 16
    assert not any("checkpoint" in n for n in d["notes"])


def test_baseline_and_result_are_measured_alike(written):
    _, _, report, _ = written
    b, r = report.baseline, report.result
    assert b["threads"] == r["threads"] == 1
    assert b["batch"] == r["batch"] == 2 and b["input_shape"] == r["input_shape"] == [2, *SHAPE]
    assert b["runtime"] == r["runtime"] and r["runtime"].startswith("onnxruntime")
    assert b["latency_ms"] > 0 and r["latency_ms"] > 0
    assert b["artifact"] == "baseline.onnx" and r["artifact"] == "model.onnx"
    assert r["params"] < b["params"] and r["macs"] < b["macs"]


def test_quantized_result_writes_no_checkpoint_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    data = _data()
    cfg = PTQ(bits=8, calib_batches=1)
    q = edgeslim.quantize(model, cfg, data=data, progress=False)
    res = Compressed(q, model, True, [cfg], [{"step": 1, "type": "ptq"}])
    report = write_result(tmp_path, model, res, OutputOptions(command="quantize", spec=SPEC, **FAST), data=data,
                          input_shape=SHAPE)
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "report.json").is_file()
    assert not (tmp_path / "checkpoint").exists()
    assert QUANTIZED_NOTE.format(artifact="model.onnx") in report.details["notes"]
    d = report.details
    assert d["deployed_accuracy"] == report.result["accuracy"] and d["simulated_accuracy"] == d["torch_accuracy"]
    assert report.result["size_bytes"] < report.baseline["size_bytes"]  # the int8 file


def test_no_spec_no_checkpoint_and_a_note(tmp_path):
    model, cfg, small = _pruned()
    report = write_result(tmp_path, model, single_step(small, cfg), OutputOptions(command="prune", keep_baseline=True,
                                                                                  **FAST),
                          data=None, input_shape=SHAPE)
    assert not (tmp_path / "checkpoint").exists() and NO_SPEC_NOTE in report.details["notes"]
    assert (tmp_path / "baseline.onnx").is_file()  # kept where asked (the CLI layout)
    assert report.result["accuracy"] is None and "torch_accuracy" not in report.details
    assert report.model == "TinyConvNet"


def test_failure_inside_the_staged_block_leaves_the_earlier_dir(written, tmp_path):
    model, small, _, _ = written
    out = tmp_path / "keep"
    with staged(out) as (_, stage):
        (stage / "report.json").write_text('{"first": true}')
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError, match="boom"):
        with staged(out) as (_, stage):
            write_result(stage, model, single_step(small, ChannelPrune(ratio=0.5)),
                         OutputOptions(command="prune", **FAST), data=None, input_shape=SHAPE)
            assert (stage / "report.json").is_file()  # a complete new result, staged
            raise RuntimeError("boom")
    assert (out / "report.json").read_text() == '{"first": true}'
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(UsageError, match="extra output"):
        with staged(out) as (_, stage):
            write_result(stage, model, single_step(small, ChannelPrune(ratio=0.5)),
                         OutputOptions(command="prune", **FAST), data=None, input_shape=SHAPE,
                         extras={"report.json": b"clobber"})  # refused inside the writer
    assert (out / "report.json").read_text() == '{"first": true}'
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]  # no staging directory left beside it


def test_staged_without_out_is_a_temporary_directory():
    with staged(None) as (final, stage):
        assert final is None and stage.is_dir()
        (stage / "x").write_text("x")
    assert not stage.exists()


def test_staged_refuses_an_input(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    with pytest.raises(UsageError, match="input"):
        with staged(src, [str(src)]):
            pass


def test_extras_and_a_given_artifact(written, tmp_path):
    model, small, _, out = written
    side = tmp_path / "side.txt"
    side.write_text("side")
    dst = tmp_path / "d"
    report = write_result(dst, model, single_step(small, ChannelPrune(ratio=0.5)), OutputOptions(command="x", **FAST),
                          data=None, input_shape=SHAPE, artifact=out / "model.onnx",
                          extras={"model.esz": b"\x00esz", "plots/side.txt": side})
    assert (dst / "model.esz").read_bytes() == b"\x00esz" and (dst / "plots/side.txt").read_text() == "side"
    assert (dst / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert "export" not in report.details  # copied, not exported here
    for bad in ("../x", "checkpoint/x", "/abs"):
        with pytest.raises(UsageError, match="extra output"):
            write_result(tmp_path / "e", model, single_step(small, ChannelPrune(ratio=0.5)),
                         OutputOptions(command="x", **FAST), data=None, input_shape=SHAPE,
                         artifact=out / "model.onnx", extras={bad: b""})


def test_finish_and_checkpoint_hooks(written, tmp_path):
    model, small, _, _ = written
    seen = []

    def ckpt(path):
        seen.append(path)
        return ["custom checkpoint"]

    def finish(report):
        report.details["finished"] = True

    report = write_result(tmp_path, model, single_step(small, ChannelPrune(ratio=0.5)),
                          OutputOptions(command="x", spec=SPEC, **FAST), data=None, input_shape=SHAPE,
                          checkpoint=ckpt, finish=finish)
    assert seen == [tmp_path / "checkpoint"] and not (tmp_path / "checkpoint").exists()
    on_disk = json.loads((tmp_path / "report.json").read_text())["details"]
    assert on_disk["finished"] is True and "custom checkpoint" in on_disk["notes"]
    assert report.details["finished"] is True


@pytest.mark.parametrize("kw", [{"command": ""}, {"threads": 0}, {"runs": True}, {"max_batches": 0},
                                {"build": [1]}])
def test_options_validate(kw):
    with pytest.raises(UsageError):
        OutputOptions(**{"command": "x", **kw})


def test_options_are_frozen():
    opts = OutputOptions(command="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.threads = 4


# -- the run's metric ------------------------------------------------------------------------------

NAME = "edgeslim.testing.metrics:true_class_score"


def test_both_artifacts_are_scored_with_the_metric(tmp_path):
    model, cfg, small = _pruned()
    data = _data()
    report = write_result(tmp_path, model, single_step(small, cfg),
                          OutputOptions(command="prune", spec=SPEC, keep_baseline=True, metric=true_class_score, **FAST),
                          data=data, input_shape=SHAPE)
    for key, file in (("result", "model.onnx"), ("baseline", "baseline.onnx")):
        want = true_class_score(es_runtimes.get().load(tmp_path / file, threads=1), data.test).mean()
        assert getattr(report, key)["accuracy"] == pytest.approx(want, rel=1e-12)
        assert report.details["metric"][key] == {"value": getattr(report, key)["accuracy"], "extra": {}}
    assert report.details["metric"]["name"] == NAME and report.metric == NAME
    torch_value = true_class_score(es_metrics.torch_runner(small), data.test).mean()
    assert report.details["torch_accuracy"] == pytest.approx(torch_value, rel=1e-9)
    md = (tmp_path / "report.md").read_text()
    assert f"| {NAME} (points) |" in md and "top-1" not in md
    _, side = models.load(tmp_path, spec=SPEC)
    assert side["metrics"][f"test_{NAME}"] == report.result["accuracy"] and "test_top1" not in side["metrics"]


def test_a_quantized_result_compares_simulation_and_file_in_the_metric(tmp_path):
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    data = _data()
    q = edgeslim.quantize(model, PTQ(bits=8, calib_batches=1), data=data, progress=False)
    res = Compressed(q, model, True, [PTQ(bits=8, calib_batches=1)], [{"step": 1, "type": "ptq"}])
    report = write_result(tmp_path, model, res, OutputOptions(command="quantize", metric="top1", **FAST), data=data,
                          input_shape=SHAPE)
    d = report.details
    assert d["metric"]["name"] == "top1" and d["deployed_accuracy"] == report.result["accuracy"]
    assert d["simulated_accuracy"] == es_metrics.get("top1").evaluate(es_metrics.torch_runner(q), data.test).value
    assert "| accuracy (top-1 %) |" in report.markdown()  # top-1 reads as it always has


def test_a_bad_metric_is_refused_by_the_options():
    with pytest.raises(UsageError, match="no metric named 'recal'"):
        OutputOptions(command="x", metric="recal")


def test_the_report_labels_its_metric():
    r = Report(command="x", baseline={"accuracy": 31.2}, result={"accuracy": 30.85}, details={"metric": {"name": "map"}})
    assert "| map (points) | 31.20 | 30.85 |" in r.table() and "- map drop: 0.35 points" in r.markdown()
    assert Report(command="x").metric == "top1" and "accuracy (top-1 %)" in Report(command="x").table()
