"""imagefolder:PATH[:SIZE] on tiny folders of PNGs written here."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from edgeslim.core.errors import DataError, UsageError
from edgeslim.data import load

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def write_folder(root, per_class=10, size=(8, 6), mode="RGB", classes=COLOURS):
    """PNGs whose colour encodes the class and whose top-left pixel encodes the image number."""
    for name, colour in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
            pixels[...] = colour
            pixels[0, 0] = (i, i, i)
            image = Image.fromarray(pixels)
            (image.convert("L") if mode == "L" else image).save(root / name / f"{i:03d}.png")
    return root


def everything(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def denormalise(x, meta):
    mean = torch.tensor(meta.mean).view(-1, 1, 1)
    std = torch.tensor(meta.std).view(-1, 1, 1)
    return ((x * std + mean) * 255).round()


def test_flat_folder(tmp_path):
    write_folder(tmp_path / "imgs")
    data = load(f"imagefolder:{tmp_path / 'imgs'}", batch_size=4)
    meta = data.meta
    assert meta.classes == ["cat", "dog", "emu"] and meta.num_classes == 3 and meta.labelled
    assert meta.input_shape == (3, 6, 8) and len(meta.mean) == len(meta.std) == 3
    assert (len(data.train.dataset), len(data.val.dataset), len(data.test.dataset)) == (24, 3, 3)
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 6, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    for loader in (data.train, data.val, data.test):  # labels agree with the colours, pixels survive
        xs, ys = everything(loader)
        centre = denormalise(xs, meta)[:, :, 3, 4]
        expected = torch.tensor([COLOURS[meta.classes[c]] for c in ys.tolist()], dtype=centre.dtype)
        assert torch.allclose(centre, expected, atol=1)
    xs, _ = everything(data.train)
    assert abs(xs.mean().item()) < 0.1  # normalised with the folder's own statistics


def test_splits_are_disjoint_and_seeded(tmp_path):
    root = write_folder(tmp_path / "imgs")

    def files(seed, val_fraction=0.2):
        data = load(f"imagefolder:{root}", seed=seed, val_fraction=val_fraction)
        parts = [{p for p, _ in split.dataset.samples} for split in (data.train, data.val, data.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(parts[0] | parts[1] | parts[2]) == 30
        return parts

    a, b, c = files(0), files(0), files(1)
    assert a == b
    assert a[1] != c[1] and a[2] == c[2]  # val follows the seed; the carved test split stays put
    assert load(f"imagefolder:{root}", val_fraction=0).val is None


def test_train_test_layout_and_class_mapping(tmp_path):
    write_folder(tmp_path / "ds" / "train")
    write_folder(tmp_path / "ds" / "test", per_class=2, classes={"emu": COLOURS["emu"]})
    data = load(f"imagefolder:{tmp_path / 'ds'}", val_fraction=0.1)
    assert len(data.train.dataset) == 27 and len(data.val.dataset) == 3
    _, ys = everything(data.test)
    assert ys.tolist() == [2, 2]  # emu keeps its training index


def test_greyscale_and_size(tmp_path):
    greys = {"a": (50, 50, 50), "b": (90, 90, 90)}
    root = write_folder(tmp_path / "g", per_class=3, size=(10, 10), mode="L", classes=greys)
    data = load(f"imagefolder:{root}:4", val_fraction=0)
    assert data.meta.input_shape == (1, 4, 4) and data.meta.name == f"imagefolder:{root}:4"
    assert next(iter(data.test))[0].shape[1:] == (1, 4, 4)


def test_size_zero_is_refused(tmp_path):
    with pytest.raises(UsageError, match="SIZE must be a positive integer"):
        load(f"imagefolder:{tmp_path}:0")


def test_large_first_image_is_scaled_to_fit(tmp_path):
    root = write_folder(tmp_path / "big", per_class=2, size=(448, 112), classes={"a": (1, 2, 3), "b": (4, 5, 6)})
    data = load(f"imagefolder:{root}", val_fraction=0, batch_size=2)
    assert data.meta.input_shape == (3, 56, 224)


def test_corrupt_image_found_while_measuring_stats(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=3)
    (root / "dog" / "001.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*dog/001.png") as err:
        load(f"imagefolder:{root}")
    assert err.value.hint == "delete or replace the file"


def test_corrupt_image_found_while_iterating(tmp_path):
    write_folder(tmp_path / "ds" / "train", per_class=3)
    write_folder(tmp_path / "ds" / "test", per_class=2)
    (tmp_path / "ds" / "test" / "emu" / "001.png").write_bytes(b"")
    data = load(f"imagefolder:{tmp_path / 'ds'}")
    everything(data.train)
    with pytest.raises(DataError, match=r"cannot read image .*test/emu/001.png"):
        everything(data.test)


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "is not a folder"),
        ("empty", "Couldn't find any class folder"),
        ("test-only", "has a test/ folder but no train/ folder"),
        ("extra-class", "has classes not in the training folder: yak"),
        ("empty-test", "holds no images"),
        ("no-images", "Found no valid file for the classes"),
    ],
)
def test_bad_layouts(tmp_path, layout, message):
    root = tmp_path / "ds"
    if layout == "empty":
        root.mkdir()
    elif layout == "test-only":
        write_folder(root / "test", per_class=1)
    elif layout in ("extra-class", "empty-test"):
        write_folder(root / "train", per_class=2)
        (root / "test" / ("yak" if layout == "extra-class" else "cat")).mkdir(parents=True)
    elif layout == "no-images":
        (root / "cat").mkdir(parents=True)
        (root / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=message) as err:
        load(f"imagefolder:{root}")
    assert "PATH/<class>/<image>" in err.value.hint


def test_without_torchvision(tmp_path, monkeypatch):
    write_folder(tmp_path / "imgs", per_class=2)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataError, match="need torchvision") as err:
        load(f"imagefolder:{tmp_path / 'imgs'}")
    assert "pip install torchvision" in err.value.hint
