"""torchvision detectors and segmenters by name: built without weights, wrapped to tinydet's and
tinyseg's interface (0-based labels, 1-channel input, detection_loss, "out" logits)."""
import pytest
import torch

from edgeslim import models
from edgeslim.core.errors import DataError, UsageError

DETECTORS = ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"]
SEGMENTERS = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"]


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_eval_gives_the_first_images_boxes_scores_labels(name):
    torch.manual_seed(0)
    m = models.create(f"torchvision:{name}", num_classes=10, in_channels=1).eval()
    assert m.task == "detection" and models.task_of(m) == "detection" and m.num_classes == 10
    with torch.no_grad():
        boxes, scores, labels = m(torch.randn(1, 1, 64, 64))
    n = len(scores)
    assert boxes.shape == (n, 4) and labels.shape == (n,) and labels.dtype == torch.int64
    assert n == 0 or (0 <= int(labels.min()) and int(labels.max()) < 10)  # the background is not a label
    assert n == 0 or (float(boxes.min()) >= 0 and float(boxes.max()) <= 64)  # input pixels, not 320-px ones


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_gives_out_logits_at_the_input_resolution(name):
    m = models.create(f"torchvision:{name}", num_classes=11, in_channels=1).eval()
    assert m.task == "segmentation"
    with torch.no_grad():
        assert m(torch.randn(1, 1, 64, 64)).shape == (1, 11, 64, 64)


def test_detector_trains_through_detection_loss_with_labels_shifted_past_the_background(batch):
    torch.manual_seed(0)
    m = models.create("torchvision:ssdlite320_mobilenet_v3_large", num_classes=10, in_channels=1).train()
    x, targets, _ = batch(n=2)
    seen = []
    m.model.register_forward_pre_hook(lambda mod, args: seen.append([t["labels"] for t in args[1]]))
    loss = m.detection_loss(m(x), targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert [s.tolist() for s in seen[0]] == [(t["labels"] + 1).tolist() for t in targets]
    with pytest.raises(DataError, match=r"outside 0\.\.9: 10"):
        m.detection_loss(m(x), [{**targets[0], "labels": torch.full_like(targets[0]["labels"], 10)}, targets[1]])
    with pytest.raises(UsageError, match="needs the model in training mode"):
        m.eval().detection_loss(x, targets)


def test_weights_are_never_fetched_and_arguments_reach_the_builder(monkeypatch):
    import torchvision

    calls = []
    real = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, **kw: calls.append(kw) or real(name, **kw))
    m = models.create("torchvision:lraspp_mobilenet_v3_large", num_classes=3)
    assert calls[-1]["weights"] is None and calls[-1]["weights_backbone"] is None
    assert m.model.classifier.high_classifier.out_channels == 3
    m = models.create("torchvision:ssdlite320_mobilenet_v3_large", num_classes=4, detections_per_img=7)
    assert calls[-1]["num_classes"] == 5 and calls[-1]["weights_backbone"] is None  # + the background
    assert m.model.detections_per_img == 7
    assert calls[-1]["image_mean"] == [0.0, 0.0, 0.0] and calls[-1]["image_std"] == [1.0, 1.0, 1.0]


def test_bad_torchvision_specs_are_one_line():
    with pytest.raises(UsageError, match="unknown torchvision model 'ssdlite_mobilenet'") as e:
        models.create("torchvision:ssdlite_mobilenet")
    assert "ssdlite320_mobilenet_v3_large" in e.value.hint
    with pytest.raises(UsageError, match="takes 1 or 3 input channels, not 2"):
        models.create("torchvision:lraspp_mobilenet_v3_large", in_channels=2)
    with pytest.raises(UsageError, match="torchvision cannot build lraspp_mobilenet_v3_large with {'aux_loss': True}: "
                                         "This model does not use auxiliary loss"):
        models.create("torchvision:lraspp_mobilenet_v3_large", aux_loss=True)
    m = models.create("torchvision:lraspp_mobilenet_v3_large", num_classes=2, in_channels=1)
    with pytest.raises(UsageError, match=r"takes \(N, 1, H, W\) images, got \(1, 3, 32, 32\)"):
        m(torch.randn(1, 3, 32, 32))
