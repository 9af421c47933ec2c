"""Figures in the run's metric: profile and compare score the deployed artifact with it, `edgeslim profile
--metric` names it, and a metric that needs every output gets every output of the artifact."""
import json

import numpy as np
import pytest
import torch

from edgeslim import metrics, runtimes
from edgeslim.measure import compare, profile
from edgeslim.measure.compare import compare_scored
from edgeslim.measure.profile import artifact_accuracy, artifact_score
from edgeslim.runtimes import export_onnx
from edgeslim.testing.metrics import recall_at_threshold, true_class_score
from edgeslim.testing.models import TinyConvNet, TinyMLP, toy_loader


def test_artifact_score_is_the_metric_run_on_the_file(tmp_path):
    m = TinyConvNet().eval()
    export_onnx(m, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    loader = toy_loader()
    s = artifact_score(tmp_path / "m.onnx", loader, metric=true_class_score)
    assert s.per_sample.dtype == np.float64 and s.value == pytest.approx(s.per_sample.mean())
    assert s.value == pytest.approx(true_class_score(metrics.torch_runner(m), loader).mean(), abs=1e-3)
    assert artifact_accuracy(tmp_path / "m.onnx", loader, metric=recall_at_threshold) == \
        recall_at_threshold(runtimes.get().load(tmp_path / "m.onnx"), loader)
    assert artifact_score(tmp_path / "m.onnx", loader).per_sample.dtype == bool  # top-1 hits by default


def test_profile_reports_the_metric_and_its_name(tmp_path):
    m = TinyMLP().eval()
    loader = toy_loader()
    fig = profile(m, (1, 8, 8), threads=1, warmup=1, runs=3, loader=loader, metric=recall_at_threshold,
                  onnx_path=tmp_path / "m.onnx")
    assert fig["metric"] == {"name": "edgeslim.testing.metrics:recall_at_threshold", "extra": {}}
    assert fig["accuracy"] == recall_at_threshold(runtimes.get().load(tmp_path / "m.onnx"), loader)
    torch_fig = profile(m, (1, 8, 8), runtime="torch", threads=1, warmup=1, runs=3, loader=loader, metric="top1")
    assert torch_fig["metric"]["name"] == "top1"
    assert torch_fig["accuracy"] == metrics.get().evaluate(metrics.torch_runner(m), loader).value


def test_compare_scores_both_artifacts_with_the_metric(tmp_path):
    base, small = TinyConvNet(width=16).eval(), TinyConvNet(width=8).eval()
    loader = toy_loader()
    b, r, scores = compare_scored(base, small, (1, 8, 8), workdir=tmp_path, loader=loader, threads=1, warmup=1,
                                  runs=3, metric=true_class_score)
    for fig, file, key in ((b, "baseline.onnx", "baseline"), (r, "model.onnx", "result")):
        want = true_class_score(runtimes.get().load(tmp_path / file), loader)
        assert fig["accuracy"] == pytest.approx(want.mean()) and np.allclose(scores[key].per_sample, want)
    b2, r2 = compare(tmp_path / "baseline.onnx", tmp_path / "model.onnx", (1, 8, 8), workdir=tmp_path / "w",
                     loader=loader, threads=1, warmup=1, runs=3, metric=true_class_score)
    assert (b2["accuracy"], r2["accuracy"]) == pytest.approx((b["accuracy"], r["accuracy"]))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_metric_of_every_output_scores_the_artifacts_outputs(tmp_path, runtime):
    """map on a detector's file: the runner's ``outputs`` give boxes, scores and labels, and the figure is
    the PyTorch model's (same detections up to float rounding)."""
    from edgeslim import models
    from edgeslim.measure.profile import torch_score
    from edgeslim.testing.tasks import synthetic_loader

    pytest.importorskip(runtime)
    torch.manual_seed(0)
    det = models.create("tinydet", num_classes=10, topk=20).eval()
    rt = runtimes.get(runtime)
    path = tmp_path / f"det{rt.suffix}"
    rt.export(det, path, torch.zeros(1, 1, 64, 64))
    loader = synthetic_loader("detection", n=6, batch_size=3)
    x = next(iter(loader))[0][:1].numpy()
    outs = rt.load(path, threads=1).outputs(x)
    with torch.no_grad():
        want = det(torch.from_numpy(x))
    assert [o.shape for o in outs] == [tuple(w.shape) for w in want]
    assert np.allclose(outs[0], want[0].numpy(), atol=1e-3) and np.array_equal(outs[2], want[2].numpy())
    s, ref = artifact_score(path, loader, metric="map", threads=1), torch_score(det, loader, metric="map")
    assert s.value is not None and s.count == 6
    assert s.value == pytest.approx(ref.value, abs=1e-6) and s.extra == pytest.approx(ref.extra, abs=1e-6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from edgeslim.testing.data import write_image_folder

    root = write_image_folder(tmp_path_factory.mktemp("imgs") / "f", classes=4, per_class=6, size=(8, 8), mode="L")
    return f"imagefolder:{root}"


def test_cli_profile_takes_a_function_and_names_it(folder, capsys):
    from edgeslim.cli import main

    args = ["profile", "edgeslim.testing.models:TinyConvNet", "--data", folder, "--runs", "3", "--warmup", "1"]
    assert main(args + ["--metric", "edgeslim.testing.metrics:recall_at_threshold", "--json"]) == 0
    fig = json.loads(capsys.readouterr().out)
    assert fig["metric"]["name"] == "edgeslim.testing.metrics:recall_at_threshold" and fig["accuracy"] is not None
    assert main(args + ["--metric", "edgeslim.testing.metrics:recall_at_threshold"]) == 0
    assert f"edgeslim.testing.metrics:recall_at_threshold: {fig['accuracy']:.2f} (test split)" in capsys.readouterr().out
    assert main(args) == 0
    assert "% top-1 (test split)" in capsys.readouterr().out  # the default reads as it always has


def test_cli_profile_refuses_a_metric_of_another_task(folder, capsys):
    from edgeslim.cli import main

    rc = main(["profile", "edgeslim.testing.models:TinyConvNet", "--data", folder, "--metric", "miou"])
    err = capsys.readouterr().err
    assert rc == 2 and "metric miou scores segmentation, but" in err and "classification data" in err
