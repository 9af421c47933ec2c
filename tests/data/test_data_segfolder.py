"""segfolder:PATH[:SIZE] on tiny folders of images and PNG class masks written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edgeslim.core.errors import DataError, UsageError
from edgeslim.data import load

W, H = 12, 10


def mask_of(i: int) -> np.ndarray:
    """Left half class 0, right half class 1 + i % 2, the top row ignored (255)."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[:, W // 2:] = 1 + i % 2
    m[0] = 255
    return m


def write_seg(root, n=10, *, mode="L", classes=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        pixels = np.where(mask_of(i) == 0, 20, 200).astype(np.uint8)
        Image.fromarray(pixels).convert(mode).save(root / "images" / f"s{i:02d}.{'jpg' if i == 3 else 'png'}")
        Image.fromarray(mask_of(i)).save(root / "masks" / f"s{i:02d}.png")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_loads_images_and_masks(tmp_path):
    root = write_seg(tmp_path / "ds", classes=["sky", "road", "car"])
    data = load(f"segfolder:{root}", batch_size=4, val_fraction=0.2)
    meta = data.meta
    assert meta.task == "segmentation" and meta.classes == ["sky", "road", "car"] and meta.num_classes == 3
    assert meta.input_shape == (1, H, W)
    assert [len(s.dataset) for s in (data.train, data.val, data.test)] == [7, 2, 1]
    for loader in (data.train, data.val, data.test):
        for x, masks in loader:
            assert x.dtype == torch.float32 and masks.dtype == torch.int64 and masks.shape[1:] == (H, W)
    split = data.train.dataset
    for i, (image, mask, present) in enumerate(split.samples):
        k = int(image[-6:-4])
        assert torch.equal(split[i][1], torch.from_numpy(mask_of(k).astype(np.int64)))
        assert present == {0, 1 + k % 2}


def test_size_resizes_masks_by_nearest_neighbour_and_names_default_classes(tmp_path):
    root = write_seg(tmp_path / "ds", mode="RGB")
    data = load(f"segfolder:{root}:6", val_fraction=0)
    assert data.meta.input_shape == (3, 6, 6) and data.meta.classes == ["0", "1", "2"]
    _, masks = next(iter(data.train))
    assert masks.shape[1:] == (6, 6) and set(masks.unique().tolist()) <= {0, 1, 2, 255}


def test_train_test_layout(tmp_path):
    write_seg(tmp_path / "ds" / "train", n=6)
    write_seg(tmp_path / "ds" / "test", n=2)
    data = load(f"segfolder:{tmp_path / 'ds'}", val_fraction=0)
    assert len(data.train.dataset) == 6 and len(data.test.dataset) == 2


def _break(root, how):
    if how == "size":
        Image.fromarray(np.zeros((H + 2, W), dtype=np.uint8)).save(root / "masks" / "s04.png")
    elif how == "no-mask":
        (root / "masks" / "s05.png").unlink()
    elif how == "no-image":
        Image.fromarray(mask_of(0)).save(root / "masks" / "orphan.png")
    elif how == "rgb":
        Image.new("RGB", (W, H)).save(root / "masks" / "s02.png")
    elif how == "index":
        m = mask_of(0)
        m[5, 5] = 7
        Image.fromarray(m).save(root / "masks" / "s01.png")
    elif how == "twins":
        Image.new("L", (W, H)).save(root / "images" / "s01.jpg")
    elif how == "one-class":
        for i in range(10):
            Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(root / "masks" / f"s{i:02d}.png")
    elif how == "no-masks-dir":
        for p in (root / "masks").iterdir():
            p.unlink()
        (root / "masks").rmdir()


@pytest.mark.parametrize("how, message", [
    ("size", "masks/s04.png is 12x12 but its image s04.png is 12x10"),
    ("no-mask", "images/s05.png has no mask"),
    ("no-image", "masks/orphan.png has no image in"),
    ("rgb", "masks/s02.png is a RGB image; a mask is a single-channel PNG"),
    ("index", "masks/s01.png holds class index 7, but classes.txt names 3 classes"),
    ("twins", "s01.jpg and s01.png in"),
    ("one-class", "has in its training split 1 class (sky): a segmentation model needs at least two"),
    ("no-masks-dir", "has no masks/ folder"),
])
def test_bad_folders_are_one_line_naming_the_file(tmp_path, how, message):
    root = write_seg(tmp_path / "ds", classes=["sky", "road", "car"])
    _break(root, how)
    with pytest.raises(DataError) as e:
        load(f"segfolder:{root}")
    assert message in e.value.message and "\n" not in e.value.message and e.value.hint


def test_bad_classes_file_and_size(tmp_path):
    root = write_seg(tmp_path / "ds")
    (root / "classes.txt").write_text("sky\n\nroad\n")
    with pytest.raises(DataError, match="classes.txt must name one class a line"):
        load(f"segfolder:{root}")
    with pytest.raises(UsageError, match="SIZE must be a positive integer"):
        load(f"segfolder:{root}:0")
    with pytest.raises(DataError, match="is not a folder"):
        load(f"segfolder:{tmp_path / 'nope'}")
