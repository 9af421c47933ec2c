"""Sensitivity curves have one point per (layer, ratio); allocation meets its MACs target."""
from types import SimpleNamespace

import pytest
import torch

from edgeslim.core.errors import UsageError
from edgeslim.pruning.sensitivity import allocate, analyze, plot, table_csv, table_markdown
from edgeslim.pruning.structured import macs_of, prune_once
from edgeslim.pruning.importance import Magnitude
from edgeslim.testing.models import TinyResNet, toy_loader


@pytest.fixture(scope="module")
def curves_and_model():
    loader = toy_loader((1, 8, 8), 4, n=32, batch_size=16)
    data = SimpleNamespace(train=loader, val=loader, test=loader, meta=None)
    model = TinyResNet().eval()
    return analyze(model, data, example_shape=(1, 1, 8, 8), ratios=(0.25, 0.5, 0.75)), model


def test_sensitivity_shape(curves_and_model, tmp_path):
    curves, model = curves_and_model
    assert curves["layers"] == ["block2.conv2", "block2.conv1", "block1.conv1"]  # fc (head) is not scanned
    assert len(curves["rows"]) == 3 * 3
    assert {r["ratio"] for r in curves["rows"]} == {0.25, 0.5, 0.75}
    for r in curves["rows"]:
        assert 0 <= r["accuracy"] <= 100 and 0 < r["macs_kept"] < 1
        assert r["drop"] == pytest.approx(curves["baseline"] - r["accuracy"], abs=1e-2)
    csv = table_csv(curves).strip().splitlines()
    assert csv[0] == "layer,channels,ratio,accuracy,drop,macs_kept" and len(csv) == 10
    assert table_markdown(curves).count("\n| block") == 3
    png = plot(curves, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_allocation_reaches_target(curves_and_model):
    curves, model = curves_and_model
    x = torch.randn(1, 1, 8, 8)
    ratios = allocate(model, curves, 0.5, example=x)
    assert set(ratios) <= set(curves["layers"]) and ratios
    m = TinyResNet()
    m.load_state_dict(model.state_dict())
    prune_once(m, x, ratio=0.0, importance=Magnitude(1), layer_ratios=ratios, clamp=True)
    assert macs_of(m, x) <= 0.5 * macs_of(model, x)
    with pytest.raises(UsageError):
        allocate(model, curves, 1.5, example=x)


def test_sensitive_groups_keep_more_channels():
    """Behaviour, not shape: of two groups with the same MACs, the one whose accuracy falls faster
    keeps more of its channels, and swapping the curves swaps the allocation."""
    model = TinyResNet().eval()
    x = torch.randn(1, 1, 8, 8)
    layers = ["block2.conv1", "block1.conv1"]

    def curves(fragile: str):
        rows = [{"layer": l, "ratio": r, "drop": (40.0 if l == fragile else 1.0) * r, "accuracy": 90.0}
                for l in layers for r in (0.25, 0.5, 0.75)]
        return {"layers": layers, "ratios": [0.25, 0.5, 0.75], "rows": rows, "baseline": 90.0}

    a = allocate(model, curves("block1.conv1"), 0.8, example=x)
    b = allocate(model, curves("block2.conv1"), 0.8, example=x)
    assert a.get("block1.conv1", 0.0) < a["block2.conv1"]  # the fragile group is pruned less
    assert b.get("block2.conv1", 0.0) < b["block1.conv1"]
    assert a.get("block1.conv1", 0.0) == pytest.approx(b.get("block2.conv1", 0.0), abs=0.05)  # symmetric


def test_sensitivity_of_a_segmenter_and_a_detector_is_in_their_metric():
    """The curves' "accuracy" is the task's metric (mIoU, mAP) unless another is given."""
    from edgeslim import models
    from edgeslim.testing.metrics import recall_at_threshold
    from edgeslim.testing.tasks import synthetic_loader

    torch.manual_seed(0)
    seg = models.create("tinyseg", num_classes=11).eval()
    loader = synthetic_loader("segmentation", n=4, batch_size=2)
    data = SimpleNamespace(train=loader, val=loader, test=loader, meta=None)
    c = analyze(seg, data, example_shape=(1, 1, 64, 64), ratios=(0.5,), max_batches=1)
    from edgeslim import metrics

    want = metrics.get("miou").evaluate(metrics.torch_runner(seg), [next(iter(loader))]).value
    assert c["baseline"] == pytest.approx(want) and c["eval_images"] == 2 and c["rows"]
    det_loader = synthetic_loader("detection", n=4, batch_size=2)
    det = models.create("tinydet", num_classes=10, topk=10).eval()
    d = analyze(det, SimpleNamespace(train=det_loader, val=det_loader, test=det_loader, meta=None),
                example_shape=(1, 1, 64, 64), ratios=(0.5,), max_batches=1)
    assert 0.0 <= d["baseline"] <= 100.0 and all("accuracy" in r for r in d["rows"])
    from edgeslim.core.errors import EdgeslimError

    with pytest.raises(EdgeslimError, match="recall_at_threshold raised IndexError"):  # the user's function, named
        analyze(seg, data, example_shape=(1, 1, 64, 64), ratios=(0.5,), max_batches=1, metric=recall_at_threshold)
