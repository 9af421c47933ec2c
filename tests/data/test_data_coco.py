"""coco:PATH[:SIZE] on tiny folders of PNGs and an instances JSON written here, and every bad case."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from edgeslim.core.errors import DataError, UsageError
from edgeslim.data import load

W, H = 40, 30
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]  # listed out of id order


def write_coco(root, n=12, *, json_name="instances.json", image_dir=None, mode="RGB"):
    """n images of W x H, image i with one 'cat' box and (odd i) one 'dog' box; returns the JSON dict."""
    folder = root / image_dir if image_dir else root
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i in range(n):
        pixels = np.full((H, W, 3), 10 * i, dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"img{i:02d}.png")
        doc["images"].append({"id": 100 + i, "file_name": f"img{i:02d}.png", "width": W, "height": H})
        doc["annotations"].append({"id": 1000 + 2 * i, "image_id": 100 + i, "category_id": 3,
                                   "bbox": [2.0 + i, 4.0, 10.0, 8.0], "iscrowd": 0})
        if i % 2:
            doc["annotations"].append({"id": 1001 + 2 * i, "image_id": 100 + i, "category_id": 7,
                                       "bbox": [20.0, 10.0, 20.0, 20.0], "iscrowd": 0})
    save(root / json_name, doc)
    return doc


def save(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def everything(loader):
    xs, ts = [], []
    for x, t in loader:
        xs.append(x)
        ts += t
    return torch.cat(xs), ts


def test_loads_images_boxes_and_the_category_mapping(tmp_path):
    write_coco(tmp_path / "ds")
    data = load(f"coco:{tmp_path / 'ds'}:32", batch_size=4, val_fraction=0.2)
    meta = data.meta
    assert meta.task == "detection" and meta.classes == ["cat", "dog"] and meta.category_ids == [3, 7]
    assert meta.num_classes == 2 and meta.input_shape == (3, 32, 32) and meta.name == f"coco:{tmp_path / 'ds'}:32"
    sizes = [len(s.dataset) for s in (data.train, data.val, data.test)]
    assert sizes == [9, 2, 1] and sum(sizes) == 12
    x, targets = next(iter(data.train))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and len(targets) == 4
    for loader in (data.train, data.val, data.test):
        for sample, (_, t) in zip(loader.dataset.samples, [loader.dataset[i] for i in range(len(loader.dataset))]):
            i = int(sample.path[-6:-4])
            want = [[(2.0 + i) * 32 / W, 4.0 * 32 / H, (12.0 + i) * 32 / W, 12.0 * 32 / H]]
            if i % 2:
                want.append([20.0 * 32 / W, 10.0 * 32 / H, 32.0, 32.0])
            assert torch.allclose(t["boxes"], torch.tensor(want)) and t["boxes"].dtype == torch.float32
            assert t["labels"].tolist() == [0, 1][: len(want)] and t["labels"].dtype == torch.int64


def test_default_size_layouts_and_the_json_itself(tmp_path):
    write_coco(tmp_path / "a", json_name="annotations/instances_default.json", image_dir="images", mode="L")
    data = load(f"coco:{tmp_path / 'a'}", val_fraction=0)
    assert data.meta.input_shape == (1, H, W) and data.val is None  # greyscale, first image's size
    by_file = load(f"coco:{tmp_path / 'a' / 'annotations' / 'instances_default.json'}", val_fraction=0)
    assert by_file.meta.classes == data.meta.classes and len(by_file.train.dataset) == len(data.train.dataset)


def test_crowd_annotations_are_left_out_and_images_without_objects_stay(tmp_path):
    doc = write_coco(tmp_path / "ds", n=10)
    doc["annotations"] = [dict(a, iscrowd=1) if a["image_id"] == 100 else a for a in doc["annotations"]]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 101]
    save(tmp_path / "ds" / "instances.json", doc)
    data = load(f"coco:{tmp_path / 'ds'}", val_fraction=0)
    counts = {s.path[-9:]: len(s.labels) for split in (data.train, data.test) for s in split.dataset.samples}
    assert counts["img00.png"] == 0 and counts["img01.png"] == 0 and counts["img03.png"] == 2 and len(counts) == 10


def test_tiny_overshoot_is_clipped(tmp_path):
    doc = write_coco(tmp_path / "ds")
    doc["annotations"][0]["bbox"] = [-0.6, 4.0, W + 1.4, 8.0]  # x1 = W + 0.8
    save(tmp_path / "ds" / "instances.json", doc)
    data = load(f"coco:{tmp_path / 'ds'}", val_fraction=0)
    sample = next(s for split in (data.train, data.test) for s in split.dataset.samples if s.path.endswith("img00.png"))
    assert sample.boxes[0].tolist() == [0.0, 4.0, float(W), 12.0]


def _break(doc, how, root):
    if how == "missing-image":
        (root / "img05.png").unlink()
    elif how == "outside":
        doc["annotations"][2]["bbox"] = [30.0, 10.0, 15.0, 5.0]  # x1 = 45 on a 40 px image
    elif how == "unknown-category":
        doc["annotations"][2]["category_id"] = 99
    elif how == "size-mismatch":
        Image.new("RGB", (W + 4, H)).save(root / "img02.png")
    elif how == "zero-box":
        doc["annotations"][0]["bbox"] = [1.0, 1.0, 0.0, 5.0]
    elif how == "unknown-image":
        doc["annotations"][0]["image_id"] = 5
    elif how == "no-categories":
        doc["categories"] = []
    elif how == "not-coco":
        doc.pop("annotations")
    elif how == "bad-field":
        doc["images"][1]["width"] = "forty"
    elif how == "duplicate-id":
        doc["images"][1]["id"] = 100
    return doc


@pytest.mark.parametrize("how, message", [
    ("missing-image", "instances.json lists img05.png, not found in"),
    ("outside", "annotations[2] (id 1003) on img01.png has bbox [30.0, 10.0, 15.0, 5.0], outside the 40x30 image"),
    ("unknown-category", "annotations[2] (id 1003) has category_id 99, which is not in 'categories' (3, 7)"),
    ("size-mismatch", "img02.png is 44x30 pixels but instances.json says 40x30"),
    ("zero-box", "has bbox [1.0, 1.0, 0.0, 5.0]; a box is [x, y, width, height] with positive width"),
    ("unknown-image", "annotations[0] (id 1000) is on image id 5, which is not in 'images'"),
    ("no-categories", "has no categories"),
    ("not-coco", "has no 'annotations' list: not a COCO instances file"),
    ("bad-field", "images[1] has 'forty' as 'width', expected an integer"),
    ("duplicate-id", "image id 100 appears twice"),
])
def test_bad_files_are_one_line_naming_the_file_and_value(tmp_path, how, message):
    root = tmp_path / "ds"
    doc = write_coco(root)
    save(root / "instances.json", _break(doc, how, root))
    with pytest.raises(DataError) as e:
        load(f"coco:{root}")
    assert message in e.value.message and "\n" not in e.value.message
    assert str(root) in e.value.message or "instances.json" in e.value.message


def test_malformed_json(tmp_path):
    write_coco(tmp_path / "ds")
    (tmp_path / "ds" / "instances.json").write_text('{"images": [}')
    with pytest.raises(DataError, match=r"instances.json is not valid JSON: Expecting value at line 1 column 13"):
        load(f"coco:{tmp_path / 'ds'}")


@pytest.mark.parametrize("layout, message", [
    ("none", "holds no *.json file (nor annotations/*.json)"),
    ("two", "holds 2 JSON files (a.json, b.json)"),
    ("missing", "is neither a JSON file nor a folder"),
])
def test_finding_the_json(tmp_path, layout, message):
    root = tmp_path / "ds"
    root.mkdir()
    if layout == "two":
        write_coco(root, json_name="a.json")
        write_coco(root, json_name="b.json")
    with pytest.raises(DataError, match=message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        load(f"coco:{root / 'nope' if layout == 'missing' else root}")


def test_categories_the_model_does_not_have(tmp_path):
    write_coco(tmp_path / "ds")
    meta = load(f"coco:{tmp_path / 'ds'}").meta
    meta.check_model_classes(2)
    with pytest.raises(DataError, match=r"has 2 classes but lenet5 has 1: no model class for 'dog' \(category id 7\)"):
        meta.check_model_classes(1, "lenet5")


def test_size_zero_is_refused(tmp_path):
    with pytest.raises(UsageError, match="SIZE must be a positive integer"):
        load(f"coco:{tmp_path}:0")


def test_one_category_is_enough_for_a_detector_but_some_box_is_needed(tmp_path):
    doc = write_coco(tmp_path / "ds")
    doc["categories"] = [CATEGORIES[1]]
    doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] == 3]
    save(tmp_path / "ds" / "instances.json", doc)
    assert load(f"coco:{tmp_path / 'ds'}").meta.classes == ["cat"]
    doc["annotations"] = []
    save(tmp_path / "ds" / "instances.json", doc)
    with pytest.raises(DataError, match="has no boxes in its training split: a detector needs at least one"):
        load(f"coco:{tmp_path / 'ds'}")


def test_meta_task_is_checked():
    from edgeslim.data import DataMeta

    with pytest.raises(UsageError, match="unknown task 'pose'; the tasks are: classification, detection, segmentation"):
        DataMeta(name="x", classes=[], num_classes=0, input_shape=(1, 2, 2), mean=(0.0,), std=(1.0,), task="pose")
    meta = DataMeta(name="x", classes=["a", "b"], num_classes=2, input_shape=(1, 2, 2), mean=(0.0,), std=(1.0,))
    assert meta.task == "classification" and meta.to_dict()["task"] == "classification"
