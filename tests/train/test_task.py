"""The task seam: fit and evaluate train and score detectors and segmenters as they do classifiers."""
import json

import pytest
import torch
import torch.nn.functional as F

from edgeslim import models
from edgeslim.core.errors import DataError, UsageError
from edgeslim.testing import fashion_mnist_available
from edgeslim.testing.models import TinyConvNet, toy_loader
from edgeslim.train import evaluate, fit, fit_stats, loss_for, resolve_task
from edgeslim.train.task import loss_mode, segmentation_loss, to_device


def _weights(model):
    return [t.detach().clone() for t in model.state_dict().values()]


@pytest.mark.parametrize("name,task,metric", [("tinydet", "detection", "map"), ("tinyseg", "segmentation", "miou")])
def test_fit_lowers_the_task_loss(name, task, metric, loader):
    data = loader(task, n=8, batch_size=4, size=32)
    torch.manual_seed(0)
    model = models.create(name, input_size=32)
    before = evaluate(model, data)
    assert set(before) == {"loss", metric, "n"} and before["n"] == 8
    fit(model, data, epochs=12, lr=0.02, optimizer="adam", progress=False)
    after = evaluate(model, data)
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after[metric] is not None and after[metric] >= 0
    assert fit_stats(model).steps == 24 and not model.training


def test_detection_evaluation_leaves_the_model_and_its_statistics_alone(loader):
    model = models.create("tinydet")
    fit(model, loader("detection"), epochs=1, progress=False)
    state = _weights(model)
    model.train()
    evaluate(model, loader("detection", seed=1))
    assert all(torch.equal(a, b) for a, b in zip(state, _weights(model))) and model.training
    with loss_mode(model.eval()):
        assert model.training and not model.stem[1].training  # forward of training, BatchNorm of eval
    assert not model.training and not model.stem[1].training


def test_a_torchvision_detector_trains_in_the_same_loop(loader):
    torch.manual_seed(0)
    model = models.create("torchvision:ssdlite320_mobilenet_v3_large", num_classes=10, in_channels=1)
    before = _weights(model)
    fit(model, loader("detection", n=4, batch_size=2), epochs=1, lr=0.01, progress=False, bn_recalibration="off")
    assert fit_stats(model).steps == 2 and not all(torch.equal(a, b) for a, b in zip(before, _weights(model)))
    with torch.no_grad():
        boxes, scores, labels = model(torch.zeros(1, 1, 64, 64))
    assert boxes.shape[1] == 4 and len(scores) == len(labels)


def test_the_task_comes_from_the_caller_the_data_or_the_model():
    class Meta:
        task = "segmentation"

    class Bundle:
        meta = Meta()

    assert resolve_task(TinyConvNet()) == "classification"
    assert resolve_task(models.create("tinydet")) == "detection"
    assert resolve_task(TinyConvNet(), Bundle()) == "segmentation"  # a model that declares nothing
    assert resolve_task(TinyConvNet(), task="detection") == "detection"
    with pytest.raises(UsageError, match="TinyDet is a detection model; the data is for segmentation"):
        resolve_task(models.create("tinydet"), Bundle())
    with pytest.raises(UsageError, match="asked to train for detection, but the data is for segmentation"):
        resolve_task(TinyConvNet(), Bundle(), task="detection")
    with pytest.raises(UsageError, match="'ranking', not one of classification, detection, segmentation"):
        resolve_task(TinyConvNet(), task="ranking")


def test_losses_by_task():
    assert loss_for(TinyConvNet(), "classification") is F.cross_entropy  # what fit always trained with
    det = models.create("tinydet")
    assert loss_for(det, "detection") == det.detection_loss
    assert loss_for(models.create("tinyseg"), "segmentation") is segmentation_loss
    with pytest.raises(UsageError, match="TinyConvNet has no detection_loss"):
        fit(TinyConvNet(), toy_loader(n=8), task="detection", progress=False)
    with pytest.raises(UsageError, match="TinyDet is a detection model; the data is for classification"):
        fit(det, toy_loader(n=8), task="classification", progress=False)


def test_segmentation_loss_ignores_255_and_names_bad_masks():
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    ignored = masks.clone()
    ignored[0] = 255
    assert segmentation_loss(logits, ignored) == pytest.approx(F.cross_entropy(logits[1:], masks[1:]).item())
    with pytest.raises(DataError, match=r"masks must be integers of shape \(2, 4, 4\) .* got torch.int64 \(2, 8, 8\)"):
        segmentation_loss(logits, torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(DataError, match=r"holds class 3, outside 0\.\.2"):
        segmentation_loss(logits, torch.full((2, 4, 4), 3))
    with pytest.raises(DataError, match=r"must output \(N, K, H, W\) logits, got \(2, 3\)"):
        segmentation_loss(torch.randn(2, 3), masks)


def test_targets_travel_with_their_structure():
    y = [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)}]
    moved = to_device(y, torch.device("cpu"))
    assert isinstance(moved, list) and set(moved[0]) == {"boxes", "labels"}
    assert torch.equal(moved[0]["boxes"], y[0]["boxes"])
    assert to_device((torch.ones(2),), torch.device("cpu"))[0].tolist() == [1.0, 1.0]


# -- the command -------------------------------------------------------------------------------------
@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed")
@pytest.mark.parametrize("model,data,metric", [("tinydet", "fashion-mnist-detect:64:48:16", "map"),
                                               ("tinyseg", "fashion-mnist-seg:64:48:16", "miou")])
def test_train_command_trains_a_detector_and_a_segmenter(cli, tmp_path, model, data, metric):
    p = cli("train", "--model", model, "--data", data, "--epochs", "1", "--batch-size", "16", "--out",
            tmp_path / "run", "--json", check_rc=0)
    out = json.loads(p.stdout)
    assert out["metric"] == metric and out[f"test_{metric}"] is not None and out["test_loss"] > 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["details"]["task"] == out["task"] and report["result"]["accuracy"] == out[f"test_{metric}"]
    m, meta = models.load(tmp_path / "run" / "checkpoint")
    assert meta["spec"] == model and meta["metrics"]["task"] == out["task"] and models.task_of(m) == out["task"]


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST is not installed")
def test_train_command_refuses_a_model_of_another_task(cli, tmp_path):
    p = cli("train", "--model", "tinydet", "--data", "fashion-mnist-seg:64:8:4", "--out", tmp_path / "x", check_rc=2)
    assert "TinyDet is a detection model; the data is for segmentation" in p.stderr and "Traceback" not in p.stderr
    p = cli("train", "--model", "resnet20", "--data", "fashion-mnist-detect:64:8:4", "--out", tmp_path / "x",
            check_rc=2)
    assert "has no detection_loss" in p.stderr and "Traceback" not in p.stderr
