"""fashion-mnist-detect and fashion-mnist-seg: canvases made from (fake) Fashion-MNIST files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeslim.core.errors import DataError, UsageError
from edgeslim.data import fashion_mnist, fmnist_tasks, load
from edgeslim.data.canvas import sides
from edgeslim.data.idx import write_idx

N_TRAIN, N_TEST = 300, 80
TRAIN_BRIGHT, TEST_BRIGHT = 220, 90  # every garment pixel of a split has one value, so it can be traced


def fake_garments(n: int, bright: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ellipses of random size, some with a dark hole inside (the silhouette fills it), labels 0..9."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    ry, rx = rng.uniform(4, 13, (2, n, 1, 1))
    inside = ((yy - 13.5) / ry) ** 2 + ((xx - 13.5) / rx) ** 2 <= 1
    hole = (((yy - 13.5) / 2.5) ** 2 + ((xx - 13.5) / 2.5) ** 2 <= 1) & (np.arange(n) % 3 == 0)[:, None, None]
    images = np.where(inside & ~hole, bright, 0).astype(np.uint8)
    return images, (np.arange(n) % 10).astype(np.uint8)


@pytest.fixture
def fake_fmnist(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGESLIM_DATA", raising=False)
    for split, n, bright, seed in (("train", N_TRAIN, TRAIN_BRIGHT, 1), ("test", N_TEST, TEST_BRIGHT, 2)):
        images, labels = fake_garments(n, bright, seed)
        write_idx(tmp_path / "fm" / (fashion_mnist.FILES[split][0] + ".gz"), images)
        write_idx(tmp_path / "fm" / (fashion_mnist.FILES[split][1] + ".gz"), labels)
    return tmp_path / "fm"


def _arrays(folder):
    return fashion_mnist.load_arrays(fashion_mnist.find(folder, download=False))


def _made(folder, seed=0, val_fraction=0.2, n_train=60, n_test=20, size=64):
    return fmnist_tasks.canvases(_arrays(folder), size=size, n_train=n_train, n_test=n_test,
                                 val_fraction=val_fraction, seed=seed)


def test_same_seed_same_canvases_other_seed_other_training_canvases(fake_fmnist):
    a, b, c = _made(fake_fmnist, 0), _made(fake_fmnist, 0), _made(fake_fmnist, 1)
    for split in ("train", "val", "test"):
        for field in ("images", "masks", "boxes", "labels", "sources", "offsets"):
            assert np.array_equal(getattr(a[split], field), getattr(b[split], field))
    assert not np.array_equal(a["train"].images, c["train"].images)
    assert np.array_equal(a["test"].images, c["test"].images)  # the test canvases stay put across seeds


def test_splits_never_share_a_source_garment(fake_fmnist):
    made = _made(fake_fmnist, n_train=100)
    train, val, test = (made[s] for s in ("train", "val", "test"))
    assert len(train.images) == 80 and len(val.images) == 20 and len(test.images) == 20
    assert not set(train.sources.tolist()) & set(val.sources.tolist())  # both index the training images
    assert len(set(train.sources.tolist())) == len(train.sources)  # each garment used once while they last
    assert set(np.unique(train.images)) <= set(range(TRAIN_BRIGHT + 1)) and train.images.max() == TRAIN_BRIGHT
    assert test.images.max() == TEST_BRIGHT  # test canvases hold test garments only
    assert test.sources.max() < N_TEST


def test_boxes_lie_inside_the_canvas_and_masks_agree_with_them(fake_fmnist):
    size = 64
    c = _made(fake_fmnist, n_train=80, size=size)["train"]
    lo, hi = sides(size)
    assert (lo, hi) == (14, 35)
    counts = np.diff(c.offsets)
    assert counts.min() >= 1 and counts.max() <= 4 and len(c.boxes) == counts.sum() == len(c.labels)
    x0, y0, x1, y1 = c.boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= size).all() and (y1 <= size).all()
    assert (x1 > x0).all() and (y1 > y0).all() and (x1 - x0).max() <= hi and (y1 - y0).max() <= hi
    yy, xx = np.mgrid[:size, :size]
    for i in range(len(c.images)):
        boxes, labels = c.boxes[c.offsets[i]:c.offsets[i + 1]], c.labels[c.offsets[i]:c.offsets[i + 1]]
        covered = np.zeros((size, size), dtype=bool)
        for (bx0, by0, bx1, by1), label in zip(boxes.astype(int), labels):
            inside = (xx >= bx0) & (xx < bx1) & (yy >= by0) & (yy < by1)
            assert (c.masks[i][inside] == label + 1).any()  # every garment stays visible
            covered |= inside & (c.masks[i] == label + 1)
        assert np.array_equal(covered, c.masks[i] > 0)  # every garment pixel lies in a box of its class
        assert np.array_equal(c.images[i] > 0, c.masks[i] > 0) or (c.images[i][c.masks[i] == 0] == 0).all()


def test_detection_loader_batches_and_meta(fake_fmnist):
    data = load("fashion-mnist-detect:64:40:10", data_dir=fake_fmnist, batch_size=8, val_fraction=0.25)
    meta = data.meta
    assert meta.task == "detection" and meta.name == "fashion-mnist-detect:64:40:10"
    assert meta.classes == fashion_mnist.CLASSES and meta.num_classes == 10 and meta.input_shape == (1, 64, 64)
    assert (len(data.train.dataset), len(data.val.dataset), len(data.test.dataset)) == (30, 10, 10)
    x, targets = next(iter(data.train))
    assert x.dtype == torch.float32 and x.shape == (8, 1, 64, 64) and isinstance(targets, list) and len(targets) == 8
    for t in targets:
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert t["labels"].dtype == torch.int64 and t["labels"].shape == (len(t["boxes"]),)
        assert 0 <= t["labels"].min() and t["labels"].max() <= 9
    xs = torch.cat([x for x, _ in data.train])
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.1  # normalised with the canvases' stats
    again = load("fashion-mnist-detect:64:40:10", data_dir=fake_fmnist, batch_size=8, val_fraction=0.25)
    assert torch.equal(next(iter(again.train))[0], x)  # deterministic, shuffle included


def test_segmentation_loader_shares_the_canvases(fake_fmnist):
    seg = load("fashion-mnist-seg:48:30:10", data_dir=fake_fmnist, val_fraction=0, batch_size=30)
    det = load("fashion-mnist-detect:48:30:10", data_dir=fake_fmnist, val_fraction=0, batch_size=30)
    assert seg.meta.task == "segmentation" and seg.meta.classes == ["background", *fashion_mnist.CLASSES]
    assert seg.meta.num_classes == 11 and seg.val is None and seg.meta.input_shape == (1, 48, 48)
    (xs, masks), (xd, targets) = next(iter(seg.test)), next(iter(det.test))
    assert torch.equal(xs, xd)
    assert masks.dtype == torch.int64 and masks.shape == (10, 48, 48) and 0 <= masks.min() and masks.max() <= 10
    for mask, t in zip(masks, targets):
        assert set(mask.unique().tolist()) - {0} <= {c + 1 for c in t["labels"].tolist()}


@pytest.mark.parametrize("spec, message", [
    ("fashion-mnist-detect:x", "need up to three integers"),
    ("fashion-mnist-seg:64:10:5:1", "need up to three integers"),
    ("fashion-mnist-detect:16", "SIZE must be 32..256"),
    ("fashion-mnist-detect:64:1", "N_TRAIN at least 2"),
    ("fashion-mnist-seg:64:10:0", "N_TEST at least 1"),
    ("fashion-mnist-detect:256:20000:20000", "would hold 4.9 GiB of canvases (limit 2 GiB)"),
])
def test_bad_specs(spec, message):
    with pytest.raises(UsageError) as e:
        load(spec)
    assert message in e.value.message and e.value.hint
    assert "GiB" in message or "[:SIZE[:N_TRAIN[:N_TEST]]]" in e.value.hint


def test_too_few_canvases_for_a_validation_split(fake_fmnist):
    with pytest.raises(DataError, match="cannot make 90% of 2 canvases a separate split"):
        load("fashion-mnist-detect:32:2:1", data_dir=fake_fmnist, val_fraction=0.9)
    data = load("fashion-mnist-detect:32:2:1", data_dir=fake_fmnist, val_fraction=0.5)
    assert len(data.train.dataset) == len(data.val.dataset) == len(data.test.dataset) == 1


def test_the_forms_are_listed_for_an_unknown_name():
    with pytest.raises(UsageError) as e:
        load("fashion-mnist-pose")
    for form in ("fashion-mnist-detect[:SIZE[:N_TRAIN[:N_TEST]]]", "fashion-mnist-seg", "coco:PATH[:SIZE]",
                 "segfolder:PATH[:SIZE]"):
        assert form in e.value.hint


@pytest.mark.skipif(not fashion_mnist.DEBIAN_DIR.is_dir(), reason="the Debian Fashion-MNIST package is not installed")
def test_real_fashion_mnist_canvases():
    made = fmnist_tasks.canvases(fashion_mnist.load_arrays(fashion_mnist.find(download=False)), size=64,
                                 n_train=200, n_test=50, val_fraction=0.1, seed=0)
    c = made["train"]
    widths = c.boxes[:, 2] - c.boxes[:, 0]
    assert len(c.images) == 180 and widths.max() <= 35 and (c.boxes[:, 3] - c.boxes[:, 1]).min() >= 2
    assert 1.5 < np.diff(c.offsets).mean() < 3.5 and len(np.unique(c.labels)) == 10


def test_the_labels_are_what_map_and_miou_score(fake_fmnist):
    """The truth given back as predictions scores 100: the data's conventions are the metrics'."""
    pytest.importorskip("torchmetrics")
    from edgeslim import metrics

    det = load("fashion-mnist-detect:32:20:6", data_dir=fake_fmnist, val_fraction=0, batch_size=4)
    truth = [t for _, targets in det.test for t in targets]
    answers = iter((t["boxes"].numpy(), np.ones(len(t["labels"]), np.float32), t["labels"].numpy()) for t in truth)
    assert metrics.get("map").evaluate(lambda x: next(answers), det.test).value == pytest.approx(100.0)
    seg = load("fashion-mnist-seg:32:20:6", data_dir=fake_fmnist, val_fraction=0, batch_size=4)
    masks = iter([m.numpy() for _, m in seg.test])
    assert metrics.get("miou").evaluate(lambda x: next(masks), seg.test).value == pytest.approx(100.0)
